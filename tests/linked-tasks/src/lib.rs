//! Tasks that live in a library crate of their own, as an application's
//! tasks often do. Nothing here is registered by name: a binary that links
//! this crate (for example with `use graphile_worker_linked_tasks as _;`)
//! gets these tasks in [`graphile_worker::Worker::from_registry`], and one
//! that does not name it gets none of them.
//!
//! Each task records its run in the `linked_runs` table
//! ([`RUNS_TABLE_SQL`]), so tests can see what ran.

use graphile_worker::{JobContext, task};

/// Creates the table the tasks of this crate write to.
pub const RUNS_TABLE_SQL: &str = "create table linked_runs (
    id bigserial primary key,
    task text not null,
    detail text not null,
    job_id bigint not null,
    queue text
)";

/// Records a visit to `page`.
#[task]
pub async fn record_visit(ctx: JobContext, page: String) -> Result<(), sqlx::Error> {
    record(&ctx, "record_visit", &page).await
}

/// Adds `amount` to the tally called `tally`; its jobs go to the `tallies`
/// queue and get 3 attempts unless the caller says otherwise.
#[task(
    identifier = "linked.add_to_tally",
    queue = "tallies",
    max_attempts = 3
)]
pub async fn add_to_tally(ctx: JobContext, tally: String, amount: i64) -> Result<(), sqlx::Error> {
    record(&ctx, "linked.add_to_tally", &format!("{tally}+{amount}")).await
}

async fn record(ctx: &JobContext, task: &str, detail: &str) -> Result<(), sqlx::Error> {
    sqlx::query("insert into linked_runs (task, detail, job_id, queue) values ($1, $2, $3, $4)")
        .bind(task)
        .bind(detail)
        .bind(ctx.job_id())
        .bind(ctx.job().queue_name.as_deref())
        .execute(ctx.utils().pool())
        .await?;
    Ok(())
}
