//! The dashboard's chart: counts by state sampled while the UI runs, drawn
//! as inline SVG lines.

use std::sync::{Arc, Weak};

use chrono::Utc;
use graphile_worker::JobState;
use maud::{Markup, html};

use crate::state::{MAX_SAMPLES, Sample, Shared};

/// The states drawn, in the order of `Sample::counts`, with their colours.
pub(crate) const SERIES: [(JobState, &str); 5] = [
    (JobState::Ready, "#2f7d32"),
    (JobState::Scheduled, "#5b6b8c"),
    (JobState::Retrying, "#b26a00"),
    (JobState::Locked, "#2b6cb0"),
    (JobState::Failed, "#c0362c"),
];

/// Samples the counts now and then every interval, until the router's
/// state is dropped.
pub(crate) fn start_sampler(shared: &Arc<Shared>) {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let every = shared.ui.sample_every;
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticks.tick().await;
            let Some(shared) = weak.upgrade() else {
                return;
            };
            match shared.ui.utils.job_stats().await {
                Ok(stats) => {
                    let counts = SERIES.map(|(state, _)| stats.by_state(state));
                    if let Ok(mut samples) = shared.samples.lock() {
                        samples.push_back(Sample {
                            at: Utc::now(),
                            counts,
                        });
                        while samples.len() > MAX_SAMPLES {
                            samples.pop_front();
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "admin UI: could not sample the job counts"),
            }
        }
    });
}

/// Lines of jobs by state over the samples kept.
pub(crate) fn svg(samples: &[Sample]) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 180.0;
    const PAD: f64 = 28.0;
    if samples.len() < 2 {
        return html! {
            p.muted { "The chart fills in as the UI samples the counts (every few seconds while it runs)." }
        };
    }
    let top = samples
        .iter()
        .flat_map(|s| s.counts)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let first = samples[0].at;
    let span = (samples[samples.len() - 1].at - first)
        .num_milliseconds()
        .max(1) as f64;
    let x = |s: &Sample| PAD + (s.at - first).num_milliseconds() as f64 / span * (W - 2.0 * PAD);
    let y = |n: i64| H - PAD - (n as f64 / top) * (H - 2.0 * PAD);
    html! {
        svg.chart viewBox={ "0 0 " (W) " " (H) } role="img" aria-label="Jobs by state over time" {
            line x1=(PAD) y1=(H - PAD) x2=(W - PAD) y2=(H - PAD) stroke="#c9ced8" {}
            text x="4" y=(PAD) font-size="11" fill="#667085" { (top as i64) }
            text x="4" y=(H - PAD) font-size="11" fill="#667085" { "0" }
            text x=(PAD) y=(H - 8.0) font-size="11" fill="#667085" { (first.format("%H:%M")) }
            text x=(W - PAD) y=(H - 8.0) font-size="11" fill="#667085" text-anchor="end" {
                (samples[samples.len() - 1].at.format("%H:%M"))
            }
            @for (n, (state, colour)) in SERIES.iter().enumerate() {
                polyline fill="none" stroke=(colour) stroke-width="2"
                    points=(samples.iter().map(|s| format!("{:.1},{:.1}", x(s), y(s.counts[n]))).collect::<Vec<_>>().join(" ")) {
                    title { (state.as_str()) }
                }
            }
        }
        div.legend {
            @for (state, colour) in SERIES {
                span style={ "color:" (colour) } { (state.as_str()) }
            }
        }
    }
}
