//! How fast the admin UI's pages answer on a big jobs table.
//!
//! ```sh
//! cargo run --release --example admin_ui_big_table            # 1,000,000 jobs
//! cargo run --release --example admin_ui_big_table -- 100000  # another size
//! ```
//!
//! Fills a fresh database (no configuration needed, as for the tests) with
//! that many jobs: 97% ready in 20 tasks and 10 named queues, 2%
//! permanently failed with an error, 1% scheduled; then serves the UI and
//! times each page (the median of 5 requests, after one warm-up). The
//! the guide's operating chapter (docs/src/operating.md) quotes a run.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use graphile_worker::testing::TestDb;
use graphile_worker::{JobSpec, NewJob};
use graphile_worker_ui::AdminUi;
use serde_json::json;

const BATCH: usize = 10_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let jobs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let db = TestDb::new().await;
    let utils = db.utils();

    let filling = Instant::now();
    let mut added = 0;
    while added < jobs {
        let n = BATCH.min(jobs - added);
        let batch: Vec<NewJob> = (added..added + n)
            .map(|i| NewJob {
                identifier: format!("task_{}", i % 20),
                payload: json!({"n": i}),
                spec: JobSpec {
                    queue_name: (i % 3 == 0).then(|| format!("queue_{}", i % 10)),
                    run_at: (i % 100 == 0).then(|| chrono::Utc::now() + chrono::Duration::hours(1)),
                    ..JobSpec::default()
                },
            })
            .collect();
        utils
            .add_raw_jobs_count_in(db.pool(), &batch)
            .await
            .expect("add jobs");
        added += n;
    }
    // 2% failed for good, with an error to search for.
    sqlx::query(
        "update graphile_worker._private_jobs set attempts = max_attempts, \
         last_error = 'upstream said 503 for ' || id where id % 50 = 7",
    )
    .execute(db.pool())
    .await
    .expect("fail some");
    sqlx::query("analyze graphile_worker._private_jobs")
        .execute(db.pool())
        .await
        .expect("analyze");
    println!(
        "{jobs} jobs added in {:.1} s",
        filling.elapsed().as_secs_f64()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let router = AdminUi::new(utils.clone()).router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    println!("| page | median of 5 |");
    println!("|---|---|");
    for path in [
        "/",
        "/jobs",
        "/jobs?state=failed",
        "/jobs?state=scheduled",
        "/jobs?task=task_7",
        "/jobs?queue=queue_3",
        "/jobs?error=503%20for%2012",
        "/jobs?page=1000",
        "/jobs/12345",
        "/queues",
        "/workers",
        "/cron",
    ] {
        let address = address.clone();
        let times = tokio::task::spawn_blocking(move || {
            get(&address, path);
            let mut times: Vec<Duration> = (0..5)
                .map(|_| {
                    let start = Instant::now();
                    get(&address, path);
                    start.elapsed()
                })
                .collect();
            times.sort();
            times
        })
        .await
        .expect("join");
        println!("| `{path}` | {:.0} ms |", times[2].as_secs_f64() * 1000.0);
    }
}

/// One GET; panics unless it is a 200.
fn get(address: &str, path: &str) {
    let mut stream = TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "{path}: {}",
        response.lines().next().unwrap_or("")
    );
}
