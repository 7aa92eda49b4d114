//! Shared state for tasks: values registered with `WorkerOptions::data`
//! reach tasks, and a worker whose task asks for a value nobody registered
//! refuses to start, naming the task and the type.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{add_job, migrated};
use graphile_worker::{
    DataRequirement, Error, JobContext, JobSpec, Task, TaskError, Worker, WorkerOptions,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;

/// Stands in for an SMTP client: counts what it sent.
#[derive(Default)]
struct Mailer {
    sent: Arc<AtomicUsize>,
}

/// A hand-written task reaching the mailer through its context.
#[derive(Serialize, Deserialize)]
struct Notify {
    to: String,
}

impl Task for Notify {
    const IDENTIFIER: &'static str = "notify";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        let mailer = ctx.data::<Mailer>()?;
        mailer.sent.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn required_data() -> Vec<DataRequirement> {
        vec![DataRequirement::of::<Mailer>()]
    }
}

/// A `#[task]` taking the mailer as a `Data` parameter.
#[graphile_worker::task]
async fn welcome(mailer: graphile_worker::Data<Mailer>, ctx: JobContext, name: String) {
    assert_eq!(ctx.job().payload["name"], name);
    mailer.sent.fetch_add(10, Ordering::SeqCst);
}

fn worker(pool: &PgPool) -> WorkerOptions {
    Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<Notify>()
        .register::<Welcome>()
}

#[tokio::test]
async fn registered_values_reach_hand_written_and_macro_tasks() {
    let (_db, pool, utils) = migrated().await;
    add_job(
        &utils,
        "notify",
        json!({"to": "a@example.com"}),
        JobSpec::default(),
    )
    .await;
    Welcome::enqueue(&utils, Welcome { name: "Ada".into() })
        .await
        .unwrap();
    let mailer = Mailer::default();
    let sent = mailer.sent.clone();
    let w = worker(&pool)
        .data(String::from("another value, found by its own type"))
        .data(mailer)
        .init()
        .await
        .unwrap();
    w.run_once().await.unwrap();
    assert_eq!(
        sent.load(Ordering::SeqCst),
        11,
        "both tasks used the mailer"
    );
    let left: i64 = sqlx::query_scalar("select count(*) from graphile_worker.jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "both jobs succeeded");
}

#[tokio::test]
async fn a_task_asking_for_an_unregistered_value_stops_init() {
    let (_db, pool, _utils) = migrated().await;
    let err = worker(&pool).init().await.unwrap_err();
    assert!(matches!(err, Error::MissingData { .. }), "{err:?}");
    let text = err.to_string();
    let expected_one_of = [
        "task `notify` takes `Data<task_data::Mailer>`, but the worker has no value of that type; register one with WorkerOptions::data(value)",
        "task `welcome` takes `Data<task_data::Mailer>`, but the worker has no value of that type; register one with WorkerOptions::data(value)",
    ];
    assert!(expected_one_of.contains(&text.as_str()), "{text}");
}
