//! Isolation and audit coverage from the API itself: every RPC of every trustmesh service whose
//! request names a tenant's resource is called, from the descriptors alone, by another tenant's
//! key. Each call must answer NOT_FOUND (exactly what a resource that does not exist gets) and land
//! exactly one DENIED event in the owning tenant's audit log.

mod common;

use std::time::Duration;

use bytes::{Buf as _, BufMut as _};
use common::mesh::Mesh;
use common::streams::{consumers_idle, messages_on};
use prost::Message as _;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet, MethodDescriptorProto};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};
use trustmesh_events::{ALL_CONSUMERS, ConsumerAudit};
use trustmesh_proto::v1::{
    AuditOutcome, AuditRecord, DeleteDatasetRequest, DeletionState, JobState, ListEventsRequest,
    Scope, StartAnalysisRequest, TaskType,
};
use trustmesh_sdk::Client;

/// Passes encoded messages through untouched.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// A length-delimited field `number` holding `bytes`.
fn field(number: i32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(
        u32::try_from(number).unwrap(),
        prost::encoding::WireType::LengthDelimited,
        &mut out,
    );
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// The fields that name the resource a request acts on.
const RESOURCE_FIELDS: [&str; 3] = ["name", "parent", "dataset"];

/// A request of type `message` naming `resource`, or `None` if it names no tenant resource
/// (looking one level into a `metadata` message, as the upload's first message has it).
fn request_naming(
    types: &[(String, DescriptorProto)],
    message: &str,
    resource: &str,
) -> Option<Vec<u8>> {
    let (_, descriptor) = types.iter().find(|(name, _)| name == message)?;
    if let Some(f) = descriptor
        .field
        .iter()
        .find(|f| RESOURCE_FIELDS.contains(&f.name()) && f.r#type() == Type::String)
    {
        return Some(field(f.number(), resource.as_bytes()));
    }
    let nested = descriptor
        .field
        .iter()
        .find(|f| f.name() == "metadata" && f.r#type() == Type::Message)?;
    let inner = request_naming(types, nested.type_name(), resource)?;
    Some(field(nested.number(), &inner))
}

/// Calls `method` of `service` with `body`, streaming as the method does; returns the status.
async fn call(
    channel: &Channel,
    bearer: &MetadataValue<tonic::metadata::Ascii>,
    service: &str,
    method: &MethodDescriptorProto,
    body: Vec<u8>,
) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = PathAndQuery::try_from(format!("/{service}/{}", method.name())).unwrap();
    let result = match (method.client_streaming(), method.server_streaming()) {
        (false, false) => grpc
            .unary(authorize(bearer, Request::new(body)), path, Raw)
            .await
            .map(drop),
        (false, true) => match grpc
            .server_streaming(authorize(bearer, Request::new(body)), path, Raw)
            .await
        {
            Ok(response) => response.into_inner().message().await.map(drop),
            Err(status) => Err(status),
        },
        (true, _) => grpc
            .client_streaming(
                authorize(bearer, Request::new(futures::stream::iter(vec![body]))),
                path,
                Raw,
            )
            .await
            .map(drop),
    };
    result
        .err()
        .unwrap_or_else(|| Status::ok("the call succeeded"))
}

fn authorize<T>(
    bearer: &MetadataValue<tonic::metadata::Ascii>,
    mut request: Request<T>,
) -> Request<T> {
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    request
}

async fn events_of(user: &Client, tenant: &str) -> Vec<AuditRecord> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = user
            .audit()
            .list_events(ListEventsRequest {
                parent: format!("tenants/{tenant}"),
                page_size: 1000,
                page_token,
                ..ListEventsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}

/// Waits until `tenant`'s log has more than `known` events and stays put for a moment.
async fn settled(user: &Client, tenant: &str, known: usize) -> Vec<AuditRecord> {
    let mut events = events_of(user, tenant).await;
    for _ in 0..50 {
        if events.len() > known {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        events = events_of(user, tenant).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    events_of(user, tenant).await
}

#[tokio::test]
async fn every_tenant_rpc_denied_to_another_tenant_lands_one_event_in_the_owners_log() {
    let mesh = Mesh::start().await;
    let (endpoint, operator) = (mesh.endpoint.clone(), &mesh.operator);

    let (_, acme) = operator
        .create_tenant_with_key("acme", "acme", &[Scope::Admin], Duration::from_secs(3600))
        .await
        .unwrap();
    let (_, beta) = operator
        .create_tenant_with_key("beta", "beta", &[Scope::Admin], Duration::from_secs(3600))
        .await
        .unwrap();
    let intruder = beta.bearer().clone();
    // Both keys have reached every service's cache once acme can read its own log.
    let mut known = trustmesh_sdk::once_known(|| async {
        acme.audit()
            .list_events(ListEventsRequest {
                parent: "tenants/acme".to_owned(),
                ..ListEventsRequest::default()
            })
            .await
    })
    .await
    .unwrap()
    .into_inner()
    .events
    .len();
    known = settled(&acme, "acme", known.saturating_sub(1)).await.len();

    let set = FileDescriptorSet::decode(trustmesh_proto::FILE_DESCRIPTOR_SET).unwrap();
    let types: Vec<(String, DescriptorProto)> = set
        .file
        .iter()
        .flat_map(|file| {
            file.message_type
                .iter()
                .map(move |m| (format!(".{}.{}", file.package(), m.name()), m.clone()))
        })
        .collect();
    let channel = Channel::from_shared(endpoint)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let resource = "tenants/acme/datasets/0190b2c4-0000-7000-8000-000000000000";
    let mut checked = Vec::new();
    let mut missing = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "trustmesh.v1") {
        for service in &file.service {
            let service_name = format!("{}.{}", file.package(), service.name());
            for method in &service.method {
                let Some(body) = request_naming(&types, method.input_type(), resource) else {
                    continue;
                };
                let status = call(&channel, &intruder, &service_name, method, body).await;
                let events = settled(&acme, "acme", known).await;
                let new: Vec<&AuditRecord> = events[known.min(events.len())..].iter().collect();
                let label = format!("{service_name}/{}", method.name());
                // Another tenant's resource looks exactly like one that does not exist.
                if status.code() != tonic::Code::NotFound
                    || new.len() != 1
                    || new[0].outcome() != AuditOutcome::Denied
                    || new[0].source_ip != "127.0.0.1"
                {
                    missing.push(format!(
                        "{label}: {:?} {:?} -> {:?}",
                        status.code(),
                        status.message(),
                        new.iter()
                            .map(|e| (e.action.as_str(), e.outcome().as_str_name(), &e.source_ip))
                            .collect::<Vec<_>>()
                    ));
                }
                known = events.len();
                checked.push(label);
            }
        }
    }
    assert!(
        checked.len() >= 30,
        "only {} methods checked: {checked:?}",
        checked.len()
    );
    assert!(
        missing.is_empty(),
        "{} of {} calls:\n{}",
        missing.len(),
        checked.len(),
        missing.join("\n")
    );
}

/// The consumer half of "every access is audited", from the consumer registry: after an upload,
/// an analysis and a dataset deletion, each consumer that touches tenant data has written exactly
/// one event per message it handled, every registered consumer is deployed, the services' reads
/// of each other are audited once per read, and calls carry their client address.
#[tokio::test]
async fn every_consumer_audits_each_message_that_touches_tenant_data_once() {
    let mesh = Mesh::start_with(|settings| {
        // Every job fans its folds out, so the `analysis.fold` consumer is exercised too.
        settings.analysis_work.fold_fanout_min_rows = 1;
    })
    .await;
    let user = mesh.tenant_with_key("acme").await;
    let js = mesh.nats.jetstream().await;
    let wine = include_str!("../../../examples/wine-noisy.csv");
    let dataset =
        trustmesh_sdk::once_known(|| user.upload_csv("wine", wine.as_bytes().to_vec(), "row_id"))
            .await
            .unwrap();
    let job = user
        .analysis()
        .start_analysis(StartAnalysisRequest {
            dataset: dataset.name.clone(),
            label_column: "label".to_owned(),
            task_type: TaskType::Classification.into(),
            ..StartAnalysisRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let job = tokio::time::timeout(Duration::from_secs(300), user.wait_job(&job.name, |_| {}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
    let deletion = user
        .deletion()
        .delete_dataset(DeleteDatasetRequest {
            name: dataset.name.clone(),
            ..DeleteDatasetRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let deletion = user
        .wait_deletion(&deletion.output, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(deletion.state(), DeletionState::Completed, "{deletion:?}");
    consumers_idle(&js, Duration::from_secs(30)).await;
    let events = settled(&user, "acme", 0).await;
    let count = |service: &str, actions: &[&str]| {
        events
            .iter()
            .filter(|e| e.service == service && actions.contains(&e.action.as_str()))
            .count()
    };

    let mut wrong = Vec::new();
    for spec in ALL_CONSUMERS {
        let ConsumerAudit::Each { on, actions } = spec.audit else {
            continue;
        };
        let messages = messages_on(&js, spec.stream.name, &format!("tm.acme.{on}")).await;
        let audited = count(spec.service.as_str(), actions);
        if messages == 0 || audited != messages {
            wrong.push(format!(
                "{}: {messages} messages on {on}, {audited} events {actions:?}",
                spec.durable_name
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Service-to-service reads: analysis reads the rows once to plan the job and once per fanned-out
    // fold, trust-scoring the outputs once.
    let folds = messages_on(&js, "TM_ANALYSIS", "tm.acme.analysis.fold.requested").await;
    for (service, action, expected) in [
        ("ingest", "datasets.rows.read", 1 + folds),
        ("analysis", "jobs.outputs.read", 1),
    ] {
        let reads: Vec<&AuditRecord> = events
            .iter()
            .filter(|e| e.service == service && e.action == action)
            .collect();
        assert_eq!(reads.len(), expected, "{service} {action}: {reads:?}");
        // One mesh credential for now: the actor is "a service", not which one (#7's per-service
        // identities will name it).
        assert_eq!(
            reads[0].actor.as_ref().map(|a| a.r#type.as_str()),
            Some("service")
        );
    }
    // Calls carry the client's address; consumers' events, made outside any call, carry none.
    let upload = events
        .iter()
        .find(|e| e.action == "datasets.upload")
        .unwrap();
    assert_eq!(upload.source_ip, "127.0.0.1", "{upload:?}");
    assert!(upload.user_agent.contains("tonic"), "{upload:?}");
    let run = events.iter().find(|e| e.action == "analysis.run").unwrap();
    assert_eq!(run.source_ip, "", "{run:?}");
}
