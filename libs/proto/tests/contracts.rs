//! The generated contracts match ARCHITECTURE.md §1/§5: every service with its RPCs, AIP-style paging,
//! content-free events; the descriptor set works for reflection; events round-trip.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};
use trustmesh_proto::FILE_DESCRIPTOR_SET;
use trustmesh_proto::events::v1 as ev;

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("the embedded descriptor set decodes")
}

/// `(client_streaming, server_streaming)` per RPC, per fully qualified service name.
fn services(fds: &FileDescriptorSet) -> BTreeMap<String, BTreeMap<String, (bool, bool)>> {
    let mut out = BTreeMap::new();
    for file in &fds.file {
        for service in &file.service {
            let methods = service
                .method
                .iter()
                .map(|m| {
                    (
                        m.name().to_owned(),
                        (m.client_streaming(), m.server_streaming()),
                    )
                })
                .collect();
            out.insert(format!("{}.{}", file.package(), service.name()), methods);
        }
    }
    out
}

fn messages(fds: &FileDescriptorSet, package: &str) -> BTreeMap<String, DescriptorProto> {
    fds.file
        .iter()
        .filter(|f| f.package() == package)
        .flat_map(|f| f.message_type.iter().cloned())
        .map(|m| (m.name().to_owned(), m))
        .collect()
}

/// An RPC name with its `(client_streaming, server_streaming)` shape.
type Rpc = (&'static str, (bool, bool));

const UNARY: (bool, bool) = (false, false);
const CLIENT_STREAM: (bool, bool) = (true, false);
const SERVER_STREAM: (bool, bool) = (false, true);

#[test]
fn descriptor_set_has_every_service_of_the_architecture_with_its_rpcs() {
    let expected: &[(&str, &[Rpc])] = &[
        (
            "trustmesh.v1.TenancyService",
            &[
                ("CreateTenant", UNARY),
                ("GetTenant", UNARY),
                ("ListTenants", UNARY),
                ("DisableTenant", UNARY),
                ("EnableTenant", UNARY),
                ("CreateApiKey", UNARY),
                ("ListApiKeys", UNARY),
                ("RevokeApiKey", UNARY),
                ("CreateWebhookEndpoint", UNARY),
                ("GetWebhookEndpoint", UNARY),
                ("ListWebhookEndpoints", UNARY),
                ("UpdateWebhookEndpoint", UNARY),
                ("DeleteWebhookEndpoint", UNARY),
                ("RotateWebhookSecret", UNARY),
                ("ListWebhookDeliveries", UNARY),
                ("GetQuota", UNARY),
                ("UpdateQuota", UNARY),
                ("CreateSupportAccessGrant", UNARY),
                ("ListSupportAccessGrants", UNARY),
                ("RevokeSupportAccessGrant", UNARY),
            ],
        ),
        (
            "trustmesh.v1.DatasetService",
            &[
                ("CreateDataset", UNARY),
                ("UploadDataset", CLIENT_STREAM),
                ("GetDataset", UNARY),
                ("ListDatasets", UNARY),
                ("ReadRows", SERVER_STREAM),
            ],
        ),
        (
            "trustmesh.v1.AnalysisService",
            &[
                ("StartAnalysis", UNARY),
                ("GetJob", UNARY),
                ("ListJobs", UNARY),
                ("CancelJob", UNARY),
                ("WatchJob", SERVER_STREAM),
                ("GetModelOutputs", SERVER_STREAM),
            ],
        ),
        (
            "trustmesh.v1.TrustService",
            &[
                ("GetReport", UNARY),
                ("ListReports", UNARY),
                ("ListRows", UNARY),
                ("SetCorrections", UNARY),
                ("ExportCleanset", SERVER_STREAM),
                ("ScoreRows", UNARY),
            ],
        ),
        (
            "trustmesh.v1.DeletionService",
            &[
                ("DeleteDataset", UNARY),
                ("DeleteTenant", UNARY),
                ("GetDeletion", UNARY),
                ("GetDeletionCertificate", UNARY),
                ("ListCertificateSigningKeys", UNARY),
            ],
        ),
        (
            "trustmesh.v1.AuditService",
            &[
                ("ListEvents", UNARY),
                ("VerifyLog", UNARY),
                ("ExportEvents", SERVER_STREAM),
            ],
        ),
        (
            // TenancyService's webhook RPCs as the notifier serves them to tenancy.
            "trustmesh.v1.WebhookService",
            &[
                ("CreateWebhookEndpoint", UNARY),
                ("GetWebhookEndpoint", UNARY),
                ("ListWebhookEndpoints", UNARY),
                ("UpdateWebhookEndpoint", UNARY),
                ("DeleteWebhookEndpoint", UNARY),
                ("RotateWebhookSecret", UNARY),
                ("ListWebhookDeliveries", UNARY),
            ],
        ),
    ];
    let actual = services(&descriptor_set());
    let expected: BTreeMap<String, BTreeMap<String, (bool, bool)>> = expected
        .iter()
        .map(|(service, methods)| {
            let methods = methods
                .iter()
                .map(|(m, streaming)| ((*m).to_owned(), *streaming))
                .collect();
            ((*service).to_owned(), methods)
        })
        .collect();
    assert_eq!(actual, expected);
}

#[test]
fn deletion_and_analysis_return_jobs_and_uploads_start_with_metadata() {
    let fds = descriptor_set();
    let outputs: BTreeMap<String, String> = fds
        .file
        .iter()
        .flat_map(|f| f.service.iter())
        .flat_map(|s| s.method.iter())
        .map(|m| (m.name().to_owned(), m.output_type().to_owned()))
        .collect();
    for rpc in [
        "StartAnalysis",
        "DeleteDataset",
        "DeleteTenant",
        "CancelJob",
        "WatchJob",
    ] {
        assert_eq!(outputs[rpc], ".trustmesh.v1.Job", "{rpc}");
    }
    let msgs = messages(&fds, "trustmesh.v1");
    let upload = &msgs["UploadDatasetRequest"];
    let oneof: Vec<(&str, i32)> = upload
        .field
        .iter()
        .map(|f| (f.name(), f.number()))
        .collect();
    assert_eq!(oneof, [("metadata", 1), ("chunk", 2)]);
}

#[test]
fn lists_are_paged_and_resources_are_addressed_by_name_aip_style() {
    let msgs = messages(&descriptor_set(), "trustmesh.v1");
    let fields = |m: &str| -> BTreeSet<String> {
        msgs[m].field.iter().map(|f| f.name().to_owned()).collect()
    };
    let mut lists = 0;
    for name in msgs.keys() {
        if name.starts_with("List") && name.ends_with("Request") {
            let f = fields(name);
            let response = name.replace("Request", "Response");
            // Listing signing keys is a short, unpaged list.
            if name == "ListCertificateSigningKeysRequest" {
                continue;
            }
            lists += 1;
            assert!(
                f.contains("page_size") && f.contains("page_token"),
                "{name}"
            );
            assert!(fields(&response).contains("next_page_token"), "{response}");
            let page_size = msgs[name].field.iter().find(|x| x.name() == "page_size");
            assert_eq!(page_size.map(|x| x.r#type()), Some(Type::Int32), "{name}");
        }
        if (name.starts_with("Get") || name.starts_with("Delete") || name.starts_with("Revoke"))
            && name.ends_with("Request")
        {
            assert!(fields(name).contains("name"), "{name} has a `name` field");
        }
    }
    assert!(lists >= 10, "found only {lists} list requests");
    for resource in [
        "Tenant",
        "ApiKey",
        "Dataset",
        "Job",
        "Report",
        "Deletion",
        "WebhookEndpoint",
    ] {
        let first = &msgs[resource].field[0];
        assert_eq!((first.name(), first.number()), ("name", 1), "{resource}");
    }
}

#[test]
fn every_event_exists_and_carries_no_content_fields() {
    let msgs = messages(&descriptor_set(), "trustmesh.events.v1");
    let events = [
        "DatasetIngested",
        "DatasetFailed",
        "AnalysisRequested",
        "AnalysisFoldRequested",
        "AnalysisCompleted",
        "AnalysisFailed",
        "JobUpdated",
        "ScoresReady",
        "DeletionRequested",
        "DeletionReceipt",
        "DeletionCompleted",
        "AuditEvent",
    ];
    // Names that would mean customer content or secrets travel on the bus.
    let forbidden = [
        "filename", "label", "labels", "value", "values", "text", "content", "row", "rows",
        "secret", "token", "url", "message", "chunk", "data",
    ];
    for event in events {
        let msg = msgs
            .get(event)
            .unwrap_or_else(|| panic!("{event} is missing"));
        let meta = &msg.field[0];
        assert_eq!(
            (meta.name(), meta.number(), meta.type_name()),
            ("meta", 1, ".trustmesh.events.v1.EventMeta"),
            "{event} starts with its metadata"
        );
        for field in &msg.field {
            assert!(
                !forbidden.contains(&field.name()),
                "{event}.{} looks like content",
                field.name()
            );
            assert_ne!(
                field.r#type(),
                Type::Bytes,
                "{event}.{} is bytes",
                field.name()
            );
        }
    }
}

#[test]
fn every_subject_of_the_bus_has_its_payload_message() {
    use trustmesh_events::{ALL_CONSUMERS, EventKind, Service};

    let fds = descriptor_set();
    let known: BTreeSet<String> = messages(&fds, "trustmesh.events.v1")
        .into_keys()
        .map(|m| format!("trustmesh.events.v1.{m}"))
        .collect();
    let mut kinds = EventKind::FIXED.to_vec();
    kinds.extend(Service::ALL.map(EventKind::Audit));
    for kind in kinds {
        let payload = kind
            .payload_type()
            .expect("non-dead-letter kinds have a payload");
        assert!(known.contains(payload), "{kind} -> {payload}");
    }
    assert_eq!(EventKind::DeadLetter(ALL_CONSUMERS[0]).payload_type(), None);
}

#[test]
fn deletion_receipt_round_trips_and_rejects_truncation() {
    let receipt = ev::DeletionReceipt {
        meta: Some(ev::EventMeta {
            event_id: "01900000-0000-7000-8000-000000000001".into(),
            tenant: "acme".into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            producer: "ingest".into(),
            request_id: "req-1".into(),
        }),
        deletion: "tenants/acme/deletions/01900000-0000-7000-8000-0000000000aa".into(),
        service: "ingest".into(),
        scope: ev::DeletionScope::Tenant.into(),
        deleted: [("objects".to_owned(), 12), ("rows:datasets".to_owned(), 3)]
            .into_iter()
            .collect(),
        residue_found: false,
        residue: Default::default(),
        deks_destroyed: 2,
    };
    let bytes = receipt.encode_to_vec();
    let decoded = ev::DeletionReceipt::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(decoded, receipt);
    assert_eq!(decoded.scope(), ev::DeletionScope::Tenant);
    assert!(ev::DeletionReceipt::decode(&bytes[..bytes.len() - 1]).is_err());
}

#[test]
fn reflection_accepts_the_descriptor_set() {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("reflection builds from the descriptor set");
}
