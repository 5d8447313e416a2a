//! The `trustmesh` binary end to end against a standalone mesh: every remote command a user
//! runs (login, datasets, analyze, jobs, report, rows, export, keys, webhooks, audit, delete,
//! certificate, tenants), its `--json` output parsed, its exit codes, and the API key never
//! printed.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::mesh::Mesh;
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use trustmesh_proto::v1::{ListDatasetsRequest, Scope};
use trustmesh_runtime::ExposeSecret as _;
use trustmesh_sdk::once_known;

const WINE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/wine-noisy.csv");

/// What one run of the binary did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The JSON the run printed (its last line, for commands that stream updates).
    fn json(&self) -> Value {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        let last = self.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs the CLI.
struct Cli<'a> {
    config: &'a Path,
    endpoint: String,
    secret: String,
}

impl Cli<'_> {
    async fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_trustmesh"));
        command
            .args(args)
            .env("TRUSTMESH_CONFIG", self.config)
            .env_remove("TRUSTMESH_API_KEY")
            .env_remove("TRUSTMESH_ENDPOINT")
            .env_remove("TRUSTMESH_TENANT")
            .env_remove("TRUSTMESH_PROFILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the binary starts");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await.unwrap();
        }
        drop(input);
        let output = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
            .await
            .expect("the command ends")
            .unwrap();
        let run = Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        assert!(
            !run.stdout.contains(&self.secret) && !run.stderr.contains(&self.secret),
            "the API key was printed by {args:?}"
        );
        run
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[], None).await
    }
}

#[tokio::test]
async fn every_cli_command_against_a_standalone_mesh() {
    let mesh = Mesh::start().await;
    let mesh_operator = mesh.operator_credential.clone();
    let (endpoint, operator) = (mesh.endpoint.clone(), &mesh.operator);

    // The operator makes the tenant and a key; the key is known everywhere once it can list.
    let tenant = "acme";
    operator.create_tenant(tenant, "Acme").await.unwrap();
    let (key, secret) = operator
        .clone()
        .with_tenant(tenant)
        .create_api_key("cli", &[Scope::Admin], Duration::from_secs(3600))
        .await
        .unwrap();
    let user = operator.as_credential(&secret).unwrap().with_tenant(tenant);
    once_known(|| async {
        user.datasets()
            .list_datasets(ListDatasetsRequest {
                parent: format!("tenants/{tenant}"),
                ..ListDatasetsRequest::default()
            })
            .await
    })
    .await
    .unwrap();

    let files = tempfile::tempdir().unwrap();
    let config = files.path().join("conf/config.toml");
    let cli = Cli {
        config: &config,
        endpoint: endpoint.clone(),
        secret: secret.expose_secret().to_owned(),
    };

    // Without a profile: a usage error.
    let run = cli.run(&["datasets", "list"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("trustmesh login"), "{}", run.stderr);

    // login: the key from stdin, into an owner-only file.
    let run = cli
        .run_with(
            &[
                "login",
                "--endpoint",
                &cli.endpoint,
                "--tenant",
                tenant,
                "--json",
            ],
            &[],
            Some(&format!("{}\n", cli.secret)),
        )
        .await;
    assert_eq!(run.json()["tenant"], tenant);
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&config).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains(&cli.secret)
    );
    // A wrong key from the environment overrides the profile: an auth error.
    let run = cli
        .run_with(
            &["datasets", "list"],
            &[(
                "TRUSTMESH_API_KEY",
                "tmk_AAAAAAAAAAAAAAAAAAAAAA_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            )],
            None,
        )
        .await;
    assert_eq!(run.code, 3, "{}", run.stderr);

    // datasets upload | list | get
    let run = cli
        .run(&[
            "datasets",
            "upload",
            WINE,
            "--name",
            "wine",
            "--id-column",
            "row_id",
            "--json",
        ])
        .await;
    let dataset = run.json();
    let dataset_name = dataset["name"].as_str().unwrap().to_owned();
    assert_eq!(dataset["row_count"], 178);
    assert_eq!(dataset["state"], "READY");
    let listed = cli.run(&["datasets", "list", "--json"]).await.json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == dataset_name)
    );
    let got = cli
        .run(&["datasets", "get", &dataset_name, "--json"])
        .await
        .json();
    assert!(
        got["columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "label")
    );
    let table = cli.run(&["datasets", "list"]).await;
    assert!(table.stdout.contains(&dataset_name) && table.stdout.contains("READY"));
    let id = dataset_name.rsplit('/').next().unwrap();
    let run = cli
        .run(&["datasets", "get", "0190b1c2-0000-7000-8000-000000000000"])
        .await;
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert_eq!(
        cli.run(&["datasets", "get", id, "--json"]).await.json()["name"],
        dataset_name
    );

    // analyze --wait: one JSON line per update, the last SUCCEEDED with the report.
    let run = cli
        .run(&[
            "analyze",
            &dataset_name,
            "--label",
            "label",
            "--wait",
            "--json",
        ])
        .await;
    let job = run.json();
    assert_eq!(job["state"], "SUCCEEDED", "{}", run.stdout);
    assert!(run.stdout.lines().count() >= 2, "{}", run.stdout);
    let job_name = job["name"].as_str().unwrap().to_owned();
    let report_name = job["output"].as_str().unwrap().to_owned();

    // jobs list | get | watch | cancel
    let jobs = cli.run(&["jobs", "list", "--json"]).await.json();
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["name"] == job_name)
    );
    let got = cli.run(&["jobs", "get", &job_name, "--json"]).await.json();
    assert_eq!(got["output"], report_name.as_str());
    let watched = cli
        .run(&["jobs", "watch", &job_name, "--json"])
        .await
        .json();
    assert_eq!(watched["state"], "SUCCEEDED");
    let run = cli.run(&["jobs", "cancel", &job_name]).await;
    assert_eq!(
        run.code, 2,
        "a finished job cannot be cancelled: {}",
        run.stderr
    );
    assert!(run.stderr.contains("FAILED_PRECONDITION"), "{}", run.stderr);
    let started = cli
        .run(&["analyze", &dataset_name, "--label", "label", "--json"])
        .await
        .json();
    let second = started["name"].as_str().unwrap().to_owned();
    let run = cli.run(&["jobs", "cancel", &second, "--json"]).await;
    match run.code {
        0 => assert_eq!(run.json()["state"], "CANCELLED"),
        // It finished first (a small dataset on a fast machine).
        2 => assert!(run.stderr.contains("already finished"), "{}", run.stderr),
        other => panic!("cancel exited {other}: {}", run.stderr),
    }

    // report (by report, and by dataset: its latest report) and rows
    let report = cli.run(&["report", &report_name, "--json"]).await.json();
    assert_eq!(report["row_count"], 178);
    assert!(
        report["issues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["issue"] == "label")
    );
    let by_dataset = cli.run(&["report", &dataset_name, "--json"]).await.json();
    assert_eq!(by_dataset["dataset"], dataset_name.as_str());
    let text = cli.run(&["report", &report_name]).await;
    assert!(text.stdout.contains("health score") && text.stdout.contains("label"));
    let rows = cli
        .run(&[
            "rows",
            &report_name,
            "--issue",
            "label",
            "--limit",
            "5",
            "--json",
        ])
        .await
        .json();
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty() && rows.len() <= 5, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r["issues"].as_array().unwrap().iter().any(|i| i == "label"))
    );
    let run = cli
        .run(&["rows", &report_name, "--issue", "nonsense"])
        .await;
    assert_eq!(run.code, 2, "{}", run.stderr);

    // export: the cleanset, or a clear refusal while the server cannot export yet.
    let out = files.path().join("clean.csv");
    let out_arg = out.to_str().unwrap();
    let run = cli
        .run(&[
            "export",
            &report_name,
            "--out",
            out_arg,
            "--apply-corrections",
            "--json",
        ])
        .await;
    if run.code == 0 {
        assert!(run.json()["bytes"].as_u64().unwrap() > 0);
        assert!(std::fs::read_to_string(&out).unwrap().lines().count() > 1);
    } else {
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains("cannot export"), "{}", run.stderr);
        assert!(!out.exists());
    }

    // keys create | list | revoke
    let created = cli
        .run(&[
            "keys",
            "create",
            "--name",
            "ci",
            "--scope",
            "datasets:read",
            "--days",
            "1",
            "--json",
        ])
        .await
        .json();
    assert!(created["secret"].as_str().unwrap().starts_with("tmk_"));
    assert_eq!(created["scopes"][0], "datasets:read");
    let created_name = created["name"].as_str().unwrap().to_owned();
    let keys = cli.run(&["keys", "list", "--json"]).await.json();
    let names: Vec<_> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].clone())
        .collect();
    assert!(
        names.contains(&Value::from(created_name.clone()))
            && names.contains(&Value::from(key.name.clone()))
    );
    assert!(!keys.to_string().contains(&cli.secret));
    let revoked = cli
        .run(&["keys", "revoke", &created_name, "--json"])
        .await
        .json();
    assert_ne!(revoked["revoke_time"], "");
    let run = cli
        .run(&["keys", "create", "--name", "x", "--scope", "root"])
        .await;
    assert_eq!(run.code, 2, "{}", run.stderr);

    // webhooks add | list | remove (or a clear refusal while the notifier cannot yet).
    let run = cli
        .run(&[
            "webhooks",
            "add",
            "https://hooks.example.com/trustmesh",
            "--event",
            "job-succeeded",
            "--json",
        ])
        .await;
    if run.code == 0 {
        let hook = run.json();
        assert_eq!(hook["url"], "https://hooks.example.com/trustmesh");
        let hook_name = hook["name"].as_str().unwrap().to_owned();
        let hooks = cli.run(&["webhooks", "list", "--json"]).await.json();
        assert!(
            hooks
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["name"] == hook_name.as_str())
        );
        let removed = cli
            .run(&["webhooks", "remove", &hook_name, "--json"])
            .await
            .json();
        assert_eq!(removed["removed"], true);
    } else {
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains("FAILED_PRECONDITION"), "{}", run.stderr);
        let run = cli.run(&["webhooks", "list", "--json"]).await;
        assert_eq!(run.code, 2, "{}", run.stderr);
        let run = cli.run(&["webhooks", "remove", "w1"]).await;
        assert!([2, 4].contains(&run.code), "{}", run.stderr);
    }

    // audit list | verify | export, and the export verified offline.
    let events = cli
        .run(&["audit", "list", "--limit", "5", "--json"])
        .await
        .json();
    assert_eq!(events.as_array().unwrap().len(), 5);
    let verified = cli.run(&["audit", "verify", "--json"]).await.json();
    assert_eq!(verified["valid"], true);
    let log = files.path().join("audit.jsonl");
    let log_arg = log.to_str().unwrap();
    let exported = cli
        .run(&["audit", "export", "--out", log_arg, "--json"])
        .await
        .json();
    assert!(exported["bytes"].as_u64().unwrap() > 0);
    let mut offline = vec!["audit", "verify", log_arg];
    let audit_keys: Vec<String> = verified["verification_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["public_key_hex"].as_str().unwrap().to_owned())
        .collect();
    for audit_key in &audit_keys {
        offline.extend(["--key", audit_key.as_str()]);
    }
    if !audit_keys.is_empty() {
        let run = cli.run(&offline).await;
        assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
        assert!(run.stdout.starts_with("valid"), "{}", run.stdout);
    }

    // delete dataset --wait, then its certificate: get, verify online and offline.
    let deletion = cli
        .run(&["delete", "dataset", &dataset_name, "--wait", "--json"])
        .await
        .json();
    assert_eq!(deletion["state"], "COMPLETED");
    let deletion_name = deletion["name"].as_str().unwrap().to_owned();
    let document = files.path().join("certificate.json");
    let document_arg = document.to_str().unwrap();
    let got = cli
        .run(&[
            "certificate",
            "get",
            &deletion_name,
            "--out",
            document_arg,
            "--json",
        ])
        .await
        .json();
    assert!(got["certificate"].as_str().unwrap().contains(&dataset_name));
    let online = cli
        .run(&["certificate", "verify", &deletion_name, "--json"])
        .await
        .json();
    assert_eq!(online["valid"], true);
    let signing_key = user
        .certificate_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| got["key_id"] == k.key_id.as_str())
        .unwrap();
    let signature = format!("{document_arg}.sig");
    let key_hex = hex::encode(&signing_key.public_key);
    let run = cli
        .run(&[
            "certificate",
            "verify",
            document_arg,
            "--signature",
            &signature,
            "--key",
            &key_hex,
        ])
        .await;
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    let run = cli.run(&["datasets", "get", &dataset_name]).await;
    assert_eq!(run.code, 4, "{}", run.stderr);

    // delete tenant: refused without --confirm; then everything goes.
    let run = cli.run(&["delete", "tenant"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    let deletion = cli
        .run(&["delete", "tenant", "--confirm", "--wait", "--json"])
        .await
        .json();
    assert_eq!(deletion["keys_destroyed"], true, "{deletion}");
    assert_eq!(deletion["target"], format!("tenants/{tenant}"));
    let run = cli.run(&["datasets", "list"]).await;
    assert_eq!(run.code, 3, "the tenant's key is gone: {}", run.stderr);
    // The operator fetches and verifies the tenant's certificate (certificates outlive it).
    let tenant_deletion = deletion["output"].as_str().unwrap().to_owned();
    let operator_key = mesh_operator.expose_secret().to_owned();
    let as_operator = [("TRUSTMESH_API_KEY", operator_key.as_str())];
    let mut verified = None;
    for _ in 0..600 {
        let run = cli
            .run_with(
                &["certificate", "verify", &tenant_deletion, "--json"],
                &as_operator,
                None,
            )
            .await;
        if run.code == 0 {
            verified = Some(run.json());
            break;
        }
        assert_eq!(
            run.code, 2,
            "only FAILED_PRECONDITION while in progress: {}",
            run.stderr
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(verified.expect("a certificate within 120 s")["valid"], true);

    // The operator creates a tenant from the command line.
    let created = cli
        .run_with(
            &["tenants", "create", "beta", "--name", "Beta", "--json"],
            &as_operator,
            None,
        )
        .await
        .json();
    assert_eq!(created["name"], "tenants/beta");

    // Nothing listens here: a transport error.
    let run = cli
        .run(&["datasets", "list", "--endpoint", "http://127.0.0.1:1"])
        .await;
    assert_eq!(run.code, 5, "{}", run.stderr);
    // --help documents the exit codes.
    let help = cli.run(&["--help"]).await;
    assert!(help.stdout.contains("Exit codes") && help.stdout.contains("not found"));
}
