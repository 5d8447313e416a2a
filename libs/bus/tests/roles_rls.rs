//! Least privilege in Postgres against a real server (a private cluster): each service's role owns
//! only its schema and cannot read another's, and row-level security keeps a transaction to the
//! tenant it names. The schemas are the services' own, from their migrations in the repo.

use std::str::FromStr as _;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, Executor as _, PgPool};
use trustmesh_bus::schema::rls::{
    TENANT_POLICY, TENANT_PREDICATE, service_tx, tenant_policy_sql, tenant_tx,
};
use trustmesh_bus::schema::roles::{
    RoleName, current_role_privileges, may_provision_roles, provision_for_admin_url,
    provision_service_role,
};
use trustmesh_bus::{SchemaName, ensure_schema};
use trustmesh_testkit::pg_cluster::PgCluster;
use uuid::Uuid;

static ANALYSIS: Migrator = sqlx::migrate!("../../services/analysis/migrations");
static TRUST_SCORING: Migrator = sqlx::migrate!("../../services/trust-scoring/migrations");
static INGEST: Migrator = sqlx::migrate!("../../services/ingest/migrations");
static AUDIT: Migrator = sqlx::migrate!("../../services/audit/migrations");
static DELETION: Migrator = sqlx::migrate!("../../services/deletion/migrations");
static TENANCY: Migrator = sqlx::migrate!("../../services/tenancy/migrations");
static NOTIFIER: Migrator = sqlx::migrate!("../../services/notifier/migrations");
/// trustmesh-store's `objects` and `deks`, which every service with encrypted objects or DEKs has in
/// its own schema next to its own tables.
static STORE: Migrator = sqlx::migrate!("../store/migrations");

/// The services whose tenant tables are under row-level security, with their migrations and the
/// tables with a `tenant` column their migrations create at least.
static CONVERTED: [(&str, &Migrator, &[&str]); 7] = [
    ("analysis", &ANALYSIS, &["jobs"]),
    ("trust_scoring", &TRUST_SCORING, &["corrections", "reports"]),
    ("ingest", &INGEST, &["datasets"]),
    ("audit", &AUDIT, &["chain_heads", "checkpoints", "events"]),
    ("deletion", &DELETION, &["deletions"]),
    (
        "tenancy",
        &TENANCY,
        &["api_keys", "quotas", "support_grants"],
    ),
    (
        "notifier",
        &NOTIFIER,
        &[
            "deleted_datasets",
            "webhook_deliveries",
            "webhook_endpoints",
        ],
    ),
];

/// Tenant tables without a `tenant` column, under a policy through the row they belong to: they
/// must be forced too.
static BY_PARENT: [(&str, &str); 2] = [("deletion", "receipts"), ("deletion", "certificates")];

/// Tables of the converted schemas that hold no tenant's rows, and why.
static NOT_TENANT_DATA: [(&str, &str); 5] = [
    ("deletion", "signing_keys"), // the service's own public keys
    ("tenancy", "tenants"),       // the operator's registry of tenants
    ("*", "outbox"),              // events in flight, published by the relay (service-wide)
    ("*", "processed_messages"),  // consumer message ids
    ("*", "_sqlx_migrations"),    // the migration history
];

const DATABASE: &str = "trustmesh";

async fn admin(cluster: &PgCluster) -> PgPool {
    let mut conn = sqlx::PgConnection::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    conn.execute(format!("CREATE DATABASE {DATABASE}").as_str())
        .await
        .unwrap();
    conn.close().await.unwrap();
    PgPoolOptions::new()
        .max_connections(2)
        .connect(&cluster.url(DATABASE))
        .await
        .unwrap()
}

/// A pool connected as `role`, its `search_path` the service's schema, as a service connects.
async fn connect_as(cluster: &PgCluster, role: &RoleName, schema: &SchemaName) -> PgPool {
    let url = format!(
        "postgres://{role}:pw-{role}@127.0.0.1:{}/{DATABASE}",
        cluster.port()
    );
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap()
}

/// Provisions every converted service's role and schema, then migrates each schema as its role.
async fn services(cluster: &PgCluster, admin: &PgPool) -> Vec<(SchemaName, RoleName, PgPool)> {
    let mut out = Vec::new();
    for &(schema, migrator, _) in &CONVERTED {
        let schema = SchemaName::new(schema).unwrap();
        let role = RoleName::for_schema(&schema).unwrap();
        provision_service_role(admin, &schema, &role, &format!("pw-{role}"))
            .await
            .unwrap();
        let pool = connect_as(cluster, &role, &schema).await;
        migrator.run(&pool).await.unwrap();
        ensure_schema(&pool, &schema).await.unwrap();
        out.push((schema, role, pool));
    }
    out
}

fn denied(result: Result<impl std::fmt::Debug, sqlx::Error>, what: &str) {
    match result {
        Err(sqlx::Error::Database(e)) => assert_eq!(
            e.code().as_deref(),
            Some("42501"),
            "{what}: expected insufficient_privilege, got {e}"
        ),
        other => panic!("{what}: expected permission denied, got {other:?}"),
    }
}

#[tokio::test]
async fn each_service_role_owns_its_schema_and_cannot_read_another() {
    let cluster = PgCluster::start().await;
    let admin = admin(&cluster).await;
    let services = services(&cluster, &admin).await;

    for (schema, role, pool) in &services {
        assert_eq!(
            current_role_privileges(pool).await.unwrap(),
            (false, false),
            "{role} is neither superuser nor BYPASSRLS"
        );
        let owner: String = sqlx::query_scalar(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1",
        )
        .bind(schema.as_str())
        .fetch_one(&admin)
        .await
        .unwrap();
        assert_eq!(owner, role.as_str(), "{role} owns {schema}");
        for (other, _, _) in services.iter().filter(|(other, _, _)| other != schema) {
            for table in ["outbox", "processed_messages", "_sqlx_migrations"] {
                denied(
                    sqlx::query(&format!(r#"SELECT * FROM "{other}"."{table}""#))
                        .fetch_all(pool)
                        .await,
                    &format!("{role} reading {other}.{table}"),
                );
            }
            denied(
                sqlx::query(&format!(r#"CREATE TABLE "{other}".intruder (n int)"#))
                    .execute(pool)
                    .await,
                &format!("{role} creating a table in {other}"),
            );
        }
        denied(
            sqlx::query("CREATE TABLE public.intruder (n int)")
                .execute(pool)
                .await,
            &format!("{role} creating a table in public"),
        );
    }
    // The tenant tables themselves, named: analysis cannot read trust-scoring's reports and back.
    let (analysis, scoring) = (&services[0].2, &services[1].2);
    denied(
        sqlx::query("SELECT * FROM trust_scoring.reports")
            .fetch_all(analysis)
            .await,
        "analysis reading trust_scoring.reports",
    );
    denied(
        sqlx::query("SELECT * FROM analysis.jobs")
            .fetch_all(scoring)
            .await,
        "trust-scoring reading analysis.jobs",
    );
    // And the newly covered services' tenant tables.
    let pool_of = |name: &str| {
        &services
            .iter()
            .find(|(schema, _, _)| schema.as_str() == name)
            .unwrap()
            .2
    };
    for (reader, table) in [
        ("audit", "tenancy.api_keys"),
        ("tenancy", "audit.events"),
        ("tenancy", "deletion.deletions"),
        ("deletion", "audit.chain_heads"),
        ("ingest", "deletion.receipts"),
        ("audit", "tenancy.tenants"),
    ] {
        denied(
            sqlx::query(&format!("SELECT * FROM {table}"))
                .fetch_all(pool_of(reader))
                .await,
            &format!("{reader} reading {table}"),
        );
    }
}

#[tokio::test]
async fn provisioning_is_repeatable_and_takes_over_a_schema_created_before_the_role() {
    let cluster = PgCluster::start().await;
    let admin = admin(&cluster).await;
    admin
        .execute("CREATE SCHEMA legacy; CREATE TABLE legacy.things (id bigserial PRIMARY KEY, tenant text NOT NULL)")
        .await
        .unwrap();
    let schema = SchemaName::new("legacy").unwrap();
    let role = RoleName::for_schema(&schema).unwrap();
    assert_eq!(role.as_str(), "tm_legacy");
    let handed_over = provision_service_role(&admin, &schema, &role, "pw-tm_legacy")
        .await
        .unwrap();
    assert_eq!(
        handed_over, 1,
        "the table changes owner, its sequence with it"
    );
    assert_eq!(
        provision_service_role(&admin, &schema, &role, "pw-tm_legacy")
            .await
            .unwrap(),
        0,
        "a second run changes nothing"
    );
    let pool = connect_as(&cluster, &role, &schema).await;
    sqlx::query("INSERT INTO things (tenant) VALUES ('a')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE things ADD COLUMN note text")
        .execute(&pool)
        .await
        .expect("the owner migrates its schema");
}

async fn insert_report(pool: &PgPool, tenant: &str) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    let mut tx = tenant_tx(pool, tenant).await?;
    sqlx::query(
        "INSERT INTO reports (tenant, id, dataset, row_count, flagged_row_count, health_score, report_sealed)
         VALUES ($1, $2, $3, 10, 1, 0.9, '\\x00')",
    )
    .bind(tenant)
    .bind(id)
    .bind(Uuid::now_v7())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO corrections (tenant, report, row_index, action) VALUES ($1, $2, 0, 2)",
    )
    .bind(tenant)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

async fn tenants_seen(pool: &PgPool, tenant: Option<&str>, table: &str) -> Vec<String> {
    let query = format!("SELECT DISTINCT tenant FROM {table} ORDER BY tenant");
    match tenant {
        Some(tenant) => {
            let mut tx = tenant_tx(pool, tenant).await.unwrap();
            let seen = sqlx::query_scalar(&query)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            seen
        }
        None => sqlx::query_scalar(&query).fetch_all(pool).await.unwrap(),
    }
}

#[tokio::test]
async fn under_tenant_a_no_row_of_tenant_b_and_without_a_tenant_no_row() {
    let cluster = PgCluster::start().await;
    let admin = admin(&cluster).await;
    let services = services(&cluster, &admin).await;
    let scoring = &services[1].2;

    let a_report = insert_report(scoring, "tenant-a").await.unwrap();
    let b_report = insert_report(scoring, "tenant-b").await.unwrap();

    for table in ["reports", "corrections"] {
        assert_eq!(
            tenants_seen(scoring, Some("tenant-a"), table).await,
            ["tenant-a"],
            "{table} under tenant A"
        );
        assert_eq!(
            tenants_seen(scoring, Some("tenant-b"), table).await,
            ["tenant-b"],
            "{table} under tenant B"
        );
        assert!(
            tenants_seen(scoring, None, table).await.is_empty(),
            "{table} without a tenant setting shows no row"
        );
    }

    // Naming tenant B's row explicitly under tenant A's setting finds, changes and deletes nothing.
    let mut tx = tenant_tx(scoring, "tenant-a").await.unwrap();
    let found: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM reports WHERE tenant = 'tenant-b' AND id = $1")
            .bind(b_report)
            .fetch_optional(&mut *tx)
            .await
            .unwrap();
    assert_eq!(found, None);
    let updated = sqlx::query("UPDATE reports SET row_count = 0 WHERE tenant = 'tenant-b'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    let deleted = sqlx::query("DELETE FROM corrections WHERE tenant = 'tenant-b'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!((updated, deleted), (0, 0));
    tx.commit().await.unwrap();

    // Writing a row of tenant B under tenant A's setting is refused (the policy's WITH CHECK), and
    // so is moving A's row to B.
    let mut tx = tenant_tx(scoring, "tenant-a").await.unwrap();
    let forged = sqlx::query(
        "INSERT INTO reports (tenant, id, dataset, row_count, flagged_row_count, health_score, report_sealed)
         VALUES ('tenant-b', $1, $1, 1, 0, 1.0, '\\x00')",
    )
    .bind(Uuid::now_v7())
    .execute(&mut *tx)
    .await;
    denied(forged, "inserting tenant B's row under tenant A");
    tx.rollback().await.unwrap();
    let mut tx = tenant_tx(scoring, "tenant-a").await.unwrap();
    denied(
        sqlx::query("UPDATE reports SET tenant = 'tenant-b' WHERE id = $1")
            .bind(a_report)
            .execute(&mut *tx)
            .await,
        "moving tenant A's row to tenant B",
    );
    tx.rollback().await.unwrap();

    // The setting is transaction-local: the next transaction on the same connection sees nothing.
    let mut conn = scoring.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    trustmesh_bus::schema::rls::set_tenant(&mut tx, "tenant-a")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM reports")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(after, 0, "no tenant setting survives its transaction");
    drop(conn);

    // The service-wide escape sees both tenants (sweepers, a whole tenant's deletion).
    let mut tx = service_tx(scoring).await.unwrap();
    let all: Vec<String> = sqlx::query_scalar("SELECT tenant FROM reports ORDER BY tenant")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(all, ["tenant-a", "tenant-b"]);
}

#[tokio::test]
async fn every_tenant_table_of_a_converted_service_forces_the_tenant_policy() {
    let cluster = PgCluster::start().await;
    let admin = admin(&cluster).await;
    services(&cluster, &admin).await;
    for &(schema, migrator, known) in &CONVERTED {
        // Every table with a `tenant` column, whatever its migrations named it.
        let with_tenant: Vec<(String, bool, bool)> = sqlx::query_as(
            "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant' AND NOT a.attisdropped
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1",
        )
        .bind(schema)
        .fetch_all(&admin)
        .await
        .unwrap();
        for table in known {
            assert!(
                with_tenant.iter().any(|(t, _, _)| t == table),
                "{schema}.{table} has a tenant column"
            );
        }
        for (table, enabled, forced) in &with_tenant {
            assert!(
                *enabled && *forced,
                "{schema}.{table}: row-level security enabled ({enabled}) and forced ({forced})"
            );
        }
        for (table, _, _) in &with_tenant {
            let policy: (String, String) = sqlx::query_as(
                "SELECT qual, with_check FROM pg_policies WHERE schemaname = $1 AND tablename = $2 AND policyname = $3",
            )
            .bind(schema)
            .bind(table)
            .bind(TENANT_POLICY)
            .fetch_one(&admin)
            .await
            .unwrap_or_else(|e| panic!("{schema}.{table} has no {TENANT_POLICY} policy: {e}"));
            assert_eq!(
                policy.0, policy.1,
                "{schema}.{table}: reads and writes alike"
            );
            assert!(policy.0.contains("trustmesh.tenant") && policy.0.contains("trustmesh.scope"));
            // The migration says it in the one form the library documents.
            let sql: String = migrator
                .iter()
                .map(|m| m.sql.to_string())
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                sql.contains(&tenant_policy_sql(table)),
                "{schema}: the migration of {table} should be tenant_policy_sql({table:?}) (predicate {TENANT_PREDICATE})"
            );
        }
        // Every other table is a tenant table under a policy through its parent, or holds no
        // tenant's rows: a new table must be classified here.
        let others: Vec<(String, bool, bool, i64)> = sqlx::query_as(
            "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity,
                    (SELECT count(*) FROM pg_policies p WHERE p.schemaname = n.nspname AND p.tablename = c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
               AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                               AND a.attname = 'tenant' AND NOT a.attisdropped)
             ORDER BY 1",
        )
        .bind(schema)
        .fetch_all(&admin)
        .await
        .unwrap();
        for (table, enabled, forced, policies) in &others {
            if BY_PARENT.contains(&(schema, table.as_str())) {
                assert!(
                    *enabled && *forced && *policies == 1,
                    "{schema}.{table}: forced row-level security with its policy"
                );
            } else {
                assert!(
                    NOT_TENANT_DATA
                        .iter()
                        .any(|&(s, t)| (s == schema || s == "*") && t == table),
                    "{schema}.{table} has no tenant column and is not classified: is it tenant data?"
                );
            }
        }
    }
}

/// One row of `tenant` in every table of audit, deletion and tenancy, written under the tenant's
/// own setting (so the policies' `WITH CHECK` lets a tenant write its rows); returns its deletion id.
async fn seed_tenant(pools: &[(SchemaName, RoleName, PgPool)], tenant: &str) -> Uuid {
    let pool_of = |name: &str| {
        &pools
            .iter()
            .find(|(schema, _, _)| schema.as_str() == name)
            .unwrap()
            .2
    };
    let mut tx = tenant_tx(pool_of("audit"), tenant).await.unwrap();
    tx.execute(
        sqlx::query("INSERT INTO chain_heads (tenant, sequence, hash) VALUES ($1, 1, '\\x01')")
            .bind(tenant),
    )
    .await
    .unwrap();
    tx.execute(sqlx::query(
        "INSERT INTO events (tenant, sequence, event_id, occurred_at, producer, meta_request_id,
            actor_type, actor_id, on_behalf_of, action, resource, outcome, grpc_code, reason,
            request_id, trace_id, source_ip, user_agent, records_affected, prev_hash, hash)
         VALUES ($1, 1, 'e1', now(), 'test', '', 1, 'actor', '', 'datasets.get', 'r', 1, 0, '', '',
            '', '', '', 0, '\\x00', '\\x01')",
    ).bind(tenant))
    .await
    .unwrap();
    tx.execute(
        sqlx::query(
            "INSERT INTO checkpoints (tenant, sequence, hash, signed_at, key_id, signature)
         VALUES ($1, 1, '\\x01', now(), 'k', '\\x02')",
        )
        .bind(tenant),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let deletion = Uuid::now_v7();
    let mut tx = tenant_tx(pool_of("deletion"), tenant).await.unwrap();
    tx.execute(sqlx::query(
        "INSERT INTO deletions (id, tenant, scope, target, reason, requested_by, expected_services,
            state, next_check_at, create_time, update_time)
         VALUES ($1, $2, 'tenant', $2, 'test', 'operator', '{ingest}', 'completed', now(), now(), now())",
    ).bind(deletion).bind(tenant))
    .await
    .unwrap();
    tx.execute(sqlx::query(
        "INSERT INTO receipts (deletion_id, service, deleted, residue, residue_found, deks_destroyed, complete_time)
         VALUES ($1, 'ingest', '{}', '{}', false, 0, now())",
    ).bind(deletion))
    .await
    .unwrap();
    tx.execute(
        sqlx::query(
            "INSERT INTO certificates (deletion_id, document, signature, key_id, issue_time)
         VALUES ($1, '\\x00', '\\x00', 'k', now())",
        )
        .bind(deletion),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // `tenants` is the operator's registry, outside the tenant policy.
    let tenancy = pool_of("tenancy");
    sqlx::query("INSERT INTO tenants (id, display_name) VALUES ($1, $1)")
        .bind(tenant)
        .execute(tenancy)
        .await
        .unwrap();
    let mut tx = tenant_tx(tenancy, tenant).await.unwrap();
    tx.execute(sqlx::query(
        "INSERT INTO api_keys (key_id, tenant, display_name, scopes, secret_digest, expire_time)
         VALUES ($1, $2, 'k', '{}', decode(repeat('00', 32), 'hex'), now() + interval '1 day')",
    ).bind(format!("key-{tenant}")).bind(tenant))
    .await
    .unwrap();
    tx.execute(sqlx::query(
        "INSERT INTO support_grants (grant_id, tenant, grantee, reason, scopes, resources, expire_time)
         VALUES ($1, $2, 'operator', 'test', '{}', '{}', now() + interval '1 day')",
    ).bind(Uuid::now_v7()).bind(tenant))
    .await
    .unwrap();
    tx.execute(sqlx::query("INSERT INTO quotas (tenant) VALUES ($1)").bind(tenant))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    deletion
}

/// The owning tenants (`owner`: `<tenant expression> FROM <tables>`) of the rows a transaction of
/// `pool` sees in `scope`.
async fn owners(pool: &PgPool, scope: Scope<'_>, owner: &str) -> Vec<String> {
    let query = format!("SELECT {owner} ORDER BY 1");
    let mut tx = match scope {
        Scope::Tenant(tenant) => tenant_tx(pool, tenant).await.unwrap(),
        Scope::Service => service_tx(pool).await.unwrap(),
        Scope::Unset => pool.begin().await.unwrap(),
    };
    let seen = sqlx::query_scalar(&query)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    seen
}

/// The setting a transaction is opened with.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Tenant(&'a str),
    Service,
    Unset,
}

#[tokio::test]
async fn audit_deletion_and_tenancy_show_tenant_a_no_row_of_tenant_b() {
    let cluster = PgCluster::start().await;
    let admin = admin(&cluster).await;
    let services = services(&cluster, &admin).await;
    let a_deletion = seed_tenant(&services, "tenant-a").await;
    let b_deletion = seed_tenant(&services, "tenant-b").await;
    let pool_of = |name: &str| {
        &services
            .iter()
            .find(|(schema, _, _)| schema.as_str() == name)
            .unwrap()
            .2
    };
    // (schema, the rows' owning tenant: a `tenant` column, or the deletion's tenant).
    let tables = [
        ("audit", "tenant FROM chain_heads"),
        ("audit", "tenant FROM events"),
        ("audit", "tenant FROM checkpoints"),
        ("deletion", "tenant FROM deletions"),
        (
            "deletion",
            "d.tenant FROM receipts r JOIN deletions d ON d.id = r.deletion_id",
        ),
        (
            "deletion",
            "d.tenant FROM certificates c JOIN deletions d ON d.id = c.deletion_id",
        ),
        ("tenancy", "tenant FROM api_keys"),
        ("tenancy", "tenant FROM support_grants"),
        ("tenancy", "tenant FROM quotas"),
    ];
    for (schema, owner) in tables {
        let pool = pool_of(schema);
        assert_eq!(
            owners(pool, Scope::Tenant("tenant-a"), owner).await,
            ["tenant-a"],
            "{schema}: {owner} under tenant A"
        );
        assert_eq!(
            owners(pool, Scope::Tenant("tenant-b"), owner).await,
            ["tenant-b"],
            "{schema}: {owner} under tenant B"
        );
        assert!(
            owners(pool, Scope::Unset, owner).await.is_empty(),
            "{schema}: {owner} without a setting"
        );
        assert_eq!(
            owners(pool, Scope::Service, owner).await,
            ["tenant-a", "tenant-b"],
            "{schema}: {owner} service-wide"
        );
    }
    // The receipt and certificate tables: without a `tenant` column, still no row of B under A,
    // even asked by B's deletion id (the join above could hide it).
    let deletion = pool_of("deletion");
    let mut tx = tenant_tx(deletion, "tenant-a").await.unwrap();
    for table in ["receipts", "certificates"] {
        let ids: Vec<Uuid> = sqlx::query_scalar(&format!("SELECT deletion_id FROM {table}"))
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(ids, [a_deletion], "{table} under tenant A");
    }
    tx.commit().await.unwrap();
    // Writing a receipt for B's deletion under A's setting is refused, and so is an audit event or
    // an API key of B.
    let forged = [
        ("deletion", "INSERT INTO receipts (deletion_id, service, deleted, residue, residue_found, deks_destroyed, complete_time)
            VALUES ('BDEL', 'analysis', '{}', '{}', false, 0, now())"),
        ("audit", "INSERT INTO chain_heads (tenant, sequence, hash) VALUES ('tenant-b', 9, '\\x01')"),
        ("tenancy", "INSERT INTO quotas (tenant) VALUES ('tenant-b') ON CONFLICT (tenant) DO UPDATE SET max_concurrent_jobs = 9"),
    ];
    for (schema, statement) in forged {
        let mut tx = tenant_tx(pool_of(schema), "tenant-a").await.unwrap();
        let statement = statement.replace("BDEL", &b_deletion.to_string());
        let result = sqlx::query(&statement).execute(&mut *tx).await;
        denied(result, &format!("{schema}: {statement} under tenant A"));
        tx.rollback().await.unwrap();
    }
}

#[tokio::test]
async fn two_databases_provision_the_same_roles_at_once_and_services_log_in_as_them() {
    let cluster = PgCluster::start().await;
    let first = admin(&cluster).await;
    let mut conn = sqlx::PgConnection::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    conn.execute("CREATE DATABASE second").await.unwrap();
    conn.close().await.unwrap();
    let second = PgPoolOptions::new()
        .max_connections(2)
        .connect(&cluster.url("second"))
        .await
        .unwrap();
    // Both administrators provision every converted service's role at the same time, as parallel
    // `trustmesh standalone` runs on one server do: the roles are the cluster's, shared.
    for &(schema, _, _) in &CONVERTED {
        let schema = SchemaName::new(schema).unwrap();
        let (first_url, second_url) = (cluster.url(DATABASE), cluster.url("second"));
        let (a, b) = tokio::join!(
            provision_for_admin_url(&first, &first_url, &schema),
            provision_for_admin_url(&second, &second_url, &schema),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let role = RoleName::for_schema(&schema).unwrap();
        assert!(a.starts_with(&format!("postgres://{role}:")), "{a}");
        // One password per server, whichever database derived it.
        assert_eq!(
            a.split_once('@').unwrap().0,
            b.split_once('@').unwrap().0,
            "{schema}: the same credentials from both databases"
        );
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(
                PgConnectOptions::from_str(&b)
                    .unwrap()
                    .options([("search_path", schema.as_str())]),
            )
            .await
            .unwrap();
        let user: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(user, role.as_str());
        assert_eq!(
            current_role_privileges(&pool).await.unwrap(),
            (false, false)
        );
        assert!(
            !may_provision_roles(&pool).await.unwrap(),
            "{role} cannot create roles"
        );
    }
    assert!(may_provision_roles(&first).await.unwrap());
}

/// One webhook endpoint of `tenant` with one delivery, and one deleted dataset's tombstone, written
/// under the tenant's own setting.
async fn seed_notifier(pool: &PgPool, tenant: &str) {
    let endpoint = Uuid::now_v7();
    let mut tx = tenant_tx(pool, tenant).await.unwrap();
    tx.execute(
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, tenant, url, event_types, secret_sealed)
             VALUES ($1, $2, 'https://example.test/hook', '{}', '\\x00')",
        )
        .bind(endpoint)
        .bind(tenant),
    )
    .await
    .unwrap();
    tx.execute(
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, tenant, endpoint, event_id, event_type, payload)
             VALUES ($1, $2, $3, $1, 'job.updated', '{}')",
        )
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(endpoint),
    )
    .await
    .unwrap();
    tx.execute(
        sqlx::query("INSERT INTO deleted_datasets (tenant, dataset) VALUES ($1, 'gone')")
            .bind(tenant),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn notifier_shows_tenant_a_no_endpoint_delivery_or_tombstone_of_tenant_b() {
    let cluster = PgCluster::start().await;
    let admin = admin(&cluster).await;
    let services = services(&cluster, &admin).await;
    let notifier = &services
        .iter()
        .find(|(schema, _, _)| schema.as_str() == "notifier")
        .unwrap()
        .2;
    seed_notifier(notifier, "tenant-a").await;
    seed_notifier(notifier, "tenant-b").await;
    for table in [
        "webhook_endpoints",
        "webhook_deliveries",
        "deleted_datasets",
    ] {
        let owner = format!("tenant FROM {table}");
        assert_eq!(
            owners(notifier, Scope::Tenant("tenant-a"), &owner).await,
            ["tenant-a"],
            "{table} under tenant A"
        );
        assert!(
            owners(notifier, Scope::Unset, &owner).await.is_empty(),
            "{table} without a setting"
        );
        assert_eq!(
            owners(notifier, Scope::Service, &owner).await,
            ["tenant-a", "tenant-b"],
            "{table} service-wide (the dispatcher)"
        );
    }
    // The dispatcher's lease of every tenant's due deliveries needs the service-wide escape: under
    // tenant A's setting it leases only A's.
    let mut tx = tenant_tx(notifier, "tenant-a").await.unwrap();
    let leased: Vec<String> =
        sqlx::query_scalar("UPDATE webhook_deliveries SET lease_until = now() RETURNING tenant")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    assert_eq!(leased, ["tenant-a"]);
    // Tombstoning a dataset of B under A's setting is refused.
    denied(
        sqlx::query("INSERT INTO deleted_datasets (tenant, dataset) VALUES ('tenant-b', 'x')")
            .execute(&mut *tx)
            .await,
        "a tombstone of tenant B under tenant A",
    );
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn store_objects_and_deks_show_tenant_a_no_row_of_tenant_b() {
    let cluster = PgCluster::start().await;
    let admin = admin(&cluster).await;
    let schema = SchemaName::new("store_only").unwrap();
    let role = RoleName::for_schema(&schema).unwrap();
    provision_service_role(&admin, &schema, &role, &format!("pw-{role}"))
        .await
        .unwrap();
    let pool = connect_as(&cluster, &role, &schema).await;
    STORE.run(&pool).await.unwrap();
    let sql: String = STORE
        .iter()
        .map(|m| m.sql.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    for table in ["objects", "deks"] {
        let (enabled, forced): (bool, bool) = sqlx::query_as(
            "SELECT c.relrowsecurity, c.relforcerowsecurity FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
        )
        .bind(schema.as_str())
        .bind(table)
        .fetch_one(&admin)
        .await
        .unwrap();
        assert!(enabled && forced, "{table}: row-level security forced");
        assert!(
            sql.contains(&tenant_policy_sql(table)),
            "the store migration of {table} should be tenant_policy_sql({table:?})"
        );
    }
    for tenant in ["tenant-a", "tenant-b"] {
        let mut tx = tenant_tx(&pool, tenant).await.unwrap();
        tx.execute(
            sqlx::query(
                "INSERT INTO objects (tenant, object, version, size, sealed_size, name_sealed)
                 VALUES ($1, 'o', 1, 1, 1, '\\x00')",
            )
            .bind(tenant),
        )
        .await
        .unwrap();
        tx.execute(
            sqlx::query(
                "INSERT INTO deks (service, tenant, version, kek_version, wrapped)
                 VALUES ('store', $1, 1, 1, '\\x00')",
            )
            .bind(tenant),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    for table in ["objects", "deks"] {
        let owner = format!("tenant FROM {table}");
        assert_eq!(
            owners(&pool, Scope::Tenant("tenant-a"), &owner).await,
            ["tenant-a"],
            "{table} under tenant A"
        );
        assert!(
            owners(&pool, Scope::Unset, &owner).await.is_empty(),
            "{table} without a setting"
        );
        assert_eq!(
            owners(&pool, Scope::Service, &owner).await,
            ["tenant-a", "tenant-b"],
            "{table} service-wide (the KEK rotation)"
        );
    }
    // Shredding B's keys under A's setting destroys nothing; writing a key of B is refused.
    let mut tx = tenant_tx(&pool, "tenant-a").await.unwrap();
    let shredded = sqlx::query(
        "UPDATE deks SET wrapped = NULL, destroyed_at = now() WHERE tenant = 'tenant-b'",
    )
    .execute(&mut *tx)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(shredded, 0);
    denied(
        sqlx::query(
            "INSERT INTO deks (service, tenant, version, kek_version, wrapped)
             VALUES ('store', 'tenant-b', 2, 1, '\\x00')",
        )
        .execute(&mut *tx)
        .await,
        "a DEK of tenant B under tenant A",
    );
    tx.rollback().await.unwrap();
}
