use graphile_worker::task;

#[task(timeout = "soon")]
async fn vague_timeout() {}

#[task(timeout = "0s")]
async fn zero_timeout() {}

#[task(concurrency = 0)]
async fn no_concurrency() {}

#[task(backoff(exponential, factor = 2))]
async fn no_base() {}

#[task(backoff(base = "1s"))]
async fn no_kind() {}

#[task(backoff(linear, base = "1s", factor = 2))]
async fn factor_on_linear() {}

#[task(backoff(constant, delay = "1s", jitter = 2.0))]
async fn wild_jitter() {}

#[task(backoff(fibonacci, base = "1s"))]
async fn unknown_backoff() {}

#[task(tz = "Europe/Paris")]
async fn zone_without_cron() {}

#[task(cron = "0 9 * * *", tz = "Paris time")]
async fn not_a_zone() {}

fn main() {}
