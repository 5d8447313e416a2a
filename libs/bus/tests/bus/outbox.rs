//! The transactional outbox: committed events are published (once), rolled-back ones never, whatever
//! happens to the relay.

use std::time::Duration;

use async_nats::jetstream::Context;
use futures::StreamExt;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use trustmesh_bus::{
    Outbox, OutboxRelay, Publisher, RelayOptions, RetryPolicy, SchemaName, ensure_schema,
};
use trustmesh_events::{Subject, TM_DATASET, msg_id};
use trustmesh_testkit::postgres::TestDatabase;
use uuid::Uuid;

use crate::common::{acme, eventually, nats_with_streams, stream_len};

fn schema() -> SchemaName {
    SchemaName::new("ingest").expect("schema")
}

async fn database() -> TestDatabase {
    let db = TestDatabase::create().await;
    ensure_schema(db.pool(), &schema())
        .await
        .expect("bus tables");
    ensure_schema(db.pool(), &schema())
        .await
        .expect("ensure_schema is idempotent");
    db
}

/// Commits `n` events (payload = their index) in one transaction each, and returns their msg ids.
async fn commit_events(pool: &PgPool, n: usize) -> Vec<String> {
    let outbox = Outbox::new(&schema());
    let subject = Subject::dataset_ingested(&acme());
    let mut ids = Vec::new();
    for i in 0..n {
        let id = msg_id(&subject, Uuid::now_v7());
        let mut tx = pool.begin().await.expect("begin");
        outbox
            .enqueue_bytes(&mut tx, &subject, i.to_string().as_bytes(), &id)
            .await
            .expect("enqueue");
        tx.commit().await.expect("commit");
        ids.push(id);
    }
    ids
}

/// Enqueues an event in a transaction that rolls back.
async fn roll_back_event(pool: &PgPool) {
    let outbox = Outbox::new(&schema());
    let subject = Subject::dataset_failed(&acme());
    let mut tx = pool.begin().await.expect("begin");
    outbox
        .enqueue_bytes(&mut tx, &subject, b"rolled back", "rolled-back")
        .await
        .expect("enqueue");
    tx.rollback().await.expect("rollback");
}

/// The msg ids in `TM_DATASET`, in stream order.
async fn stream_msg_ids(jetstream: &Context) -> Vec<String> {
    let stream = jetstream.get_stream(TM_DATASET.name).await.expect("stream");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("reader");
    let total = stream_len(jetstream, TM_DATASET.name).await;
    let mut messages = consumer
        .messages()
        .await
        .expect("messages")
        .take(usize::try_from(total).expect("small"));
    let mut ids = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.expect("message");
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_owned());
        ids.push(id.expect("every relayed event has a msg id"));
    }
    ids
}

fn relay(pool: &PgPool, jetstream: &Context) -> OutboxRelay {
    OutboxRelay::new(pool.clone(), &schema(), Publisher::new(jetstream.clone())).with_options(
        RelayOptions {
            batch_size: 3,
            ..RelayOptions::default()
        },
    )
}

#[tokio::test]
async fn the_relay_publishes_every_committed_event_in_order_and_none_rolled_back() {
    let (_nats, jetstream) = nats_with_streams().await;
    let db = database().await;
    let mut committed = commit_events(db.pool(), 4).await;
    roll_back_event(db.pool()).await;
    committed.extend(commit_events(db.pool(), 3).await);

    let relay = relay(db.pool(), &jetstream);
    assert_eq!(relay.pending().await.expect("pending"), 7);
    assert_eq!(relay.relay_pending().await.expect("relay"), 7);
    assert_eq!(relay.pending().await.expect("pending"), 0);
    assert_eq!(relay.relay_pending().await.expect("nothing left"), 0);

    assert_eq!(
        stream_msg_ids(&jetstream).await,
        committed,
        "every committed event, in commit order"
    );

    // Published rows can be pruned; pending ones never are.
    commit_events(db.pool(), 1).await;
    assert_eq!(
        relay.prune_published(Duration::ZERO).await.expect("prune"),
        7
    );
    assert_eq!(relay.pending().await.expect("pending"), 1);
}

#[tokio::test]
async fn events_committed_while_the_relay_dies_before_publishing_are_published_by_the_next_relay() {
    let (mut nats, jetstream) = nats_with_streams().await;
    let db = database().await;
    let committed = commit_events(db.pool(), 5).await;
    roll_back_event(db.pool()).await;

    // The relay locks the rows and tries to publish while NATS is down; it is killed mid-way.
    nats.kill();
    let slow_retries = RetryPolicy {
        max_retries: 1000,
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
    };
    let doomed = OutboxRelay::new(
        db.pool().clone(),
        &schema(),
        Publisher::new(jetstream.clone()).with_retry(slow_retries),
    );
    let running = tokio::spawn(doomed.run(CancellationToken::new()));
    eventually("the relay to hold the rows", || async {
        let locked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'outbox' AND l.mode = 'RowShareLock'",
        )
        .fetch_one(db.pool())
        .await
        .ok()?;
        (locked > 0).then_some(())
    })
    .await;
    running.abort();
    assert!(running.await.expect_err("aborted").is_cancelled());
    nats.restart().await;

    let relay = relay(db.pool(), &jetstream);
    eventually("the next relay to publish everything", || async {
        // The killed relay's connection may still hold the row locks for a moment.
        relay.relay_pending().await.ok()?;
        (relay.pending().await.ok()? == 0).then_some(())
    })
    .await;
    assert_eq!(stream_msg_ids(&jetstream).await, committed);
}

#[tokio::test]
async fn a_relay_killed_after_the_ack_but_before_marking_causes_no_duplicate() {
    let (_nats, jetstream) = nats_with_streams().await;
    let db = database().await;
    let committed = commit_events(db.pool(), 4).await;
    let relay = relay(db.pool(), &jetstream);
    assert_eq!(relay.relay_pending().await.expect("relay"), 4);

    // What a relay killed between the publish acks and the commit of its marks leaves behind.
    sqlx::query("UPDATE ingest.outbox SET published_at = NULL")
        .execute(db.pool())
        .await
        .expect("unmark");
    assert_eq!(relay.pending().await.expect("pending"), 4);

    assert_eq!(relay.relay_pending().await.expect("relay again"), 4);
    assert_eq!(relay.pending().await.expect("pending"), 0);
    assert_eq!(
        stream_msg_ids(&jetstream).await,
        committed,
        "the stream dropped the republished ids"
    );
}

#[tokio::test]
async fn a_running_relay_publishes_on_commit_and_stops_on_shutdown() {
    let (_nats, jetstream) = nats_with_streams().await;
    let db = database().await;
    // A poll interval this long means only the commit notification can wake the relay in time.
    let relay = OutboxRelay::new(
        db.pool().clone(),
        &schema(),
        Publisher::new(jetstream.clone()),
    )
    .with_options(RelayOptions {
        poll_interval: Duration::from_secs(3600),
        ..RelayOptions::default()
    });
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    // Let the relay finish its first (empty) pass and start listening.
    let listening = |pool: PgPool| async move {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'")
            .fetch_one(&pool)
            .await
            .ok()?;
        (n > 0).then_some(())
    };
    eventually("the relay to LISTEN", || listening(db.pool().clone())).await;

    let committed = commit_events(db.pool(), 2).await;
    eventually("both events published", || async {
        (stream_len(&jetstream, TM_DATASET.name).await == 2).then_some(())
    })
    .await;
    assert_eq!(stream_msg_ids(&jetstream).await, committed);

    shutdown.cancel();
    running.await.expect("the relay stops");
}

#[tokio::test]
async fn oversized_events_and_bad_ids_are_refused_at_enqueue() {
    let db = database().await;
    let outbox = Outbox::new(&schema());
    let subject = Subject::dataset_ingested(&acme());
    let mut tx = db.pool().begin().await.expect("begin");
    let too_big = vec![0_u8; usize::try_from(TM_DATASET.max_message_bytes).expect("positive") + 1];
    assert!(
        outbox
            .enqueue_bytes(&mut tx, &subject, &too_big, "big")
            .await
            .is_err()
    );
    assert!(
        outbox
            .enqueue_bytes(&mut tx, &subject, b"x", "")
            .await
            .is_err()
    );
    tx.commit().await.expect("commit");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM ingest.outbox")
        .fetch_one(db.pool())
        .await
        .expect("count");
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_row_the_server_can_never_take_is_marked_failed_and_does_not_block_the_rest() {
    let (_nats, jetstream) = nats_with_streams().await;
    let db = database().await;
    let mut committed = commit_events(db.pool(), 2).await;
    // Written around `Outbox::enqueue`'s checks, as a bug or a manual edit could.
    sqlx::query(
        "INSERT INTO ingest.outbox (msg_id, subject, payload) VALUES ('not a msg id', 'tm.acme.dataset.ingested', '')",
    )
    .execute(db.pool())
    .await
    .expect("bad row");
    committed.extend(commit_events(db.pool(), 2).await);

    let relay = relay(db.pool(), &jetstream);
    assert_eq!(relay.relay_pending().await.expect("relay"), 5);
    assert_eq!(relay.pending().await.expect("pending"), 0);
    assert_eq!(stream_msg_ids(&jetstream).await, committed);
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM ingest.outbox WHERE failed_at IS NOT NULL")
            .fetch_one(db.pool())
            .await
            .expect("the failed row");
    assert!(last_error.is_some_and(|e| e.contains("invalid message id")));
}
