//! `graphile-worker run --metrics-bind`: /healthz, /metrics, and /readyz
//! turning 503 while PostgreSQL cannot be reached and 200 when it is back.

mod support;

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use graphile_worker::JobSpec;
use graphile_worker_dev::proxy::Proxy;
use serde_json::json;
use support::{BIN, database, job_count};

/// GET `path`: the status code and the body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Polls `path` until `accept` takes the answer, for at most 30 s.
async fn until(port: u16, path: &str, what: &str, accept: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let path_owned = path.to_owned();
        let answer = tokio::task::spawn_blocking(move || get(port, &path_owned))
            .await
            .unwrap();
        if let Some((status, body)) = &answer
            && accept(*status, body)
        {
            return body.clone();
        }
        assert!(Instant::now() < deadline, "{what}: last answer {answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_readiness_follow_the_database() {
    let (db, utils) = database(true).await;
    let proxy = Proxy::start(&db.url).await;
    let dir = std::env::temp_dir().join(format!("gw-cli-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let task = dir.join("noop");
    std::fs::write(&task, "#!/bin/sh\ncat > /dev/null\n").unwrap();
    std::fs::set_permissions(&task, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let _child = Killed(
        Command::new(BIN)
            .env("DATABASE_URL", proxy.url())
            .env("RUST_LOG", "error")
            .args(["run", "--tasks", &dir.to_string_lossy()])
            .args(["--metrics-bind", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    until(port, "/readyz", "ready after start", |s, _| s == 200).await;
    assert_eq!(
        tokio::task::spawn_blocking(move || get(port, "/healthz"))
            .await
            .unwrap(),
        Some((200, "ok\n".to_owned()))
    );

    utils
        .add_raw_job("noop", json!({}), JobSpec::default())
        .await
        .unwrap();
    let metrics = until(port, "/metrics", "the job in the metrics", |s, body| {
        s == 200
            && body.contains("graphile_worker_jobs_completed_total{task=\"noop\",queue=\"\"} 1")
    })
    .await;
    assert!(
        metrics.contains("graphile_worker_jobs_started_total{task=\"noop\",queue=\"\"} 1"),
        "{metrics}"
    );
    assert_eq!(job_count(&utils).await, 0);

    proxy.refuse(true);
    proxy.cut();
    let why = until(
        port,
        "/readyz",
        "not ready while the database is cut off",
        |s, _| s == 503,
    )
    .await;
    assert!(why.starts_with("not ready: the database"), "{why}");
    assert_eq!(
        tokio::task::spawn_blocking(move || get(port, "/healthz"))
            .await
            .unwrap()
            .map(|(s, _)| s),
        Some(200)
    );

    proxy.refuse(false);
    until(
        port,
        "/readyz",
        "ready again once the database is back",
        |s, _| s == 200,
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
