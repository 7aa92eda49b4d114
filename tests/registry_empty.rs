//! A binary that links no `#[task]`: the registry is empty, and a worker
//! built from it refuses to start with a hint about linking the tasks crate.
//!
//! The root package has `graphile-worker-linked-tasks` as a dev-dependency,
//! so this binary could use its tasks; it never names the crate, so they are
//! not linked and not registered. (`registry_linked_tasks.rs` names it.)

mod common;

use common::{from_registry_error, run_sql};
use graphile_worker::{Error, JobContext, JobSpec, Task, TaskError, Worker};
use graphile_worker_dev::fresh_database;

#[test]
fn a_tasks_crate_that_is_never_named_registers_nothing() {
    let identifiers: Vec<&str> = graphile_worker::registered_tasks()
        .map(|t| t.identifier())
        .collect();
    assert!(identifiers.is_empty(), "{identifiers:?}");
}

#[tokio::test]
async fn from_registry_with_no_tasks_fails_to_start_with_the_linking_hint() {
    let db = fresh_database().await;

    let err = from_registry_error(&db.url).await;

    assert!(matches!(err, Error::NoTasks), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("use my_tasks as _;"), "{message}");
    assert!(message.contains("#[task]"), "{message}");
}

#[tokio::test]
async fn options_with_nothing_registered_fail_the_same_way() {
    let db = fresh_database().await;
    let err = Worker::options()
        .database_url(&db.url)
        .init()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoTasks), "{err:?}");
}

/// Implemented by hand: a worker can run it with an empty registry.
#[derive(serde::Serialize, serde::Deserialize)]
struct Shout {
    text: String,
}

impl Task for Shout {
    const IDENTIFIER: &'static str = "shout";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        sqlx::query("insert into shouts (text) values ($1)")
            .bind(self.text.to_uppercase())
            .execute(ctx.utils().pool())
            .await
            .map_err(|e| TaskError::new(e.to_string()))?;
        Ok(())
    }
}

#[tokio::test]
async fn a_hand_registered_task_runs_without_any_registry_entry() {
    let db = fresh_database().await;
    let pool = db.pool(5).await;
    run_sql(&pool, "create table shouts (text text not null)").await;

    let worker = Worker::from_registry()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<Shout>()
        .init()
        .await
        .unwrap();
    worker
        .utils()
        .add_job(
            Shout {
                text: "hello".into(),
            },
            JobSpec::default(),
        )
        .await
        .unwrap();
    worker.run_once().await.unwrap();

    let shouts: Vec<String> = sqlx::query_scalar("select text from shouts")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(shouts, ["HELLO"]);
}
