//! The key cache and the interceptor against a real nats-server: keys written to `tm_auth` resolve,
//! revocations reach the cache within the documented bound, expired and wrong keys are refused, and a
//! key never reaches another tenant's resources.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use trustmesh_auth::{
    AuthBucket, AuthError, Authenticator, CacheOptions, IssuedKey, KeyCache, KeyRecord,
    OperatorCredential, Principal, Scope,
};
use trustmesh_testkit::nats::NatsServer;

/// What the tests allow a revocation to take to reach a connected cache (normally milliseconds).
const REVOCATION_BOUND: Duration = Duration::from_secs(2);

fn record(
    issued: &IssuedKey,
    tenant: &str,
    scopes: &[Scope],
    expires_in: time::Duration,
) -> KeyRecord {
    KeyRecord {
        key_id: issued.key_id().clone(),
        tenant: tenant.to_owned(),
        scopes: scopes.iter().copied().collect::<BTreeSet<_>>(),
        expires_at: (OffsetDateTime::now_utc() + expires_in).unix_timestamp(),
        revoked: false,
        digest: issued.digest().clone(),
    }
}

fn bearer(token: &str) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
    metadata
}

async fn wait_until(what: &str, bound: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < bound,
            "{what} did not happen within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn keys_resolve_and_revocations_reach_the_cache_within_the_bound() -> anyhow::Result<()> {
    let nats = NatsServer::start().await;
    let writer = AuthBucket::open(&nats.jetstream().await, 1).await?;
    let existing = IssuedKey::generate();
    writer
        .put(&record(
            &existing,
            "acme",
            &[Scope::DatasetsRead],
            time::Duration::hours(1),
        ))
        .await?;

    // A cache started after a key was written loads it; one written afterwards arrives by the watch.
    let shutdown = CancellationToken::new();
    let cache = KeyCache::start(
        &nats.jetstream().await,
        CacheOptions::default(),
        shutdown.clone(),
    )
    .await?;
    let auth = Authenticator::new(cache.clone());
    let principal = auth.authenticate(
        &bearer(existing.token().expose_secret()),
        OffsetDateTime::now_utc(),
    )?;
    let Principal::ApiKey(key) = principal else {
        panic!("an API key resolved to {principal:?}");
    };
    assert_eq!(key.tenant.as_str(), "acme");
    assert_eq!(&key.key_id, existing.key_id());

    let fresh = IssuedKey::generate();
    let mut fresh_record = record(&fresh, "acme", &[Scope::Admin], time::Duration::hours(1));
    writer.put(&fresh_record).await?;
    let token = fresh.token().expose_secret().to_owned();
    wait_until("a new key reaching the cache", REVOCATION_BOUND, || {
        auth.authenticate(&bearer(&token), OffsetDateTime::now_utc())
            .is_ok()
    })
    .await;

    fresh_record.revoked = true;
    writer.put(&fresh_record).await?;
    let revoked_at = Instant::now();
    wait_until(
        "the revocation reaching the cache",
        REVOCATION_BOUND,
        || auth.authenticate(&bearer(&token), OffsetDateTime::now_utc()) == Err(AuthError::Revoked),
    )
    .await;
    println!("revocation reached the cache in {:?}", revoked_at.elapsed());
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn expired_wrong_and_unknown_keys_are_refused() -> anyhow::Result<()> {
    let nats = NatsServer::start().await;
    let jetstream = nats.jetstream().await;
    let writer = AuthBucket::open(&jetstream, 1).await?;
    let expired = IssuedKey::generate();
    writer
        .put(&record(
            &expired,
            "acme",
            &[Scope::Admin],
            -time::Duration::seconds(1),
        ))
        .await?;
    let valid = IssuedKey::generate();
    writer
        .put(&record(
            &valid,
            "acme",
            &[Scope::Admin],
            time::Duration::hours(1),
        ))
        .await?;
    let shutdown = CancellationToken::new();
    let cache = KeyCache::start(&jetstream, CacheOptions::default(), shutdown.clone()).await?;
    let operator_secret = secrecy::SecretString::from("op-".repeat(12));
    let auth = Authenticator::new(cache).with_operator(OperatorCredential::new(&operator_secret)?);
    let now = OffsetDateTime::now_utc();

    assert_eq!(
        auth.authenticate(&bearer(expired.token().expose_secret()), now),
        Err(AuthError::Expired)
    );
    // The right key id with another secret.
    let valid_token = valid.token().expose_secret();
    let forged = format!("tmk_{}_{}", valid.key_id(), "A".repeat(43));
    assert_eq!(
        auth.authenticate(&bearer(&forged), now),
        Err(AuthError::WrongSecret)
    );
    let unknown = IssuedKey::generate();
    assert_eq!(
        auth.authenticate(&bearer(unknown.token().expose_secret()), now),
        Err(AuthError::UnknownKey)
    );
    assert_eq!(
        auth.authenticate(&MetadataMap::new(), now),
        Err(AuthError::MissingCredential)
    );
    assert_eq!(
        auth.authenticate(&bearer("not-a-key"), now),
        Err(AuthError::MalformedCredential)
    );
    let mut basic = MetadataMap::new();
    basic.insert("authorization", format!("Basic {valid_token}").parse()?);
    assert_eq!(
        auth.authenticate(&basic, now),
        Err(AuthError::MalformedCredential)
    );
    assert!(auth.authenticate(&bearer(valid_token), now).is_ok());
    assert_eq!(
        auth.authenticate(&bearer(operator_secret.expose_secret()), now),
        Ok(Principal::Operator)
    );
    // Every refusal looks the same to the client.
    let status = tonic::Status::from(AuthError::Expired);
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn a_key_reaches_only_its_own_tenants_resources_with_its_scopes() -> anyhow::Result<()> {
    let nats = NatsServer::start().await;
    let jetstream = nats.jetstream().await;
    let writer = AuthBucket::open(&jetstream, 1).await?;
    let reader = IssuedKey::generate();
    writer
        .put(&record(
            &reader,
            "acme",
            &[Scope::DatasetsRead],
            time::Duration::hours(1),
        ))
        .await?;
    let shutdown = CancellationToken::new();
    let cache = KeyCache::start(&jetstream, CacheOptions::default(), shutdown.clone()).await?;
    let principal = Authenticator::new(cache).authenticate(
        &bearer(reader.token().expose_secret()),
        OffsetDateTime::now_utc(),
    )?;

    assert_eq!(
        principal
            .require(Scope::DatasetsRead, "name", "tenants/acme/datasets/1")?
            .as_str(),
        "acme"
    );
    let missing = principal
        .require(Scope::DatasetsWrite, "parent", "tenants/acme")
        .unwrap_err();
    assert_eq!(
        tonic::Status::from(missing).code(),
        tonic::Code::PermissionDenied
    );
    // Another tenant's resource gets the answer a missing resource gets.
    let other = principal
        .require(Scope::DatasetsRead, "name", "tenants/beta/datasets/1")
        .unwrap_err();
    assert_eq!(
        other,
        AuthError::OtherTenant {
            resource: "tenants/beta/datasets/1".to_owned()
        }
    );
    assert_eq!(tonic::Status::from(other).code(), tonic::Code::NotFound);
    assert_eq!(principal.require_operator(), Err(AuthError::OperatorOnly));
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn a_cache_cut_off_from_nats_fails_closed_after_its_staleness_bound() -> anyhow::Result<()> {
    let mut nats = NatsServer::start().await;
    let jetstream = nats.jetstream().await;
    let writer = AuthBucket::open(&jetstream, 1).await?;
    let key = IssuedKey::generate();
    writer
        .put(&record(
            &key,
            "acme",
            &[Scope::Admin],
            time::Duration::hours(1),
        ))
        .await?;
    let shutdown = CancellationToken::new();
    let options = CacheOptions {
        max_staleness: Duration::from_millis(500),
        ..CacheOptions::default()
    };
    let auth = Authenticator::new(KeyCache::start(&jetstream, options, shutdown.clone()).await?);
    let token = key.token().expose_secret().to_owned();
    assert!(
        auth.authenticate(&bearer(&token), OffsetDateTime::now_utc())
            .is_ok()
    );

    nats.kill();
    wait_until(
        "the cut-off cache refusing keys",
        Duration::from_secs(10),
        || {
            auth.authenticate(&bearer(&token), OffsetDateTime::now_utc())
                == Err(AuthError::CacheStale)
        },
    )
    .await;
    nats.restart().await;
    wait_until(
        "the reconnected cache accepting keys again",
        Duration::from_secs(20),
        || {
            auth.authenticate(&bearer(&token), OffsetDateTime::now_utc())
                .is_ok()
        },
    )
    .await;
    shutdown.cancel();
    Ok(())
}
