//! A crash mid-job: the `trustmesh standalone` process is killed (SIGKILL) while an analysis runs,
//! then started again on the same data directory, database and NATS. The job still completes, and
//! exactly once: one report, one `analysis.completed`, one `scores.ready`.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt as _;
use trustmesh_proto::v1::{
    JobState, ListReportsRequest, Scope, StartAnalysisRequest, TaskType, WatchJobRequest,
};
use trustmesh_runtime::SecretString;
use trustmesh_sdk::{Client, once_known};
use trustmesh_testkit::data::synthetic_csv;
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;

const OPERATOR: &str = "restart-test-operator-credential-0123456789";

/// A running `trustmesh standalone`, killed on drop.
struct Process {
    child: Child,
    endpoint: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `trustmesh standalone` and waits for the line naming its gRPC address.
async fn spawn(data_dir: &Path, db: &TestDatabase, nats: &NatsServer) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trustmesh"))
        .args([
            "standalone",
            "--grpc-bind",
            "127.0.0.1:0",
            "--admin-bind",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--database-url", db.url(), "--nats-url", &nats.url()])
        .env("TRUSTMESH_OPERATOR_CREDENTIAL", OPERATOR)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    // Read the first line, and drain the rest so the process never writes to a closed pipe.
    let stdout = child.stdout.take().unwrap();
    let (first_line, line) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = first_line.send(lines.next().and_then(Result::ok).unwrap_or_default());
        lines.for_each(drop);
    });
    let line = line.await.unwrap();
    let grpc = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("grpc="))
        .unwrap_or_else(|| panic!("no grpc= in {line:?}"));
    Process {
        child,
        endpoint: format!("http://{grpc}"),
    }
}

/// How many messages of every stream have subject `subject`.
async fn messages_on(nats: &NatsServer, subject: &str) -> usize {
    let js = nats.jetstream().await;
    let mut names = js.stream_names();
    let mut count = 0;
    while let Some(name) = names.next().await {
        let mut stream = js.get_stream(name.unwrap()).await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        for seq in 1..=last {
            if let Ok(message) = stream.get_raw_message(seq).await {
                count += usize::from(message.subject.as_str() == subject);
            }
        }
    }
    count
}

#[tokio::test]
async fn a_job_survives_a_killed_mesh_and_completes_exactly_once() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    let first = spawn(data_dir.path(), &db, &nats).await;

    let operator = Client::connect(&first.endpoint, &SecretString::from(OPERATOR))
        .await
        .unwrap();
    let (_, user) = operator
        .create_tenant_with_key("acme", "acme", &[Scope::Admin], Duration::from_secs(3600))
        .await
        .unwrap();
    let dataset = once_known(|| user.upload_csv("synthetic", synthetic_csv(6000, 8, 0), "row_id"))
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

    // Kill the process as soon as the job runs.
    let mut updates = user
        .analysis()
        .watch_job(WatchJobRequest {
            name: job.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let running = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(update) = updates.message().await.unwrap() {
            if update.state() != JobState::Queued {
                return update;
            }
        }
        panic!("the watch ended before the job ran")
    })
    .await
    .expect("the job starts");
    assert_eq!(running.state(), JobState::Running, "{running:?}");
    drop(first);

    // Start again on the same directory, database and NATS: the job completes.
    let second = spawn(data_dir.path(), &db, &nats).await;
    let user = user.reconnect(&second.endpoint).await.unwrap();
    let done = tokio::time::timeout(
        Duration::from_secs(600),
        once_known(|| async {
            user.wait_job(&job.name, |_| {})
                .await
                .map_err(|e| tonic::Status::unknown(e.to_string()))
        }),
    )
    .await
    .expect("the job completes after the restart")
    .unwrap();
    assert_eq!(done.state(), JobState::Succeeded, "{done:?}");

    // Exactly once: one report, one completion, one scores.ready.
    let reports = user
        .trust()
        .list_reports(ListReportsRequest {
            parent: "tenants/acme".to_owned(),
            ..ListReportsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reports.reports.len(), 1, "{reports:?}");
    assert_eq!(reports.reports[0].name, done.output);
    assert_eq!(messages_on(&nats, "tm.acme.analysis.completed").await, 1);
    assert_eq!(messages_on(&nats, "tm.acme.scores.ready").await, 1);
}
