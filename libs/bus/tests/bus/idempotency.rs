//! Processed-message ids: an effect and its id commit together, once.

use std::time::Duration;

use futures::future::join_all;
use sqlx::{Postgres, Transaction};
use trustmesh_bus::{HandlerError, Processed, ProcessedMessages, SchemaName, ensure_schema};
use trustmesh_testkit::postgres::TestDatabase;

async fn setup() -> (TestDatabase, ProcessedMessages) {
    let db = TestDatabase::create().await;
    let schema = SchemaName::new("audit").expect("schema");
    ensure_schema(db.pool(), &schema).await.expect("bus tables");
    sqlx::query("CREATE TABLE audit.effects (msg_id text PRIMARY KEY)")
        .execute(db.pool())
        .await
        .expect("effects");
    let processed = ProcessedMessages::new(db.pool().clone(), &schema, "audit-events");
    (db, processed)
}

async fn apply(
    tx: &mut Transaction<'static, Postgres>,
    key: String,
    fail: bool,
) -> Result<(), HandlerError> {
    sqlx::query("INSERT INTO audit.effects (msg_id) VALUES ($1)")
        .bind(&key)
        .execute(&mut **tx)
        .await?;
    // Hold the transaction open a little, so concurrent deliveries overlap.
    sqlx::query("SELECT pg_sleep(0.05)")
        .execute(&mut **tx)
        .await?;
    if fail {
        Err(HandlerError::retryable("downstream unavailable"))
    } else {
        Ok(())
    }
}

async fn effects(db: &TestDatabase) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit.effects")
        .fetch_one(db.pool())
        .await
        .expect("count")
}

#[tokio::test]
async fn a_failed_effect_records_nothing_and_its_retry_applies_once() {
    let (db, processed) = setup().await;

    let failed = processed
        .process_once("m-1", |tx| Box::pin(apply(tx, "m-1".into(), true)))
        .await;
    assert_eq!(
        failed,
        Err(HandlerError::retryable("downstream unavailable"))
    );
    assert_eq!(effects(&db).await, 0, "the effect was rolled back");
    assert!(
        !processed.is_processed("m-1").await.expect("lookup"),
        "and the id with it"
    );

    let retried = processed
        .process_once("m-1", |tx| Box::pin(apply(tx, "m-1".into(), false)))
        .await;
    assert_eq!(retried, Ok(Processed::Applied(())));
    let again = processed
        .process_once("m-1", |tx| Box::pin(apply(tx, "m-1".into(), false)))
        .await;
    assert_eq!(again, Ok(Processed::AlreadyProcessed));
    assert_eq!(effects(&db).await, 1);

    let other_consumer = ProcessedMessages::new(
        db.pool().clone(),
        &SchemaName::new("audit").expect("schema"),
        "other",
    );
    assert!(
        !other_consumer.is_processed("m-1").await.expect("lookup"),
        "ids are per consumer"
    );

    // Forgetting old ids is explicit and per consumer.
    assert_eq!(
        other_consumer.prune(Duration::ZERO).await.expect("prune"),
        0
    );
    assert_eq!(
        processed
            .prune(Duration::from_secs(3600))
            .await
            .expect("prune"),
        0
    );
    assert_eq!(processed.prune(Duration::ZERO).await.expect("prune"), 1);
    assert!(!processed.is_processed("m-1").await.expect("lookup"));
}

#[tokio::test]
async fn concurrent_deliveries_of_one_message_apply_it_once() {
    let (db, processed) = setup().await;

    let outcomes = join_all((0..4).map(|_| {
        let processed = processed.clone();
        tokio::spawn(async move {
            processed
                .process_once("m-dup", |tx| Box::pin(apply(tx, "m-dup".into(), false)))
                .await
        })
    }))
    .await;

    let outcomes: Vec<_> = outcomes
        .into_iter()
        .map(|o| o.expect("task").expect("no error"))
        .collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == Processed::Applied(()))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(effects(&db).await, 1);
}

#[tokio::test]
async fn database_errors_are_classed_poison_or_retryable() {
    let (db, _processed) = setup().await;
    sqlx::query("INSERT INTO audit.effects (msg_id) VALUES ('x')")
        .execute(db.pool())
        .await
        .expect("insert");

    let duplicate = sqlx::query("INSERT INTO audit.effects (msg_id) VALUES ('x')")
        .execute(db.pool())
        .await;
    let error = HandlerError::from(duplicate.expect_err("unique violation"));
    assert!(matches!(error, HandlerError::Poison { .. }), "{error:?}");

    db.pool().close().await;
    let closed = sqlx::query("SELECT 1").execute(db.pool()).await;
    let error = HandlerError::from(closed.expect_err("pool closed"));
    assert!(matches!(error, HandlerError::Retryable { .. }), "{error:?}");
}
