//! anyhow-style errors: a boxed `dyn Error`, with `?` on other errors.

use graphile_worker::{IntoTaskResult, JobContext, Task, TaskError, task};

#[task]
async fn parse_count(
    ctx: JobContext,
    text: String,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let count: u32 = text.parse()?;
    if count as i64 > ctx.job_id() {
        return Err("too many".into());
    }
    Ok(())
}

/// `TaskError` itself works as the error type.
#[task]
async fn always_fails(reason: String) -> Result<(), TaskError> {
    Err(TaskError::new(reason))
}

fn main() {
    assert_eq!(ParseCount::IDENTIFIER, "parse_count");
    assert_eq!(AlwaysFails::IDENTIFIER, "always_fails");
    let boxed: Result<(), Box<dyn std::error::Error + Send + Sync>> = Err("boom".into());
    assert_eq!(boxed.into_task_result().unwrap_err().message(), "boom");
}
