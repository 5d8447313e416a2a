//! Property tests: valid tenant ids always build safe subjects; forbidden characters are always rejected.

use proptest::prelude::*;
use trustmesh_events::{EventKind, Service, Subject, SubjectFilter, TenantId};

fn valid_tenant() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{2,62}"
}

fn kind() -> impl Strategy<Value = EventKind> {
    let mut kinds = EventKind::FIXED.to_vec();
    kinds.extend(Service::ALL.map(EventKind::Audit));
    kinds.extend(
        trustmesh_events::ALL_CONSUMERS
            .iter()
            .copied()
            .map(EventKind::DeadLetter),
    );
    proptest::sample::select(kinds)
}

proptest! {
    #[test]
    fn valid_ids_build_wildcard_free_subjects(id in valid_tenant(), kind in kind()) {
        let tenant = TenantId::parse(id.clone()).expect("matches the tenant regex");
        let subject = Subject::new(&tenant, kind);
        let tokens: Vec<&str> = subject.as_str().split('.').collect();
        prop_assert!(tokens.len() >= 4, "{subject}");
        prop_assert_eq!(tokens[0], "tm");
        prop_assert_eq!(tokens[1], id.as_str());
        prop_assert!(tokens.iter().all(|t| !t.is_empty() && *t != "*" && *t != ">"));
        prop_assert!(!subject.as_str().contains(['*', '>', ' ', '/']));
        prop_assert_eq!(Subject::parse(subject.as_str()), Ok(subject.clone()));
        prop_assert!(SubjectFilter::tenant(&tenant).matches(subject.as_str()));
    }

    #[test]
    fn forbidden_characters_are_rejected(
        prefix in "[a-z0-9]{1,20}",
        bad in prop_oneof![
            Just('.'), Just('*'), Just('>'), Just('/'), Just(' '), Just('\t'), Just('\n'),
            Just('A'), Just('_'), Just('\u{0}'),
            any::<char>().prop_filter("non-ASCII", |c| !c.is_ascii()),
        ],
        suffix in "[a-z0-9-]{0,20}",
    ) {
        let id = format!("{prefix}{bad}{suffix}");
        let err = TenantId::parse(id).expect_err("must be rejected");
        prop_assert_eq!(
            err,
            trustmesh_events::TenantIdError::ForbiddenChar { ch: bad, index: prefix.chars().count() }
        );
    }

    #[test]
    fn other_tenants_filters_never_match(a in valid_tenant(), b in valid_tenant(), kind in kind()) {
        prop_assume!(a != b);
        let a = TenantId::parse(a).expect("valid");
        let b = TenantId::parse(b).expect("valid");
        prop_assert!(!SubjectFilter::tenant(&b).matches(Subject::new(&a, kind).as_str()));
    }
}

/// No tenant id from a hostile corpus yields a subject outside `tm.<tenant>.`: none of them is a
/// tenant id, and a subject is built only from a [`TenantId`].
#[test]
fn hostile_tenant_ids_never_reach_a_subject() {
    let hostile = [
        "",
        ".",
        "..",
        "*",
        ">",
        "/",
        "acme.>",
        "acme.*",
        "acme.audit",
        "*.acme",
        "../acme",
        "acme/..",
        "acme\0",
        "\0acme",
        "ac me",
        " acme",
        "acme ",
        "acme\t",
        "acme\n",
        "acme\r\n",
        "ACME",
        "acmé",
        "ａｃｍｅ",
        "аcme",
        "acme\u{200b}",
        "acme\u{202e}",
        "acme\u{ff0e}x",
        "acme\u{2024}x",
        "-acme",
        "ac",
        &"a".repeat(64),
    ];
    for id in hostile {
        assert!(TenantId::parse(id).is_err(), "{id:?} was accepted");
    }
}
