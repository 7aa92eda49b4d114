//! The sustained-load chart: jobs started per second, and p50/p99 latency,
//! against the offered rate, for ours and Node batched. Plain SVG, written
//! by hand: two panels, one line per side, hollow marks where the backlog
//! grew.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::report::group_thousands;
use crate::sustained::LADDER;
use crate::{Ladder, Metric, Result, Results, Settings, Side, Stat};

const WIDTH: f64 = 820.0;
const HEIGHT: f64 = 340.0;
const PANEL: f64 = 330.0;
const PANEL_HEIGHT: f64 = 230.0;
const TOP: f64 = 50.0;
const LEFT: [f64; 2] = [70.0, 480.0];
/// The latency axis, logarithmic, in milliseconds.
const LATENCY_RANGE: (f64, f64) = (0.5, 2000.0);

/// One point of a side's line.
struct Point {
    offered: f64,
    achieved: f64,
    p50: f64,
    p99: f64,
    flat: bool,
}

/// Writes the chart; the committed one (`docs/src/images/sustained-load.svg`) only from
/// a full run, a `--quick` one to the temporary directory.
pub(crate) fn write(results: &Results, settings: &Settings) -> Result<PathBuf> {
    let path = if settings.quick {
        std::env::temp_dir().join("graphile-worker-bench-sustained-load.svg")
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/src/images/sustained-load.svg")
    };
    std::fs::write(&path, svg(results))?;
    Ok(path)
}

fn points(results: &Results, side: Side) -> Vec<Point> {
    let m = |rate, what| results.median(Metric::Sustained(side, rate, what));
    LADDER
        .into_iter()
        .filter_map(|rate| {
            Some(Point {
                offered: f64::from(rate),
                achieved: m(rate, Ladder::Achieved)?,
                p50: m(rate, Ladder::Latency(Stat::P50)).unwrap_or(f64::NAN),
                p99: m(rate, Ladder::Latency(Stat::P99)).unwrap_or(f64::NAN),
                flat: m(rate, Ladder::Flat)? >= 0.5,
            })
        })
        .collect()
}

fn svg(results: &Results) -> String {
    let sides = [
        (Side::Ours, "graphile-worker-rs", "#b7410e"),
        (
            Side::NodeBatched,
            "Node graphile-worker 0.18, batched",
            "#3c873a",
        ),
    ];
    let lines: Vec<_> = sides
        .iter()
        .map(|&(side, name, colour)| (points(results, side), name, colour))
        .collect();
    let max_rate = lines
        .iter()
        .flat_map(|(points, ..)| points.iter().map(|p| p.offered))
        .fold(10_000.0, f64::max)
        * 1.05;
    let x = |panel: usize, rate: f64| LEFT[panel] + rate / max_rate * PANEL;
    let y_rate = |rate: f64| TOP + PANEL_HEIGHT - rate / max_rate * PANEL_HEIGHT;
    let (lo, hi) = LATENCY_RANGE;
    let y_ms = |ms: f64| {
        let v = ms.clamp(lo, hi);
        TOP + PANEL_HEIGHT - (v / lo).ln() / (hi / lo).ln() * PANEL_HEIGHT
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">"##
    );
    let _ = writeln!(out, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let titles = [
        "Jobs started per second (hollow: backlog grew)",
        "Enqueue→start latency, ms (p99; p50 dashed)",
    ];
    for (panel, title) in titles.iter().enumerate() {
        let left = LEFT[panel];
        let _ = writeln!(
            out,
            r##"<text x="{left}" y="{}" font-size="12" font-weight="bold">{title}</text>"##,
            TOP - 14.0
        );
        let _ = writeln!(
            out,
            r##"<rect x="{left}" y="{TOP}" width="{PANEL}" height="{PANEL_HEIGHT}" fill="none" stroke="#999"/>"##
        );
        let steps = 4;
        for i in 0..=steps {
            let rate = max_rate / 1.05 * f64::from(i) / f64::from(steps);
            let _ = writeln!(
                out,
                r##"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"##,
                x(panel, rate),
                TOP + PANEL_HEIGHT + 14.0,
                group_thousands(rate.round() as i64)
            );
        }
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="middle">jobs/s offered</text>"##,
            left + PANEL / 2.0,
            TOP + PANEL_HEIGHT + 30.0
        );
    }
    for i in 0..=4 {
        let rate = max_rate / 1.05 * f64::from(i) / 4.0;
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT[0] - 4.0,
            y_rate(rate) + 4.0,
            group_thousands(rate.round() as i64)
        );
    }
    for ms in [1.0, 10.0, 100.0, 1000.0] {
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{:.1}" text-anchor="end">{ms}</text><line x1="{}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
            LEFT[1] - 4.0,
            y_ms(ms) + 4.0,
            LEFT[1],
            LEFT[1] + PANEL,
            y_ms(ms),
            y_ms(ms)
        );
    }
    let _ = writeln!(
        out,
        r##"<line x1="{}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#bbb" stroke-dasharray="4 3"/>"##,
        x(0, 0.0),
        y_rate(0.0),
        x(0, max_rate),
        y_rate(max_rate)
    );
    for (index, (points, name, colour)) in lines.iter().enumerate() {
        let path = |f: &dyn Fn(&Point) -> (f64, f64)| {
            points
                .iter()
                .filter(|p| f(p).1.is_finite())
                .map(|p| {
                    let (px, py) = f(p);
                    format!("{px:.1},{py:.1}")
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let achieved = path(&|p| (x(0, p.offered), y_rate(p.achieved)));
        let p99 = path(&|p| {
            (
                x(1, p.offered),
                if p.p99.is_nan() {
                    f64::NAN
                } else {
                    y_ms(p.p99)
                },
            )
        });
        let p50 = path(&|p| {
            (
                x(1, p.offered),
                if p.p50.is_nan() {
                    f64::NAN
                } else {
                    y_ms(p.p50)
                },
            )
        });
        let _ = writeln!(
            out,
            r##"<polyline points="{achieved}" fill="none" stroke="{colour}" stroke-width="2"/>"##
        );
        let _ = writeln!(
            out,
            r##"<polyline points="{p99}" fill="none" stroke="{colour}" stroke-width="2"/>"##
        );
        let _ = writeln!(
            out,
            r##"<polyline points="{p50}" fill="none" stroke="{colour}" stroke-width="1.5" stroke-dasharray="5 3"/>"##
        );
        for p in points {
            let fill = if p.flat { *colour } else { "white" };
            let _ = writeln!(
                out,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{fill}" stroke="{colour}" stroke-width="1.5"/>"##,
                x(0, p.offered),
                y_rate(p.achieved)
            );
            if p.p99.is_finite() {
                let _ = writeln!(
                    out,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{fill}" stroke="{colour}" stroke-width="1.5"/>"##,
                    x(1, p.offered),
                    y_ms(p.p99)
                );
            }
        }
        let legend_y = HEIGHT - 12.0;
        let legend_x = LEFT[0] + index as f64 * 300.0;
        let _ = writeln!(
            out,
            r##"<line x1="{legend_x}" x2="{}" y1="{}" y2="{}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{legend_y}">{name}</text>"##,
            legend_x + 20.0,
            legend_y - 4.0,
            legend_y - 4.0,
            legend_x + 26.0
        );
    }
    out.push_str("</svg>\n");
    out
}
