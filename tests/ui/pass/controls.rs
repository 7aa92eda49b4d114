//! The execution-control keys: timeout, concurrency, every backoff form,
//! and a cron time zone.

use std::time::Duration;

use graphile_worker::{RetryPolicy, Task, TaskPolicy, task};

#[task(timeout = "1m30s", concurrency = 3, backoff(exponential, base = "1s", factor = 2.5, cap = "1h", jitter = 0.1))]
async fn render_video() {}

#[task(backoff(constant, delay = "30s"))]
async fn call_partner() {}

#[task(backoff(linear, base = "10s", cap = "2m"), timeout = "500ms")]
async fn poll_feed() {}

#[task(cron = "0 9 * * 1-5", tz = "Europe/Paris")]
async fn morning_report() {}

fn main() {
    assert_eq!(
        RenderVideo::policy(),
        TaskPolicy::new()
            .timeout(Duration::from_secs(90))
            .concurrency(3)
            .retry(
                RetryPolicy::exponential(Duration::from_secs(1))
                    .factor(2.5)
                    .cap(Duration::from_secs(3600))
                    .jitter(0.1)
            )
    );
    assert_eq!(
        CallPartner::policy(),
        TaskPolicy::new().retry(RetryPolicy::constant(Duration::from_secs(30)))
    );
    assert_eq!(
        PollFeed::policy(),
        TaskPolicy::new()
            .timeout(Duration::from_millis(500))
            .retry(RetryPolicy::linear(Duration::from_secs(10)).cap(Duration::from_secs(120)))
    );
    assert_eq!(MorningReport::policy(), TaskPolicy::new());
    let report = graphile_worker::registered_tasks()
        .find(|t| t.identifier() == "morning_report")
        .unwrap();
    assert_eq!(report.cron_time_zone(), Some("Europe/Paris"));
}
