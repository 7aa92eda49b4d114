//! The tables the benchmark prints.

use crate::big_table;
use crate::oneshot::FLOOR_BATCH;
use crate::processes::{MEMORY_SIZES, PROCESSES, processes_backlog};
use crate::sustained::LADDER;
use crate::{CONCURRENCY, Enqueue, Ladder, Metric, Results, Settings, Side, Stat, Table};

/// p50, p99 and max (nearest-rank).
pub(crate) fn percentiles(mut samples: Vec<f64>) -> [(Stat, f64); 3] {
    samples.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let index = ((p * samples.len() as f64).ceil() as usize).saturating_sub(1);
        samples.get(index).copied().unwrap_or(f64::NAN)
    };
    [
        (Stat::P50, rank(0.50)),
        (Stat::P99, rank(0.99)),
        (Stat::Max, samples.last().copied().unwrap_or(f64::NAN)),
    ]
}

// ------------------------------------------------------------------- report

fn cell(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if decimals == 0 => group_thousands(v.round() as i64),
        Some(v) => format!("{v:.decimals$}"),
        None => "-".into(),
    }
}

pub(crate) fn group_thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

pub(crate) fn print_tables(results: &Results, settings: &Settings) {
    let m = |metric| results.median(metric);
    println!(
        "Median of {} run{}; concurrency {CONCURRENCY}; Node batched = localQueue 500, refetchDelay 10 ms, \
         complete/failJobBatchDelay 0, maxPoolSize 25; Node unbatched = its defaults (maxPoolSize 10).",
        settings.runs,
        if settings.runs == 1 { "" } else { "s" }
    );
    let one_shot = ["startup", "drain", "latency"]
        .iter()
        .any(|group| settings.wants(group));
    if one_shot {
        println!();
        println!(
            "| {:<34} | {:>15} | {:>14} | {:>14} |",
            "", "ours (defaults)", "Node batched", "Node unbatched"
        );
        println!("|{:-<36}|{:->17}|{:->16}|{:->16}|", "", ":", ":", ":");
    }
    let row = |label: &str, values: [Option<f64>; 3], decimals: usize| {
        if values.iter().all(Option::is_none) {
            return;
        }
        println!(
            "| {:<34} | {:>15} | {:>14} | {:>14} |",
            label,
            cell(values[0], decimals),
            cell(values[1], decimals),
            cell(values[2], decimals)
        );
    };
    let per_side = |f: &dyn Fn(Side) -> Metric| Side::ALL.map(|side| m(f(side)));
    row(
        "start-up + shutdown (ms)",
        per_side(&|s| Metric::StartupMs(s)),
        1,
    );
    for &size in &settings.sizes {
        row(
            &format!("drain {} jobs (jobs/s)", group_thousands(size as i64)),
            per_side(&|s| Metric::DrainRate(s, size)),
            0,
        );
        row(
            "… fresh table, no ANALYZE (jobs/s)",
            per_side(&|s| Metric::FreshDrainRate(s, size)),
            0,
        );
        row(
            "… with an event observer (jobs/s)",
            [m(Metric::ObservedDrainRate(size)), None, None],
            0,
        );
    }
    for (stat, name) in [(Stat::P50, "p50"), (Stat::P99, "p99"), (Stat::Max, "max")] {
        row(
            &format!("latency {name} (ms)"),
            per_side(&|s| Metric::LatencyMs(s, stat)),
            2,
        );
    }
    if settings.wants("enqueue") {
        print_enqueue_table(results, settings);
    }
    if one_shot || settings.wants("enqueue") {
        println!();
        println!(
            "Notes: Node's start-up is timed inside the node process (its process start-up and \
             module loading are not counted); ours in-process. Drain times run from start-up to \
             exit on both sides, over jobs queued beforehand and ANALYZEd (the fresh-table rows: \
             drained right after the insert, before any statistics). Enqueue percentages \
             are of the add_jobs SQL statement alone (its JSON built beforehand); enqueue_many \
             and add_jobs_count read no jobs back, they return the count."
        );
    }
    print_load_tables(results, settings);
    println!();
    println!("Targets:");
    print_one_shot_targets(results, settings);
    print_load_targets(results, settings);
}

fn print_enqueue_table(results: &Results, settings: &Settings) {
    let m = |metric| results.median(metric);
    println!();
    print!("| {:<34} |", "bulk enqueue, one call (jobs/s)");
    for &size in &settings.sizes {
        print!(
            " {:>22} |",
            format!("{} jobs", group_thousands(size as i64))
        );
    }
    println!();
    print!("|{:-<36}|", "");
    for _ in &settings.sizes {
        print!("{:->24}|", ":");
    }
    println!();
    for method in Enqueue::ALL {
        print!("| {:<34} |", method.label());
        for &size in &settings.sizes {
            let rate = m(Metric::EnqueueRate(method, size));
            let share = rate.zip(m(Metric::EnqueueRate(Enqueue::RawSql, size)));
            let text = match share {
                Some((rate, raw)) => format!(
                    "{} ({:.0}%)",
                    group_thousands(rate.round() as i64),
                    rate / raw * 100.0
                ),
                None => cell(rate, 0),
            };
            print!(" {text:>22} |");
        }
        println!();
    }
}

fn print_one_shot_targets(results: &Results, settings: &Settings) {
    let m = |metric| results.median(metric);
    for &size in &settings.sizes {
        if let (Some(ours), Some(node)) = (
            m(Metric::DrainRate(Side::Ours, size)),
            m(Metric::DrainRate(Side::NodeBatched, size)),
        ) {
            let ratio = ours / node;
            println!(
                "- drain {} ≥ 2.5× Node batched: {ratio:.2}× ({})",
                group_thousands(size as i64),
                verdict(ratio >= 2.5)
            );
        }
    }
    for &size in &settings.sizes {
        if let (Some(ours), Some(floor)) = (
            m(Metric::DrainRate(Side::Ours, size)),
            m(Metric::FloorRate(size)),
        ) {
            let share = ours / floor;
            println!(
                "- drain {} ≥ 85% of the floor (claim + complete statements alone, {FLOOR_BATCH} a batch: {} jobs/s): {:.0}% ({})",
                group_thousands(size as i64),
                group_thousands(floor.round() as i64),
                share * 100.0,
                verdict(share >= 0.85)
            );
        }
    }
    for &size in &settings.sizes {
        if let (Some(observed), Some(plain)) = (
            m(Metric::ObservedDrainRate(size)),
            m(Metric::DrainRate(Side::Ours, size)),
        ) {
            let share = observed / plain;
            println!(
                "- drain {} with an event observer within 5% of without: {:.0}% ({})",
                group_thousands(size as i64),
                share * 100.0,
                verdict(share >= 0.95)
            );
        }
        if let (Some(fresh), Some(analyzed), Some(node)) = (
            m(Metric::FreshDrainRate(Side::Ours, size)),
            m(Metric::DrainRate(Side::Ours, size)),
            m(Metric::FreshDrainRate(Side::NodeBatched, size)),
        ) {
            let share = fresh / analyzed;
            let ratio = fresh / node;
            println!(
                "- fresh-table drain {} within 10% of the ANALYZEd one: {:.0}% ({}); ≥ 2.5× Node batched on a fresh table: {ratio:.2}× ({})",
                group_thousands(size as i64),
                share * 100.0,
                verdict(share >= 0.9),
                verdict(ratio >= 2.5)
            );
        }
    }
    if let (Some(p50), Some(p99)) = (
        m(Metric::LatencyMs(Side::Ours, Stat::P50)),
        m(Metric::LatencyMs(Side::Ours, Stat::P99)),
    ) {
        println!(
            "- latency p50 ≤ 1.5 ms: {p50:.2} ms ({}); p99 ≤ 5 ms: {p99:.2} ms ({})",
            verdict(p50 <= 1.5),
            verdict(p99 <= 5.0)
        );
    }
    if let Some(ms) = m(Metric::StartupMs(Side::Ours)) {
        println!(
            "- start-up + shutdown ≤ 20 ms: {ms:.1} ms ({})",
            verdict(ms <= 20.0)
        );
    }
    for method in [Enqueue::Typed, Enqueue::TypedCount] {
        for &size in &settings.sizes {
            if let (Some(typed), Some(raw)) = (
                m(Metric::EnqueueRate(method, size)),
                m(Metric::EnqueueRate(Enqueue::RawSql, size)),
            ) {
                let share = typed / raw;
                println!(
                    "- typed bulk enqueue ≥ 90% of add_jobs SQL, {} {}: {:.0}% ({})",
                    method.label(),
                    group_thousands(size as i64),
                    share * 100.0,
                    verdict(share >= 0.9)
                );
            }
        }
    }
}

/// A verdict for the targets list.
fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// The sustained-load ladder, the big-table, memory and processes tables.
pub(crate) fn print_load_tables(results: &Results, settings: &Settings) {
    let m = |metric| results.median(metric);
    if settings.wants("sustained") {
        print_ladder(results);
    }
    if settings.wants("big") {
        let (total, due) = (big_table::total(settings), big_table::due(settings));
        println!();
        println!(
            "| big table: {} due of {} jobs   | {:>15} | {:>14} |",
            group_thousands(due as i64),
            group_thousands(total as i64),
            "ours (defaults)",
            "Node batched"
        );
        println!("|{:-<36}|{:->17}|{:->16}|", "", ":", ":");
        for (table, label) in [
            (Table::Clean, "drain, clean table (jobs/s)"),
            (Table::Interleaved, "… among 95% not runnable"),
            (Table::Behind, "… behind a stranded backlog"),
        ] {
            println!(
                "| {:<34} | {:>15} | {:>14} |",
                label,
                cell(m(Metric::BigDrainRate(Side::Ours, table)), 0),
                cell(m(Metric::BigDrainRate(Side::NodeBatched, table)), 0)
            );
        }
        for (table, label) in [
            (Table::Clean, "claim statement, clean (µs/job)"),
            (Table::Interleaved, "… among 95% not runnable"),
            (Table::Behind, "… behind a stranded backlog"),
        ] {
            println!(
                "| {:<34} | {:>15} | {:>14} |",
                label,
                cell(m(Metric::ClaimUsPerJob(table)), 2),
                "-"
            );
        }
    }
    if settings.wants("memory") {
        println!();
        println!(
            "| {:<34} | {:>15} | {:>14} |",
            "peak RSS of the worker process (MB)", "ours (defaults)", "Node batched"
        );
        println!("|{:-<36}|{:->17}|{:->16}|", "", ":", ":");
        for size in MEMORY_SIZES {
            println!(
                "| {:<34} | {:>15} | {:>14} |",
                format!("draining {} jobs", group_thousands(size as i64)),
                cell(m(Metric::PeakRssMb(Side::Ours, size)), 1),
                cell(m(Metric::PeakRssMb(Side::NodeBatched, size)), 1)
            );
        }
        for size in MEMORY_SIZES {
            println!(
                "| {:<34} | {:>15} | {:>14} |",
                format!("worker CPU per job, {} (µs)", group_thousands(size as i64)),
                cell(m(Metric::DrainCpuUs(Side::Ours, size)), 1),
                cell(m(Metric::DrainCpuUs(Side::NodeBatched, size)), 1)
            );
        }
    }
    if settings.wants("processes") {
        println!();
        println!(
            "| {} jobs, N processes | {:>13} | {:>20} | {:>13} | {:>20} |",
            group_thousands(processes_backlog(settings) as i64),
            "ours (jobs/s)",
            "row-lock waits: all",
            "Node (jobs/s)",
            "row-lock waits: all"
        );
        println!(
            "| {:<26} | {:>13} | {:>20} | {:>13} | {:>20} |",
            "", "", "/ in claims", "", "/ in claims"
        );
        println!(
            "|{:-<28}|{:->15}|{:->22}|{:->15}|{:->22}|",
            "", ":", ":", ":", ":"
        );
        for n in PROCESSES {
            let waits = |side| match (
                m(Metric::ProcessesLockWaitPct(side, n)),
                m(Metric::ProcessesClaimLockWaitPct(side, n)),
            ) {
                (Some(all), Some(claims)) => format!("{all:.1}% / {claims:.1}%"),
                _ => "-".into(),
            };
            println!(
                "| {:<26} | {:>13} | {:>20} | {:>13} | {:>20} |",
                n,
                cell(m(Metric::ProcessesRate(Side::Ours, n)), 0),
                waits(Side::Ours),
                cell(m(Metric::ProcessesRate(Side::NodeBatched, n)), 0),
                waits(Side::NodeBatched)
            );
        }
    }
}

/// One row per offered rate either side reached.
fn print_ladder(results: &Results) {
    let m = |metric| results.median(metric);
    println!();
    println!(
        "| sustained load (jobs/s offered) | ours: started/s [producer busy] | p50 / p99 / max (ms)   | Node batched: started/s [busy]  | p50 / p99 / max (ms)   |"
    );
    println!(
        "|{:->33}|{:->33}|{:-<24}|{:->33}|{:-<24}|",
        ":", ":", "", ":", ""
    );
    let side_cells = |side, rate| {
        let achieved = m(Metric::Sustained(side, rate, Ladder::Achieved));
        let flat = m(Metric::Sustained(side, rate, Ladder::Flat));
        let busy = m(Metric::Sustained(side, rate, Ladder::ProducerBusy))
            .map_or(String::new(), |b| format!(" [{b:.0}%]"));
        let lat = |stat| m(Metric::Sustained(side, rate, Ladder::Latency(stat)));
        let rate_cell = match (achieved, flat) {
            (Some(a), Some(f)) if f >= 0.5 => {
                format!("{}{busy}", group_thousands(a.round() as i64))
            }
            (Some(a), Some(_)) => format!("{} grows{busy}", group_thousands(a.round() as i64)),
            _ => "-".into(),
        };
        let lat_cell = match (lat(Stat::P50), lat(Stat::P99), lat(Stat::Max)) {
            (Some(a), Some(b), Some(c)) => format!("{a:.2} / {b:.2} / {c:.1}"),
            _ => "-".into(),
        };
        (rate_cell, lat_cell)
    };
    let cpu = |side| m(Metric::SustainedCpuUs(side));
    println!(
        "| {:>31} | {:>31} | {:<22} | {:>31} | {:<22} |",
        "worker CPU per job (µs)",
        cell(cpu(Side::Ours), 1),
        "",
        cell(cpu(Side::NodeBatched), 1),
        ""
    );
    for rate in LADDER {
        let (ours, ours_lat) = side_cells(Side::Ours, rate);
        let (node, node_lat) = side_cells(Side::NodeBatched, rate);
        if ours == "-" && node == "-" {
            continue;
        }
        println!(
            "| {:>31} | {:>31} | {:<22} | {:>31} | {:<22} |",
            group_thousands(i64::from(rate)),
            ours,
            ours_lat,
            node,
            node_lat
        );
    }
}

/// Targets of the load cases.
pub(crate) fn print_load_targets(results: &Results, settings: &Settings) {
    let m = |metric| results.median(metric);
    if let (Some(ours), Some(node)) = (
        m(Metric::SustainableRate(Side::Ours)),
        m(Metric::SustainableRate(Side::NodeBatched)),
    ) {
        let ratio = ours / node.max(1.0);
        println!(
            "- sustained rate ≥ 2.5× Node batched: {} against {} jobs/s, {ratio:.2}× ({})",
            group_thousands(ours as i64),
            group_thousands(node as i64),
            verdict(ratio >= 2.5)
        );

        if let Some(p99) = m(Metric::HalfLoadMs(Side::Ours, Stat::P99)) {
            println!(
                "- p99 ≤ 10 ms at half our sustainable rate ({} jobs/s): {p99:.2} ms ({})",
                group_thousands((ours / 2.0) as i64),
                verdict(p99 <= 10.0)
            );
        }
    }
    for table in [Table::Interleaved, Table::Behind] {
        if let (Some(big), Some(clean)) = (
            m(Metric::BigDrainRate(Side::Ours, table)),
            m(Metric::BigDrainRate(Side::Ours, Table::Clean)),
        ) {
            let share = big / clean;
            println!(
                "- big table, {}: the due 5% within 15% of the same jobs in a clean table: {:.0}% ({})",
                table.label(),
                share * 100.0,
                verdict(share >= 0.85)
            );
        }
    }
    if let (Some(small), Some(large)) = (
        m(Metric::PeakRssMb(Side::Ours, MEMORY_SIZES[0])),
        m(Metric::PeakRssMb(Side::Ours, MEMORY_SIZES[1])),
    ) {
        println!(
            "- peak RSS does not grow with the backlog: {small:.1} MB at {} jobs, {large:.1} MB at {} ({})",
            group_thousands(MEMORY_SIZES[0] as i64),
            group_thousands(MEMORY_SIZES[1] as i64),
            verdict(large <= small * 1.2 + 2.0)
        );
    }
    if settings.wants("processes")
        && let Some(worst) = PROCESSES
            .into_iter()
            .filter_map(|n| m(Metric::ProcessesClaimLockWaitPct(Side::Ours, n)))
            .reduce(f64::max)
    {
        println!(
            "- claims do not fight: at most {worst:.1}% of our processes' database time is a claim waiting on a row lock ({})",
            verdict(worst <= 1.0)
        );
    }
}
