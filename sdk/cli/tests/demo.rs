//! `trustmesh demo` end to end: the built binary starts the standalone mesh (with its own
//! nats-server child) on a fresh database, walks through the main flow, and stops.

use std::process::Command;

use trustmesh_testkit::nats::nats_server_bin;
use trustmesh_testkit::postgres::TestDatabase;

#[tokio::test]
async fn the_demo_walks_through_the_whole_flow_and_stops_what_it_started() {
    let db = TestDatabase::create().await;
    let out = tokio::task::spawn_blocking({
        let url = db.url().to_owned();
        move || {
            Command::new(env!("CARGO_BIN_EXE_trustmesh"))
                .args(["demo", "--skip-setup"])
                .env("TRUSTMESH_DATABASE_URL", url)
                .env("TRUSTMESH_NATS_SERVER_BIN", nats_server_bin())
                .output()
                .expect("the binary runs")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "1. Operator created tenant `demo-",
        "2. Uploaded examples/wine-noisy.csv as tenants/demo-",
        "178 rows, 15 columns",
        "[100%] Succeeded",
        "178 rows analysed",
        "model: ensemble (5-fold out-of-sample)",
        "logistic_regression",
        "gradient_boosted_trees",
        "knn",
        "rows with a likely label error",
        "signature VERIFIED",
        "Hash chain: VALID",
        "Stopped the mesh and its nats-server.",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in\n{stdout}");
    }
    // 17 of the 178 labels were flipped: the report finds a good share of them and lists 10.
    let listed = stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("row_id"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .count();
    assert_eq!(listed, 10, "{stdout}");
    // Every access to the data is in the audit log, with the deletion.
    for action in [
        "datasets.upload",
        "datasets.rows.read",
        "deletion.datasets.delete",
    ] {
        assert!(stdout.contains(action), "no {action} in\n{stdout}");
    }
}
