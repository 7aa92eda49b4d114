//! Worker processes of their own: the benchmark starts itself again (or a
//! Node script) as a child that connects, says `ready`, waits for `go` on
//! its standard input, works, and reports JSON on its last line. The
//! barrier keeps process and module start-up out of the figures and lets
//! several children begin together.
//!
//! - `drain`: runs every queued `bench_noop` job, as `run_once` does, and
//!   reports when it began and ended and its peak RSS;
//! - `sustained`: runs `bench_timed` jobs until told `stop`, then reports
//!   each ladder step's enqueue→start latency percentiles.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use graphile_worker::Worker;
use graphile_worker_dev::node;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::report::percentiles;
use crate::setup::PRELUDE;
use crate::{BenchTimed, CONCURRENCY, Result, SCHEMA, Side};

const NODE_DRAIN: &str = include_str!("../../bench/drain.js");
const NODE_SUSTAINED: &str = include_str!("../../bench/sustained.js");

/// The argument that makes the benchmark a child.
const CHILD_FLAG: &str = "--child";

/// What a child does.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    Drain,
    Sustained,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Drain => "drain",
            Mode::Sustained => "sustained",
        }
    }
}

/// `Some((mode, database URL))` when this process was started as a child.
pub(crate) fn requested() -> Option<(String, String)> {
    let mut args = std::env::args().skip(1);
    if args.next()? != CHILD_FLAG {
        return None;
    }
    Some((args.next()?, args.next()?))
}

/// Microseconds since the Unix epoch: the clock producer and children share.
pub(crate) fn epoch_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The latencies (ms) of the `bench_timed` jobs this child ran, by step.
static STARTS: Mutex<BTreeMap<i64, Vec<f64>>> = Mutex::new(BTreeMap::new());

/// Called by `bench_timed` as it starts.
pub(crate) fn record_start(sent_us: i64, step: i64) {
    let ms = (epoch_us() - sent_us) as f64 / 1e3;
    if let Ok(mut starts) = STARTS.lock() {
        starts.entry(step).or_default().push(ms);
    }
}

/// The peak resident set of this process, in kilobytes (Linux).
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Waits for a line on standard input (or its end).
async fn next_stdin_line() -> Result<()> {
    tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await??;
    Ok(())
}

/// CPU time this process has used, user and system, in milliseconds (Linux;
/// `/proc` counts in hundredths of a second).
fn cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
            // utime and stime are fields 14 and 15, counting from pid as 1.
            Some((ticks(11)? + ticks(12)?) * 10.0)
        })
        .unwrap_or(f64::NAN)
}

/// The child's side of the protocol.
pub(crate) async fn run((mode, url): &(String, String)) -> Result<()> {
    let report = match mode.as_str() {
        "drain" => {
            println!("ready");
            next_stdin_line().await?;
            let start_us = epoch_us();
            crate::oneshot::ours_run_once_ms(url).await?;
            json!({
                "start_us": start_us,
                "end_us": epoch_us(),
                "max_rss_kb": peak_rss_kb(),
                "cpu_ms": cpu_ms(),
            })
        }
        "sustained" => {
            let worker = Worker::options()
                .database_url(url)
                .concurrency(CONCURRENCY)
                .handle_signals(false)
                .register::<BenchTimed>()
                .init()
                .await?;
            let running = tokio::spawn({
                let worker = worker.clone();
                async move { worker.run().await }
            });
            println!("ready");
            next_stdin_line().await?;
            worker.shutdown_handle().shutdown();
            running.await??;
            let starts = std::mem::take(&mut *STARTS.lock().map_err(|_| "poisoned")?);
            let steps: Vec<_> = starts
                .into_iter()
                .map(|(step, latencies)| {
                    let count = latencies.len();
                    let [p50, p99, max] = percentiles(latencies).map(|(_, v)| v);
                    json!({ "step": step, "count": count, "p50": p50, "p99": p99, "max": max })
                })
                .collect();
            json!({ "steps": steps, "max_rss_kb": peak_rss_kb(), "cpu_ms": cpu_ms() })
        }
        other => return Err(format!("unknown child mode {other}").into()),
    };
    println!("{report}");
    Ok(())
}

/// A child process started by [`spawn`].
pub(crate) struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    what: String,
}

/// Starts a worker process for `side` on `url` and waits until it is ready.
pub(crate) async fn spawn(side: Side, mode: Mode, url: &str) -> Result<Running> {
    let mut cmd = match side {
        Side::Ours => {
            let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
            cmd.args([CHILD_FLAG, mode.name(), url]);
            cmd
        }
        node_side => {
            let script = match mode {
                Mode::Drain => NODE_DRAIN,
                Mode::Sustained => NODE_SUSTAINED,
            };
            let mut cmd = tokio::process::Command::from(node::js_command(
                url,
                SCHEMA,
                &format!("{PRELUDE}\n{script}"),
            ));
            cmd.env("BENCH_MODE", node_side.mode())
                .env("BENCH_BARRIER", "1");
            cmd
        }
    };
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let what = format!("{} {} child", side.mode(), mode.name());
    let stdin = child.stdin.take().ok_or("child has no stdin")?;
    let stdout = child.stdout.take().ok_or("child has no stdout")?;
    let mut running = Running {
        child,
        stdin,
        stdout: BufReader::new(stdout).lines(),
        what,
    };
    match running.stdout.next_line().await? {
        Some(line) if line.trim() == "ready" => Ok(running),
        other => Err(format!("{} said {other:?} instead of ready", running.what).into()),
    }
}

impl Running {
    /// Tells the child to begin (a drain) or to stop (a sustained worker).
    pub(crate) async fn signal(&mut self) -> Result<()> {
        self.stdin.write_all(b"go\n").await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Waits for the child to finish and returns the JSON it reported.
    pub(crate) async fn report(mut self) -> Result<serde_json::Value> {
        let mut last = None;
        while let Some(line) = self.stdout.next_line().await? {
            last = Some(line);
        }
        let status = self.child.wait().await?;
        if !status.success() {
            return Err(format!("{} failed ({status})", self.what).into());
        }
        let last = last.ok_or_else(|| format!("{} reported nothing", self.what))?;
        Ok(serde_json::from_str(&last)?)
    }
}
