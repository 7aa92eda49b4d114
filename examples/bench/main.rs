//! Throughput, latency, start-up and memory of graphile-worker-rs beside
//! Node graphile-worker 0.18, on the same machine and database server, in
//! one run.
//!
//! ```sh
//! cargo run --release --example bench               # median of 3 runs
//! cargo run --release --example bench -- --quick    # 1 run, smaller cases, under 2 minutes
//! cargo run --release --example bench -- --runs 5
//! cargo run --release --example bench -- --only drain
//! ```
//!
//! `--only` takes startup, enqueue, drain, latency, sustained, big, memory or
//! processes; `--side` (ours, batched or unbatched) measures one side only. With no `DATABASE_URL` it starts a throwaway PostgreSQL (see
//! `graphile_worker_dev`); `DATABASE_URL` points it at a server of your own
//! (the role needs `CREATEDB`). Every case uses a database of its own,
//! created and migrated beforehand and dropped afterwards, so cases do not
//! affect each other. Node graphile-worker 0.18.0 comes from npm (pinned in
//! `tests/node/package-lock.json`); its scripts are in `bench/`.
//!
//! What is measured (each figure the median of the runs):
//!
//! - **start-up + shutdown** on an empty queue with the migrations applied:
//!   ours is `Worker::options()…init()` + `run_once()` + closing the pool,
//!   in-process; Node's is `runOnce`, timed inside the node process, so
//!   node's own process start-up and module loading are not counted;
//! - **bulk enqueue** of 20k and 200k jobs with one call: the `add_jobs` SQL
//!   function called directly (one statement, specs through
//!   `json_populate_recordset`, the JSON text built beforehand; the floor
//!   for any client), `WorkerUtils::add_raw_jobs_count_in`, the typed
//!   `WorkerUtils::add_jobs_count` and `enqueue_many` of a `#[task]` (both
//!   return only the count), and Node's `addJobs`;
//! - **drain** of 20k and 200k trivial jobs at concurrency 24: ours with
//!   `run_once` on the default settings; Node's `runOnce` with batching on
//!   (local queue 500, refetch delay 10 ms, complete/fail batch delays 0,
//!   pool 25) and off (its defaults). Timed from start-up to exit on both
//!   sides, over a table `ANALYZE`d beforehand (as autovacuum leaves it)
//!   and over a *fresh* one, drained right after the bulk insert;
//! - **the floor**: what PostgreSQL alone costs for the same drain, the
//!   worker's own claim and complete statements issued back to back by a
//!   client that runs no task;
//! - **latency** from `add_job` to the first line of the task, over 1,000
//!   sequential jobs after a 100-job warm-up, added on a connection apart
//!   from the worker's: ours with `run()` on the defaults; Node with an
//!   in-process `run()`, batching on and off;
//! - **sustained load** (`sustained.rs`): a producer adding batches of 100
//!   jobs at a fixed rate while one worker process runs them, for a ladder
//!   of rates: enqueue→start latency and whether the backlog stays flat;
//!   the chart of it is written to `docs/src/images/sustained-load.svg`;
//! - **big tables** (`big_table.rs`): draining the due 5% of a table whose
//!   other 95% are not runnable, against the same jobs in a clean table;
//! - **memory** and **several processes** (`processes.rs`): peak RSS of a
//!   worker process draining 20k and 200k jobs; 1, 2 and 4 worker processes
//!   draining one backlog, with the share of time spent waiting on locks.

mod big_table;
mod chart;
mod child;
mod latency;
mod oneshot;
mod processes;
mod report;
mod setup;
mod sustained;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Instant;

use graphile_worker::task;
use tokio::sync::mpsc;

use crate::setup::Machine;

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

const SCHEMA: &str = "graphile_worker";
const CONCURRENCY: usize = 24;

/// The trivial job every drain runs.
#[task]
async fn bench_noop(id: i64) {
    let _ = id;
}

/// Where `bench_latency` reports the moment it started.
static STARTED: OnceLock<mpsc::UnboundedSender<(i64, Instant)>> = OnceLock::new();

/// Records when it started.
#[task]
async fn bench_latency(id: i64) {
    let now = Instant::now();
    if let Some(tx) = STARTED.get() {
        let _ = tx.send((id, now));
    }
}

/// A job of the sustained-load ladder: `t` is when the producer sent it
/// (microseconds since the Unix epoch), `s` the ladder step it belongs to.
#[task]
async fn bench_timed(t: i64, s: i64) {
    child::record_start(t, s);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Ours,
    NodeBatched,
    NodeUnbatched,
}

impl Side {
    const ALL: [Side; 3] = [Side::Ours, Side::NodeBatched, Side::NodeUnbatched];
    /// The cases that take long run ours and Node's faster mode only.
    const PAIR: [Side; 2] = [Side::Ours, Side::NodeBatched];

    fn mode(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::NodeBatched => "batched",
            Side::NodeUnbatched => "unbatched",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Enqueue {
    RawSql,
    RawJobsCount,
    TypedCount,
    Typed,
    Node,
}

impl Enqueue {
    const ALL: [Enqueue; 5] = [
        Enqueue::RawSql,
        Enqueue::RawJobsCount,
        Enqueue::TypedCount,
        Enqueue::Typed,
        Enqueue::Node,
    ];

    fn label(self) -> &'static str {
        match self {
            Enqueue::RawSql => "add_jobs SQL",
            Enqueue::RawJobsCount => "add_raw_jobs_count_in",
            Enqueue::TypedCount => "add_jobs_count (typed)",
            Enqueue::Typed => "enqueue_many (typed, count)",
            Enqueue::Node => "Node addJobs",
        }
    }
}

/// One measured quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Metric {
    StartupMs(Side),
    EnqueueRate(Enqueue, usize),
    DrainRate(Side, usize),
    /// The same drain right after the bulk insert, before any statistics.
    FreshDrainRate(Side, usize),
    /// The claim and complete statements alone, back to back.
    FloorRate(usize),
    /// Our drain with an event observer attached.
    ObservedDrainRate(usize),
    LatencyMs(Side, Stat),
    /// One step of the sustained-load ladder, by its offered rate.
    Sustained(Side, u32, Ladder),
    /// The highest offered rate whose backlog stayed flat.
    SustainableRate(Side),
    /// CPU time of the worker process per job it ran, in microseconds:
    /// over the sustained-load ladder, and draining a backlog.
    SustainedCpuUs(Side),
    DrainCpuUs(Side, usize),
    /// Latency at half of our sustainable rate.
    HalfLoadMs(Side, Stat),
    /// Draining the due jobs of a table mostly not runnable, or of a clean one.
    BigDrainRate(Side, Table),
    /// The claim statement's time per job, in microseconds.
    ClaimUsPerJob(Table),
    /// Peak resident memory of one worker process draining this many jobs.
    PeakRssMb(Side, usize),
    /// Several worker processes on one backlog: total rate, lock-wait share.
    ProcessesRate(Side, usize),
    ProcessesLockWaitPct(Side, usize),
    /// The share of it spent by claims.
    ProcessesClaimLockWaitPct(Side, usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stat {
    P50,
    P99,
    Max,
}

/// What a ladder step reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ladder {
    /// Jobs started per second.
    Achieved,
    Latency(Stat),
    /// 1 if the backlog stayed flat, else 0.
    Flat,
    /// The share of the step the producer spent in its own statements, %.
    ProducerBusy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Table {
    /// Only the due jobs.
    Clean,
    /// Among 95% not runnable, the other task's jobs as old as ours.
    Interleaved,
    /// Among 95% not runnable, behind the other task's older backlog.
    Behind,
}

impl Table {
    fn label(self) -> &'static str {
        match self {
            Table::Clean => "clean table",
            Table::Interleaved => "interleaved",
            Table::Behind => "behind a stranded backlog",
        }
    }
}

#[derive(Default)]
struct Results(BTreeMap<Metric, Vec<f64>>);

impl Results {
    fn push(&mut self, metric: Metric, value: f64) {
        self.0.entry(metric).or_default().push(value);
    }

    fn median(&self, metric: Metric) -> Option<f64> {
        let mut values = self.0.get(&metric)?.clone();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied()
    }
}

/// The groups `--only` accepts, in the order they run.
const GROUPS: [&str; 8] = [
    "startup",
    "enqueue",
    "drain",
    "latency",
    "sustained",
    "big",
    "memory",
    "processes",
];

struct Settings {
    runs: usize,
    quick: bool,
    sizes: Vec<usize>,
    /// Measure only this group (one of [`GROUPS`]).
    only: Option<String>,
    /// Measure only this side (`--side ours`, `batched` or `unbatched`).
    side: Option<Side>,
}

impl Settings {
    fn wants(&self, group: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == group)
    }

    /// The sides of `candidates` this run measures, in the run's order.
    fn sides<const N: usize>(&self, candidates: [Side; N], run: usize) -> Vec<Side> {
        rotated(candidates, run)
            .filter(|side| self.side.is_none_or(|only| only == *side))
            .collect()
    }
}

fn settings() -> Result<Settings> {
    let mut settings = Settings {
        runs: 3,
        quick: false,
        sizes: vec![20_000, 200_000],
        only: None,
        side: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => {
                settings.runs = 1;
                settings.quick = true;
                settings.sizes = vec![20_000];
            }
            "--runs" => {
                settings.runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--runs needs a positive number")?;
            }
            "--only" => {
                let group = args.next().unwrap_or_default();
                if !GROUPS.contains(&group.as_str()) {
                    return Err(format!("--only takes one of {}", GROUPS.join(", ")).into());
                }
                settings.only = Some(group);
            }
            "--side" => {
                let name = args.next().unwrap_or_default();
                let side = Side::ALL.into_iter().find(|side| side.mode() == name);
                settings.side = Some(side.ok_or("--side takes ours, batched or unbatched")?);
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; use --quick, --runs N, --only GROUP or --side SIDE"
                )
                .into());
            }
        }
    }
    Ok(settings)
}

#[tokio::main]
async fn main() -> Result<()> {
    if let Some(mode) = child::requested() {
        return child::run(&mode).await;
    }
    let settings = settings()?;
    let (tx, mut started) = mpsc::unbounded_channel();
    STARTED.set(tx).map_err(|_| "latency channel set twice")?;

    eprintln!("preparing: database server and Node graphile-worker 0.18.0 …");
    let machine = Machine::describe().await?;
    graphile_worker_dev::node::node_dir();
    let began = Instant::now();
    let mut results = Results::default();

    for run in 1..=settings.runs {
        eprintln!("run {run} of {}", settings.runs);
        oneshot::measure(&settings, run, &mut results).await?;
        if settings.wants("latency") {
            latency::measure(&settings, run, &mut started, &mut results).await?;
        }
        if settings.wants("sustained") {
            sustained::measure(&settings, run, &mut results).await?;
        }
        if settings.wants("big") {
            big_table::measure(&settings, run, &mut results).await?;
        }
        processes::measure(&settings, run, &mut results).await?;
    }

    let load_after = setup::load_average();
    println!();
    machine.print(load_after, began.elapsed());
    report::print_tables(&results, &settings);
    if settings.wants("sustained") {
        let path = chart::write(&results, &settings)?;
        println!();
        println!("The sustained-load chart is in {}.", path.display());
    }
    Ok(())
}

/// The candidates of a case in another order each run, so that none always
/// follows the same predecessor.
fn rotated<T: Copy, const N: usize>(items: [T; N], by: usize) -> impl Iterator<Item = T> {
    (0..N).map(move |i| items[(i + by) % N])
}

fn progress(what: &str, value: f64, unit: &str) {
    eprintln!("  {what:<48} {value:>12.2} {unit}");
}
