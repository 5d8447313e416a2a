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
//! The deletion service alone purges tenants from the streams of [`tenant_purged_streams`].

use std::fmt::Write as _;

use crate::Service;
use crate::streams::{ALL_STREAMS, AUTH_KV_BUCKET, tenant_purged_streams};

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
            let (stream, durable) = (consumer.stream.name, consumer.durable_name);
            push(
                &mut publish,
                format!(
                    "$JS.API.CONSUMER.CREATE.{stream}.{durable}.{}",
                    consumer.filter_subject
                ),
            );
            push(
                &mut publish,
                format!("$JS.API.CONSUMER.INFO.{stream}.{durable}"),
            );
            push(
                &mut publish,
                format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"),
            );
            push(&mut publish, format!("$JS.ACK.{stream}.{durable}.>"));
            // A message whose last delivery was lost is fetched by sequence to dead-letter it.
            push(&mut publish, format!("$JS.API.STREAM.MSG.GET.{stream}"));
            push(
                &mut subscribe,
                format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}"),
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
        NatsPermissions { publish, subscribe }
    }
}

/// The nats-server `authorization` block: one user per service with its [`Service::nats_permissions`],
/// its password read from [`Service::nats_password_env`] when the server starts.
#[must_use]
pub fn nats_authorization_config() -> String {
    let mut out = String::from(
        "# GENERATED from the registries of libs/events (permissions.rs); do not edit.\n\
         # Regenerate: UPDATE_NATS_CONFIG=1 cargo test -p trustmesh-events --lib permissions\n\
         # Each password comes from the environment of nats-server (plain or a bcrypt hash).\n\
         authorization {\n  users = [\n",
    );
    for service in Service::ALL {
        let permissions = service.nats_permissions();
        // NOTE: writing to a String cannot fail.
        let _ = writeln!(
            out,
            "    {{\n      user: \"{}\"\n      password: ${}\n      permissions: {{",
            service.nats_user(),
            service.nats_password_env()
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
