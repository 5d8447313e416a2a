//! The NATS user of each service and its publish/subscribe permissions, derived from the registries
//! ([`Service::publishes`], [`ALL_CONSUMERS`], [`ALL_STREAMS`]), and the nats-server `authorization`
//! block generated from them: `infra/nats/permissions.conf`, which a test keeps equal to
//! [`nats_authorization_config`] (regenerate with `UPDATE_NATS_CONFIG=1 cargo test -p trustmesh-events`).
//!
//! A service's user may publish, for every tenant, exactly the event kinds it publishes and the dead
//! letters of its own consumers. It subscribes to no `tm.` subject: it reads events only through its
//! own durable pull consumers, and the consumer APIs it may call are those of its own durables
//! (create with the declared filter, info, next, ack, the max-deliveries advisory). Replies reach it
//! on its own inbox prefix [`Service::nats_inbox_prefix`], so it cannot read another service's
//! replies (JetStream acks, pulled messages).
//!
//! Broader than "its subjects", because the services do it at start:
//! - every service ensures every stream (`trustmesh_bus::ensure_streams`), so each may read, create
//!   and update each stream's config (never delete it or purge it, nor read messages of a stream
//!   none of its consumers reads);
//! - every service opens and watches the `tm_auth` bucket (`trustmesh_auth::KeyCache`), so each may
//!   create it and read it; only tenancy may write it.
//!
//! The `tm_usage` bucket ([`USAGE_KV_BUCKET`]): ingest and analysis write their own key of each
//! tenant (`<tenant>.ingest`, `<tenant>.analysis`; a dedicated analysis deployment only its
//! tenant's), tenancy reads by key; these three may open (create) it, no other service touches it.
//!
//! The deletion service alone purges tenants from the streams of [`tenant_purged_streams`].
//!
//! Dedicated profile (infra/README.md, "Deployment profiles"): a tenant's own analysis deployment
//! binds durables of its own ([`dedicated_durable_name`], filtered on the tenant's namespace), which
//! the shared `analysis` user may not use. [`dedicated_analysis_permissions`] is the user of such a
//! deployment, `analysis-<tenant>`; [`nats_authorization_config_with_dedicated`] is the
//! `authorization` block with one such user per dedicated tenant (the committed file has none).

use std::fmt::Write as _;

use crate::consumers::{
    ANALYSIS_DELETION, ANALYSIS_FOLDS, ANALYSIS_REQUESTED, ANALYSIS_SCORES, ConsumerSpec,
};
use crate::streams::{ALL_STREAMS, AUTH_KV_BUCKET, tenant_purged_streams};
use crate::subject::SUBJECT_PREFIX;
use crate::{EventKind, Service, TenantId};

/// Where the generated [`nats_authorization_config`] is committed, relative to the workspace root.
pub const NATS_PERMISSIONS_FILE: &str = "infra/nats/permissions.conf";

/// What one NATS user may publish and subscribe to (NATS subject patterns, `*` and `>` wildcards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsPermissions {
    /// Subjects it may publish to, JetStream API requests and acks included.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

/// NATS KV bucket of the tenants' usage: `<tenant>.ingest` (datasets, stored bytes) written by
/// ingest, `<tenant>.analysis` (jobs QUEUED or RUNNING) written by analysis (a dedicated analysis
/// deployment only its tenant's), each whenever it changes; tenancy reads them for GetQuota.
pub const USAGE_KV_BUCKET: &str = "tm_usage";

/// The JetStream stream behind the `tm_usage` key-value bucket.
fn usage_kv_stream() -> String {
    format!("KV_{USAGE_KV_BUCKET}")
}

/// The JetStream stream behind the `tm_auth` key-value bucket.
fn auth_kv_stream() -> String {
    format!("KV_{AUTH_KV_BUCKET}")
}

/// Pushes `subject` unless it is already there, keeping the first-seen order (stable output).
fn push(list: &mut Vec<String>, subject: String) {
    if !list.contains(&subject) {
        list.push(subject);
    }
}

impl Service {
    /// The NATS user name of this service ([`Service::as_str`]).
    #[must_use]
    pub const fn nats_user(self) -> &'static str {
        self.as_str()
    }

    /// The environment variable holding this service's NATS password (or its bcrypt hash) for
    /// nats-server, e.g. `TRUSTMESH_NATS_PASSWORD_TRUST_SCORING`.
    #[must_use]
    pub fn nats_password_env(self) -> String {
        format!(
            "TRUSTMESH_NATS_PASSWORD_{}",
            self.as_str().to_ascii_uppercase().replace('-', "_")
        )
    }

    /// The inbox prefix this service's client must use (`_INBOX.<service>`), the only inboxes its
    /// user may subscribe to.
    #[must_use]
    pub fn nats_inbox_prefix(self) -> String {
        format!("_INBOX.{}", self.as_str())
    }

    /// Every subject this service's NATS user may publish and subscribe to; see the module docs.
    #[must_use]
    pub fn nats_permissions(self) -> NatsPermissions {
        let mut publish = self.publish_permissions();
        let mut subscribe = vec![format!("{}.>", self.nats_inbox_prefix())];

        let kv_stream = auth_kv_stream();
        let ensured = ALL_STREAMS
            .iter()
            .map(|s| s.name.to_owned())
            .chain([kv_stream.clone()]);
        for stream in ensured {
            for api in ["INFO", "CREATE", "UPDATE"] {
                push(&mut publish, format!("$JS.API.STREAM.{api}.{stream}"));
            }
        }

        for consumer in self.consumers() {
            durable_permissions(
                &mut publish,
                &mut subscribe,
                consumer.stream.name,
                consumer.durable_name,
                consumer.filter_subject,
            );
        }

        // tm_auth: created with the account's limits (`$JS.API.INFO`, read-only) and watched through
        // an ordered (ephemeral) consumer whose flow-control requests the client answers.
        push(&mut publish, "$JS.API.INFO".to_owned());
        push(&mut publish, format!("$JS.API.CONSUMER.CREATE.{kv_stream}"));
        push(&mut publish, format!("$JS.FC.{kv_stream}.>"));

        match self {
            // Only tenancy writes tm_auth, and reads a record by key (direct get).
            Self::Tenancy => {
                push(&mut publish, format!("$KV.{AUTH_KV_BUCKET}.>"));
                push(&mut publish, format!("$JS.API.DIRECT.GET.{kv_stream}.>"));
            }
            Self::Deletion => {
                for stream in tenant_purged_streams() {
                    push(
                        &mut publish,
                        format!("$JS.API.STREAM.PURGE.{}", stream.name),
                    );
                }
            }
            Self::Ingest | Self::Analysis | Self::TrustScoring | Self::Audit | Self::Notifier => {}
        }
        // tm_usage: ingest and analysis write their own key of each tenant, tenancy reads by key;
        // each of them opens (or creates) the bucket.
        let usage_stream = usage_kv_stream();
        match self {
            Self::Ingest | Self::Analysis | Self::Tenancy => {
                for api in ["INFO", "CREATE", "UPDATE"] {
                    push(&mut publish, format!("$JS.API.STREAM.{api}.{usage_stream}"));
                }
            }
            Self::Deletion | Self::TrustScoring | Self::Audit | Self::Notifier => {}
        }
        match self {
            Self::Ingest | Self::Analysis => {
                push(
                    &mut publish,
                    format!("$KV.{USAGE_KV_BUCKET}.*.{}", self.as_str()),
                );
            }
            Self::Tenancy => {
                push(&mut publish, format!("$JS.API.DIRECT.GET.{usage_stream}.>"));
            }
            Self::Deletion | Self::TrustScoring | Self::Audit | Self::Notifier => {}
        }
        NatsPermissions { publish, subscribe }
    }
}

/// The API subjects of durable `durable` on `stream` (filter `filter`): create with that filter,
/// info, next, ack, fetch by sequence (to dead-letter), and its max-deliveries advisory.
fn durable_permissions(
    publish: &mut Vec<String>,
    subscribe: &mut Vec<String>,
    stream: &str,
    durable: &str,
    filter: &str,
) {
    push(
        publish,
        format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}.{filter}"),
    );
    push(publish, format!("$JS.API.CONSUMER.INFO.{stream}.{durable}"));
    push(
        publish,
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"),
    );
    push(publish, format!("$JS.ACK.{stream}.{durable}.>"));
    // A message whose last delivery was lost is fetched by sequence to dead-letter it.
    push(publish, format!("$JS.API.STREAM.MSG.GET.{stream}"));
    push(
        subscribe,
        format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}"),
    );
}

/// The analysis consumers a dedicated deployment binds for its tenant instead of the shared ones:
/// every analysis consumer, since the tenant's jobs, objects and keys are only in that deployment's
/// database and bucket (its jobs and folds run there, `scores.ready` completes its jobs there, and
/// only it can delete them and scan its bucket for residue).
pub const DEDICATED_CONSUMERS: [&ConsumerSpec; 4] = [
    &ANALYSIS_REQUESTED,
    &ANALYSIS_FOLDS,
    &ANALYSIS_SCORES,
    &ANALYSIS_DELETION,
];

/// The durable a dedicated deployment binds for `tenant` in place of `spec`: `<durable>-<tenant>`
/// (filtered on [`ConsumerSpec::filter_for_tenant`]); also the last token of its dead letters'
/// subject `tm.<tenant>.dlq.<durable>-<tenant>`.
#[must_use]
pub fn dedicated_durable_name(spec: &ConsumerSpec, tenant: &TenantId) -> String {
    format!("{}-{tenant}", spec.durable_name)
}

/// The NATS user of `tenant`'s dedicated analysis deployment: `analysis-<tenant>`.
#[must_use]
pub fn dedicated_analysis_user(tenant: &TenantId) -> String {
    format!("{}-{tenant}", Service::Analysis.nats_user())
}

/// The environment variable holding the password of [`dedicated_analysis_user`] for nats-server,
/// e.g. `TRUSTMESH_NATS_PASSWORD_ANALYSIS_VIP`.
#[must_use]
pub fn dedicated_analysis_password_env(tenant: &TenantId) -> String {
    format!(
        "{}_{}",
        Service::Analysis.nats_password_env(),
        tenant.as_str().to_ascii_uppercase().replace('-', "_")
    )
}

/// What `tenant`'s dedicated analysis deployment may do: the shared `analysis` user's permissions
/// with [`DEDICATED_CONSUMERS`] replaced by its own durables ([`dedicated_durable_name`], filtered
/// on `tm.<tenant>.…`) and their dead letters (`tm.<tenant>.dlq.<durable>-<tenant>`). It cannot pull
/// from the shared `analysis-requested`, `analysis-folds`, `analysis-scores` and
/// `analysis-deletion`, nor from another tenant's durables.
#[must_use]
pub fn dedicated_analysis_permissions(tenant: &TenantId) -> NatsPermissions {
    let shared = Service::Analysis.nats_permissions();
    let replaced: Vec<String> = DEDICATED_CONSUMERS
        .iter()
        .flat_map(|spec| {
            let mut publish = Vec::new();
            let mut subscribe = Vec::new();
            durable_permissions(
                &mut publish,
                &mut subscribe,
                spec.stream.name,
                spec.durable_name,
                spec.filter_subject,
            );
            let dead_letters = format!("{SUBJECT_PREFIX}.*.{}", EventKind::DeadLetter(spec));
            publish.into_iter().chain(subscribe).chain([dead_letters])
        })
        // Fetching by sequence is every consumer's of the stream, kept for the dedicated ones.
        .filter(|subject| !subject.starts_with("$JS.API.STREAM.MSG.GET."))
        .collect();
    let keep = |list: Vec<String>| -> Vec<String> {
        list.into_iter()
            .filter(|subject| !replaced.contains(subject))
            .collect()
    };
    // Its usage report is its tenant's only.
    let shared_usage = format!("$KV.{USAGE_KV_BUCKET}.*.{}", Service::Analysis.as_str());
    let mut publish: Vec<String> = keep(shared.publish)
        .into_iter()
        .map(|subject| {
            if subject == shared_usage {
                format!(
                    "$KV.{USAGE_KV_BUCKET}.{tenant}.{}",
                    Service::Analysis.as_str()
                )
            } else {
                subject
            }
        })
        .collect();
    let mut subscribe = keep(shared.subscribe);
    for spec in DEDICATED_CONSUMERS {
        let durable = dedicated_durable_name(spec, tenant);
        durable_permissions(
            &mut publish,
            &mut subscribe,
            spec.stream.name,
            &durable,
            spec.filter_for_tenant(tenant).as_str(),
        );
        push(
            &mut publish,
            format!(
                "{SUBJECT_PREFIX}.{tenant}.{}.{durable}",
                EventKind::DeadLetter(spec).domain().as_str()
            ),
        );
    }
    NatsPermissions { publish, subscribe }
}

/// The nats-server `authorization` block: one user per service with its [`Service::nats_permissions`],
/// its password read from [`Service::nats_password_env`] when the server starts.
#[must_use]
pub fn nats_authorization_config() -> String {
    nats_authorization_config_with_dedicated(&[])
}

/// [`nats_authorization_config`] plus, for each tenant of `dedicated`, the user of its dedicated
/// analysis deployment ([`dedicated_analysis_user`], [`dedicated_analysis_permissions`], password
/// from [`dedicated_analysis_password_env`]). Printed by
/// `cargo run -p trustmesh-events --example nats-permissions -- <tenant>...`.
#[must_use]
pub fn nats_authorization_config_with_dedicated(dedicated: &[TenantId]) -> String {
    let mut out = String::from(
        "# GENERATED from the registries of libs/events (permissions.rs); do not edit.\n\
         # Regenerate: UPDATE_NATS_CONFIG=1 cargo test -p trustmesh-events --lib permissions\n\
         # Each password comes from the environment of nats-server (plain or a bcrypt hash).\n",
    );
    if !dedicated.is_empty() {
        out.push_str(
            "# With dedicated analysis deployments: cargo run -p trustmesh-events --example \
             nats-permissions -- <tenant>...\n",
        );
    }
    out.push_str("authorization {\n  users = [\n");
    let users = Service::ALL
        .map(|service| {
            (
                service.nats_user().to_owned(),
                service.nats_password_env(),
                service.nats_permissions(),
            )
        })
        .into_iter()
        .chain(dedicated.iter().map(|tenant| {
            (
                dedicated_analysis_user(tenant),
                dedicated_analysis_password_env(tenant),
                dedicated_analysis_permissions(tenant),
            )
        }));
    for (user, password_env, permissions) in users {
        // NOTE: writing to a String cannot fail.
        let _ = writeln!(
            out,
            "    {{\n      user: \"{user}\"\n      password: ${password_env}\n      permissions: {{",
        );
        write_list(&mut out, "publish", &permissions.publish);
        write_list(&mut out, "subscribe", &permissions.subscribe);
        out.push_str("      }\n    }\n");
    }
    out.push_str("  ]\n}\n");
    out
}

fn write_list(out: &mut String, name: &str, subjects: &[String]) {
    let _ = writeln!(out, "        {name}: {{\n          allow: [");
    for subject in subjects {
        // Quoted, so nats-server does not read `$JS...` as a variable.
        let _ = writeln!(out, "            \"{subject}\"");
    }
    out.push_str("          ]\n        }\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject::filter_matches;
    use crate::{ALL_CONSUMERS, EventKind, Subject, TenantId};

    fn allows(patterns: &[String], subject: &str) -> bool {
        patterns.iter().any(|p| filter_matches(p, subject))
    }

    /// Every kind of event, for one tenant.
    fn every_subject() -> Vec<(EventKind, String)> {
        let acme = TenantId::parse("acme").expect("valid");
        EventKind::FIXED
            .into_iter()
            .chain(Service::ALL.map(EventKind::Audit))
            .chain(ALL_CONSUMERS.iter().copied().map(EventKind::DeadLetter))
            .map(|k| (k, Subject::new(&acme, k).as_str().to_owned()))
            .collect()
    }

    #[test]
    fn each_service_publishes_exactly_its_kinds_and_subscribes_to_no_event() {
        for service in Service::ALL {
            let permissions = service.nats_permissions();
            for (kind, subject) in every_subject() {
                let own = service.publishes().contains(&kind)
                    || matches!(kind, EventKind::DeadLetter(c) if c.service == service);
                assert_eq!(
                    allows(&permissions.publish, &subject),
                    own,
                    "{service} publish {subject}"
                );
                assert!(
                    !allows(&permissions.subscribe, &subject),
                    "{service} subscribe {subject}"
                );
            }
        }
    }

    #[test]
    fn consumer_apis_are_only_the_services_own() {
        for service in Service::ALL {
            let publish = service.nats_permissions().publish;
            for consumer in ALL_CONSUMERS {
                let next = format!(
                    "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
                    consumer.stream.name, consumer.durable_name
                );
                let ack = format!(
                    "$JS.ACK.{}.{}.1.2.3.4.5",
                    consumer.stream.name, consumer.durable_name
                );
                let own = consumer.service == service;
                assert_eq!(allows(&publish, &next), own, "{service}: {next}");
                assert_eq!(allows(&publish, &ack), own, "{service}: {ack}");
            }
            // An ephemeral consumer on an event stream would read every tenant's events.
            for stream in ALL_STREAMS {
                let create = format!("$JS.API.CONSUMER.CREATE.{}", stream.name);
                assert!(!allows(&publish, &create), "{service}: {create}");
                let delete = format!("$JS.API.STREAM.DELETE.{}", stream.name);
                assert!(!allows(&publish, &delete), "{service}: {delete}");
            }
            assert_eq!(
                allows(&publish, "$KV.tm_auth.keys.k1"),
                service == Service::Tenancy,
                "{service} writes tm_auth"
            );
            assert_eq!(
                allows(&publish, "$JS.API.STREAM.PURGE.TM_DATASET"),
                service == Service::Deletion,
                "{service} purges"
            );
            assert!(!allows(&publish, "$JS.API.STREAM.PURGE.TM_AUDIT"));
            // tm_usage: each of ingest and analysis writes only its own key of a tenant; tenancy
            // reads them; nobody else touches the bucket.
            for writer in [Service::Ingest, Service::Analysis] {
                let key = format!("$KV.tm_usage.acme.{}", writer.as_str());
                assert_eq!(
                    allows(&publish, &key),
                    service == writer,
                    "{service}: {key}"
                );
            }
            assert!(!allows(&publish, "$KV.tm_usage.acme.tenancy"), "{service}");
            assert_eq!(
                allows(
                    &publish,
                    "$JS.API.DIRECT.GET.KV_tm_usage.$KV.tm_usage.acme.ingest"
                ),
                service == Service::Tenancy,
                "{service} reads tm_usage"
            );
            assert_eq!(
                allows(&publish, "$JS.API.STREAM.INFO.KV_tm_usage"),
                matches!(
                    service,
                    Service::Ingest | Service::Analysis | Service::Tenancy
                ),
                "{service} opens tm_usage"
            );
            assert!(!allows(&publish, "$JS.API.STREAM.PURGE.KV_tm_usage"));
            assert!(!allows(&publish, "$JS.API.STREAM.DELETE.KV_tm_usage"));
        }
    }

    #[test]
    fn inboxes_are_per_service() {
        for service in Service::ALL {
            let subscribe = service.nats_permissions().subscribe;
            for other in Service::ALL {
                let inbox = format!("{}.abc", other.nats_inbox_prefix());
                assert_eq!(allows(&subscribe, &inbox), other == service, "{service}");
            }
            assert!(!allows(&subscribe, "_INBOX.abc"), "{service}");
        }
        assert_eq!(
            Service::TrustScoring.nats_password_env(),
            "TRUSTMESH_NATS_PASSWORD_TRUST_SCORING"
        );
    }

    #[test]
    fn a_dedicated_deployment_uses_only_its_tenants_durables() {
        let vip = TenantId::parse("vip").expect("valid");
        let dedicated = dedicated_analysis_permissions(&vip);
        let shared = Service::Analysis.nats_permissions();
        for spec in DEDICATED_CONSUMERS {
            let own = dedicated_durable_name(spec, &vip);
            let stream = spec.stream.name;
            let filter = spec.filter_for_tenant(&vip);
            for (subject, dedicated_may, shared_may) in [
                (
                    format!("$JS.API.CONSUMER.CREATE.{stream}.{own}.{}", filter.as_str()),
                    true,
                    false,
                ),
                (
                    format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{own}"),
                    true,
                    false,
                ),
                (format!("$JS.ACK.{stream}.{own}.1.2.3.4.5"), true, false),
                (format!("tm.vip.dlq.{own}"), true, false),
                // Its durable only with its tenant's filter, not every tenant's.
                (
                    format!(
                        "$JS.API.CONSUMER.CREATE.{stream}.{own}.{}",
                        spec.filter_subject
                    ),
                    false,
                    false,
                ),
                (format!("tm.acme.dlq.{own}"), false, false),
                // Not the shared durables, nor another tenant's.
                (
                    format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{}", spec.durable_name),
                    false,
                    true,
                ),
                (
                    format!(
                        "$JS.API.CONSUMER.MSG.NEXT.{stream}.{}-acme",
                        spec.durable_name
                    ),
                    false,
                    false,
                ),
                (format!("$JS.API.STREAM.MSG.GET.{stream}"), true, true),
            ] {
                assert_eq!(
                    allows(&dedicated.publish, &subject),
                    dedicated_may,
                    "{subject}"
                );
                assert_eq!(allows(&shared.publish, &subject), shared_may, "{subject}");
            }
            let advisory = format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{own}");
            assert!(allows(&dedicated.subscribe, &advisory));
        }
        // Every analysis consumer has its dedicated twin.
        let analysis: Vec<&str> = ALL_CONSUMERS
            .iter()
            .filter(|c| c.service == Service::Analysis)
            .map(|c| c.durable_name)
            .collect();
        let twins: Vec<&str> = DEDICATED_CONSUMERS.iter().map(|c| c.durable_name).collect();
        assert_eq!(analysis, twins);
        // The rest is the shared user's: its events (receipts included) and the streams.
        for subject in [
            "tm.acme.analysis.completed",
            "tm.vip.deletion.receipt",
            "$JS.API.STREAM.INFO.TM_ANALYSIS",
        ] {
            assert!(allows(&dedicated.publish, subject), "{subject}");
        }
        for subject in [
            "$JS.API.CONSUMER.MSG.NEXT.TM_SCORES.analysis-scores",
            "$JS.API.CONSUMER.MSG.NEXT.TM_DELETION.analysis-deletion",
            "tm.vip.dlq.analysis-deletion",
        ] {
            assert!(!allows(&dedicated.publish, subject), "{subject}");
        }
        // Its usage report only for its tenant.
        assert!(allows(&dedicated.publish, "$KV.tm_usage.vip.analysis"));
        assert!(!allows(&dedicated.publish, "$KV.tm_usage.acme.analysis"));
        assert!(allows(&shared.publish, "$KV.tm_usage.acme.analysis"));
        assert_eq!(dedicated_analysis_user(&vip), "analysis-vip");
        assert_eq!(
            dedicated_analysis_password_env(&TenantId::parse("big-co").expect("valid")),
            "TRUSTMESH_NATS_PASSWORD_ANALYSIS_BIG_CO"
        );
        let config = nats_authorization_config_with_dedicated(&[vip]);
        assert!(config.contains("user: \"analysis-vip\""));
        assert!(config.contains("password: $TRUSTMESH_NATS_PASSWORD_ANALYSIS_VIP"));
    }

    /// `infra/nats/permissions.conf` is [`nats_authorization_config`]; with `UPDATE_NATS_CONFIG=1`
    /// this test rewrites it instead.
    #[test]
    fn committed_permissions_conf_is_generated() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(NATS_PERMISSIONS_FILE);
        let generated = nats_authorization_config();
        if std::env::var_os("UPDATE_NATS_CONFIG").is_some() {
            std::fs::write(&path, &generated)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert!(
            committed == generated,
            "{NATS_PERMISSIONS_FILE} is stale: run UPDATE_NATS_CONFIG=1 cargo test -p trustmesh-events --lib permissions"
        );
    }
}
