//! The admin UI in a real browser (Debian's chromium, driven by npm's
//! playwright-core from `tests/browser/admin_ui.js`): every page loads, a
//! permanently failed job is retried by clicking, a destructive action asks
//! first, a script in a payload runs nothing, read-only mode shows no
//! buttons and refuses POSTs. The screenshots in README and the guide come from here:
//! run with `GW_UPDATE_SCREENSHOTS=1` to refresh `docs/src/images/`.

use std::path::PathBuf;
use std::time::Duration;

use graphile_worker::testing::TestDb;
use graphile_worker::{JobSpec, WorkerUtils};
use graphile_worker_dev::node;
use graphile_worker_ui::AdminUi;
use serde_json::{Value, json};

/// Serves `router` on a free loopback port; returns its URL.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{address}")
}

async fn add(utils: &WorkerUtils, task: &str, payload: Value, spec: JobSpec) -> i64 {
    utils.add_raw_job(task, payload, spec).await.unwrap().id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_ui_in_chromium() {
    let db = TestDb::new().await;
    let utils = db.utils();
    let queue = |name: &str| JobSpec {
        queue_name: Some(name.into()),
        ..JobSpec::default()
    };
    // Something to look at: ready, scheduled, retrying and failed jobs in
    // a few tasks and queues.
    for n in 0..6 {
        add(
            utils,
            "send_email",
            json!({"to": format!("user{n}@example.com")}),
            queue("mail"),
        )
        .await;
    }
    for n in 0..3 {
        let later = JobSpec {
            run_at: Some(chrono::Utc::now() + chrono::Duration::minutes(10 + n)),
            ..JobSpec::default()
        };
        add(utils, "nightly_report", json!({"day": n}), later).await;
    }
    let failed = add(
        utils,
        "resize_image",
        json!({"image": 7}),
        JobSpec::default(),
    )
    .await;
    utils
        .permanently_fail_jobs(&[failed], Some("image 7 not found in the bucket"))
        .await
        .unwrap();
    let xss = add(
        utils,
        "send_email",
        json!({"to": "<script>alert(1)</script>"}),
        JobSpec::default(),
    )
    .await;
    utils
        .permanently_fail_jobs(&[xss], Some("<script>alert(1)</script>"))
        .await
        .unwrap();
    let doomed = add(utils, "cleanup", json!({}), JobSpec::default()).await;
    utils.pause_queue("exports").await.unwrap();

    let ui = serve(
        AdminUi::new(utils.clone())
            .sample_interval(Duration::from_millis(200))
            .router(),
    )
    .await;
    let read_only = serve(AdminUi::new(utils.clone()).read_only(true).router()).await;
    let shots = std::env::var_os("GW_UPDATE_SCREENSHOTS")
        .map(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/src/images"))
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("gw-ui-shots-{}", std::process::id()))
        });
    std::fs::create_dir_all(&shots).unwrap();

    let script = include_str!("browser/admin_ui.js");
    let mut command =
        tokio::process::Command::from(node::js_command(db.url(), db.schema(), script));
    command
        .env("UI_URL", &ui)
        .env("UI_RO_URL", &read_only)
        .env("SHOT_DIR", &shots)
        .env("FAILED_ID", failed.to_string())
        .env("XSS_ID", xss.to_string())
        .env("DELETE_ID", doomed.to_string());
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the browser script finishes within 2 minutes")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser checks failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(seen["alerts"], 0, "{seen}");
    assert_eq!(seen["retryNotice"], "Retried 1 job.");
    assert_eq!(seen["deleteNotice"], format!("Deleted job {doomed}."));
    assert_eq!(seen["readOnlyButtons"], 0);
    assert_eq!(seen["readOnlyPost"], 403);
    assert!(seen["narrowRows"].as_u64().unwrap_or(0) >= 10, "{seen}");

    // What the clicks did, read from the database.
    let retried = utils.get_job(failed).await.unwrap().unwrap();
    assert_eq!(retried.job.attempts, 0);
    assert_eq!(retried.state, graphile_worker::JobState::Ready);
    assert!(utils.get_job(doomed).await.unwrap().is_none());
    // Read-only refused the retry of everything: the XSS job is still failed.
    let still_failed = utils.get_job(xss).await.unwrap().unwrap();
    assert_eq!(still_failed.state, graphile_worker::JobState::Failed);
    for name in ["dashboard.png", "jobs.png"] {
        let size = std::fs::metadata(shots.join(name))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size > 10_000, "{name} is a screenshot ({size} bytes)");
    }
}
