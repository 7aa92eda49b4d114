//! Every example named in README runs to completion and prints what it is
//! there to show. `cargo test` builds the examples; this runs the built
//! programs (each starts its own throwaway PostgreSQL unless
//! `DATABASE_URL` is set).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The built example `name`, beside this test's own binary.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("this test's path");
    let debug = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = debug.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built; `cargo test` builds the examples (or run `cargo build --examples`)",
        path.display()
    );
    path
}

/// Runs example `name` (at most `limit`), asserts it succeeded, and returns
/// its standard output.
fn run(name: &str, limit: Duration) -> String {
    let mut child = Command::new(example(name))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{name} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed ({})\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[track_caller]
fn assert_says(name: &str, stdout: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            stdout.contains(line),
            "{name} did not print {line:?}:\n{stdout}"
        );
    }
}

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn quickstart() {
    let out = run("quickstart", LIMIT);
    assert_says(
        "quickstart",
        &out,
        &[
            "welcome_user: user 1 signed up",
            "Every other job completed",
        ],
    );
}

#[test]
fn web_service() {
    let out = run("web_service", LIMIT);
    assert_says(
        "web_service",
        &out,
        &[
            "201 Created: user 1 created",
            "409 Conflict: ada@example.com is already signed up",
            "400 Bad Request",
            "The worker sent the welcome email to ada@example.com",
            "Jobs left: 0.",
            "The worker and the server stopped.",
        ],
    );
}

#[test]
fn worker_binary() {
    let out = run("worker_binary", LIMIT);
    assert_says(
        "worker_binary",
        &out,
        &["upload 1 done", "2 uploads wait, untouched"],
    );
}

#[test]
fn cron_time_zones() {
    // Waits for the next minute boundary.
    let out = run("cron_time_zones", Duration::from_secs(180));
    assert_says(
        "cron_time_zones",
        &out,
        &[
            "tick_kolkata (Asia/Kolkata)",
            "nightly_new_york (America/New_York)",
            "morning_report (Europe/Paris)",
            "tick in Asia/Kolkata",
        ],
    );
}

#[test]
fn node_interop() {
    let out = run("node_interop", Duration::from_secs(300));
    assert_says(
        "node_interop",
        &out,
        &[
            "node: sending invoice 42",
            "rust: shipping order 7 for ada@example.com",
            "Jobs left: 0.",
        ],
    );
}

#[test]
fn cli_executable_tasks() {
    let out = run("cli_executable_tasks", LIMIT);
    assert_says(
        "cli_executable_tasks",
        &out,
        &[
            "$ graphile-worker run --once --tasks",
            "job 2 will be retried; its error: task executable",
            "resize_image: missing.png does not exist",
        ],
    );
}

#[test]
fn metrics_endpoint() {
    let out = run("metrics_endpoint", LIMIT);
    assert_says(
        "metrics_endpoint",
        &out,
        &[
            "graphile_worker_jobs_completed_total{",
            "graphile_worker_jobs_failed_total{",
        ],
    );
}

#[test]
fn every_example_readme_lists_is_run_here() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let this = std::fs::read_to_string(root.join("tests/examples_run.rs")).expect("this file");
    let listed: Vec<&str> = readme
        .split("`examples/")
        .skip(1)
        .filter_map(|rest| rest.split_once(".rs`").map(|(name, _)| name))
        .filter(|name| !name.contains('/'))
        .collect();
    assert!(listed.len() >= 7, "README lists {listed:?}");
    for name in listed {
        assert!(
            this.contains(&format!("fn {name}()")),
            "README lists examples/{name}.rs, which no test here runs"
        );
    }
}
