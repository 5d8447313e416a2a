//! The operator in front of DatasetService: recognized from `tm_auth` (this service is not configured
//! with its credential), denied every dataset without a support grant; under a tenant's grant it
//! reads exactly the dataset the grant names, until the grant is revoked, and each of its calls is
//! audited as the grant's use.

mod common;

use std::time::{Duration, Instant};

use common::{iris, spawn_app, wait_for};
use prost::Message as _;
use time::OffsetDateTime;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use trustmesh_auth::{AuthBucket, GRANT_HEADER, GrantRecord, Scope, SecretDigest};
use trustmesh_proto::events::v1::{ActorType, AuditEvent, Outcome};
use trustmesh_proto::v1::dataset_service_client::DatasetServiceClient;
use trustmesh_proto::v1::{DatasetFormat, GetDatasetRequest, ReadRowsRequest};

/// The operator credential, as `tenancy` would publish its digest.
const OPERATOR: &str = "operator-credential-of-the-support-test-0123456789";
/// How long a record written to `tm_auth` may take to reach the service's cache.
const PROPAGATION: Duration = Duration::from_secs(2);

/// A request as the operator, under `grant` if given.
fn as_operator<T>(message: T, grant: Option<&GrantRecord>) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert(
        "authorization",
        format!("Bearer {OPERATOR}").parse().unwrap(),
    );
    if let Some(grant) = grant {
        metadata.insert(GRANT_HEADER, grant.grant_id.to_string().parse().unwrap());
    }
    request
}

/// Calls GetDataset on `name` as the operator until the answer satisfies `done`.
async fn get_until(
    client: &mut DatasetServiceClient<Channel>,
    name: &str,
    grant: Option<&GrantRecord>,
    done: impl Fn(&Result<(), Status>) -> bool,
) {
    let start = Instant::now();
    loop {
        let answer = client
            .get_dataset(as_operator(
                GetDatasetRequest {
                    name: name.to_owned(),
                },
                grant,
            ))
            .await
            .map(drop);
        if done(&answer) {
            return;
        }
        assert!(start.elapsed() < PROPAGATION, "still {answer:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn denied(answer: &Result<(), Status>) -> bool {
    answer
        .as_ref()
        .is_err_and(|status| status.code() == Code::PermissionDenied)
}

#[tokio::test]
async fn the_operator_reads_only_the_dataset_a_support_grant_names_until_it_is_revoked() {
    let mut app = spawn_app().await;
    let granted = app.create("acme", "granted").await;
    app.upload(&granted.name, DatasetFormat::Csv, "iris.csv", &iris())
        .await
        .expect("upload");
    let other = app.create("acme", "other").await;
    let mut client = DatasetServiceClient::new(
        Channel::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );

    // tenancy publishes the operator credential's digest: from then on the operator is recognized,
    // and denied (not unauthenticated) on tenant data.
    let bucket = AuthBucket::open(&app.jetstream, 1).await.unwrap();
    bucket
        .put_operator(&SecretDigest::of(OPERATOR.as_bytes()))
        .await
        .unwrap();
    get_until(&mut client, &granted.name, None, denied).await;

    // acme grants datasets:read on one dataset for an hour.
    let mut grant = GrantRecord {
        grant_id: uuid::Uuid::now_v7(),
        tenant: "acme".to_owned(),
        scopes: [Scope::DatasetsRead].into_iter().collect(),
        resources: vec![granted.name.clone()],
        expires_at: (OffsetDateTime::now_utc() + time::Duration::hours(1)).unix_timestamp(),
        revoked: false,
    };
    bucket.put_grant(&grant).await.unwrap();
    get_until(&mut client, &granted.name, Some(&grant), Result::is_ok).await;
    let mut rows = client
        .read_rows(as_operator(
            ReadRowsRequest {
                name: granted.name.clone(),
                ..ReadRowsRequest::default()
            },
            Some(&grant),
        ))
        .await
        .expect("the granted dataset's rows")
        .into_inner();
    let mut read = 0;
    while let Some(batch) = rows.message().await.expect("a batch") {
        read += batch.batch.map_or(0, |b| b.row_count);
    }
    assert_eq!(read, 150);
    // Another dataset of the tenant stays closed.
    let closed = client
        .get_dataset(as_operator(
            GetDatasetRequest {
                name: other.name.clone(),
            },
            Some(&grant),
        ))
        .await
        .unwrap_err();
    assert_eq!(closed.code(), Code::PermissionDenied, "{closed:?}");

    // Revoked, the grant opens nothing within the propagation bound.
    grant.revoked = true;
    bucket.put_grant(&grant).await.unwrap();
    get_until(&mut client, &granted.name, Some(&grant), denied).await;

    // Every call is in acme's log: the grant's uses as `operator:<grant>`, the rest as `operator`.
    let grant_actor = format!(
        "operator:tenants/acme/supportAccessGrants/{}",
        grant.grant_id
    );
    let events: Vec<AuditEvent> = wait_for(&app.jetstream, "TM_AUDIT", "tm.acme.audit.ingest", 8)
        .await
        .iter()
        .map(|m| AuditEvent::decode(m.payload.as_ref()).unwrap())
        .filter(|e| e.actor_type() == ActorType::Operator)
        .collect();
    let seen: Vec<(&str, &str, Outcome)> = events
        .iter()
        .map(|e| (e.action.as_str(), e.actor_id.as_str(), e.outcome()))
        .collect();
    for expected in [
        ("datasets.get", "operator", Outcome::Denied),
        ("datasets.get", grant_actor.as_str(), Outcome::Allowed),
        ("datasets.rows.read", grant_actor.as_str(), Outcome::Allowed),
        ("datasets.get", grant_actor.as_str(), Outcome::Denied),
    ] {
        assert!(seen.contains(&expected), "{expected:?} not in {seen:?}");
    }
    app.stop().await;
}
