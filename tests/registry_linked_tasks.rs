//! `Worker::from_registry()` with tasks defined in another crate of the
//! workspace (`tests/linked-tasks`), which this binary links like an
//! application links its tasks crate: it runs them, `only`/`except` select a
//! subset, and hand-written tasks registered with `register::<T>()` run
//! alongside.

mod common;

use common::{assert_clash_with_linked_record_visit, migrated, run_sql};
use graphile_worker::{Error, JobContext, JobSpec, Task, TaskError, Worker, WorkerOptions, task};
use graphile_worker_linked_tasks::{AddToTally, RUNS_TABLE_SQL, RecordVisit};
use sqlx::PgPool;

// What an application writes in main.rs when it names nothing else from its
// tasks crate.
use graphile_worker_linked_tasks as _;

/// A task of the binary itself, beside the linked ones.
#[task]
async fn local_note(ctx: JobContext, note: String) -> Result<(), sqlx::Error> {
    sqlx::query("insert into linked_runs (task, detail, job_id) values ('local_note', $1, $2)")
        .bind(note)
        .bind(ctx.job_id())
        .execute(ctx.utils().pool())
        .await?;
    Ok(())
}

/// A task implemented by hand, without the macro; not in the registry.
#[derive(serde::Serialize, serde::Deserialize)]
struct HandWritten {
    word: String,
}

impl Task for HandWritten {
    const IDENTIFIER: &'static str = "hand_written";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        sqlx::query("insert into linked_runs (task, detail, job_id) values ($1, $2, $3)")
            .bind(Self::IDENTIFIER)
            .bind(&self.word)
            .bind(ctx.job_id())
            .execute(ctx.utils().pool())
            .await
            .map_err(|e| TaskError::new(e.to_string()))?;
        Ok(())
    }
}

/// A hand-written task that takes an identifier the linked crate has.
#[derive(serde::Serialize, serde::Deserialize)]
struct Impostor {}

impl Task for Impostor {
    const IDENTIFIER: &'static str = "record_visit";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Ok(())
    }
}

fn worker(pool: &PgPool) -> WorkerOptions {
    Worker::from_registry()
        .pg_pool(pool.clone())
        .handle_signals(false)
}

/// Starts a worker with `options` and runs what it can, once.
async fn run_once(options: WorkerOptions) {
    options.init().await.unwrap().run_once().await.unwrap();
}

async fn setup() -> (
    graphile_worker_dev::TestDatabase,
    PgPool,
    graphile_worker::WorkerUtils,
) {
    let (db, pool, utils) = migrated().await;
    run_sql(&pool, RUNS_TABLE_SQL).await;
    (db, pool, utils)
}

/// (task, detail, queue) of every run, in the order they ran.
async fn runs(pool: &PgPool) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as("select task, detail, queue from linked_runs order by id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Identifiers of the jobs still in the table.
async fn waiting(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("select task_identifier from graphile_worker.jobs order by id")
        .fetch_all(pool)
        .await
        .unwrap()
}

fn visit(page: &str) -> RecordVisit {
    RecordVisit { page: page.into() }
}

fn tally(amount: i64) -> AddToTally {
    AddToTally {
        tally: "daily".into(),
        amount,
    }
}

#[test]
fn the_registry_holds_the_linked_crates_tasks_with_their_source_locations() {
    let mut found: Vec<(&str, String)> = graphile_worker::registered_tasks()
        .map(|t| (t.identifier(), t.location()))
        .collect();
    found.sort();
    let identifiers: Vec<&str> = found.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        identifiers,
        ["linked.add_to_tally", "local_note", "record_visit"]
    );
    let location = |id: &str| found.iter().find(|(i, _)| *i == id).unwrap().1.clone();
    assert!(
        location("record_visit").starts_with("tests/linked-tasks/src/lib.rs:"),
        "{found:?}"
    );
    assert!(
        location("local_note").starts_with("tests/registry_linked_tasks.rs:"),
        "{found:?}"
    );
}

#[tokio::test]
async fn from_registry_runs_the_typed_jobs_of_the_linked_crate() {
    let (_db, pool, utils) = setup().await;

    // Priorities fix the order the single slot runs them in.
    let first = JobSpec {
        priority: Some(-1),
        ..JobSpec::default()
    };
    RecordVisit::enqueue_with(&utils, visit("/home"), first)
        .await
        .unwrap();
    let tally_job = AddToTally::enqueue(&utils, tally(5)).await.unwrap();
    assert_eq!(tally_job.task_identifier, "linked.add_to_tally");
    assert_eq!(tally_job.max_attempts, 3, "the task's default");
    let later = JobSpec {
        priority: Some(1),
        ..JobSpec::default()
    };
    utils
        .add_job(LocalNote { note: "hi".into() }, later)
        .await
        .unwrap();

    run_once(worker(&pool)).await;

    assert_eq!(
        runs(&pool).await,
        [
            ("record_visit".into(), "/home".into(), None),
            (
                "linked.add_to_tally".into(),
                "daily+5".into(),
                Some("tallies".into())
            ),
            ("local_note".into(), "hi".into(), None),
        ]
    );
    assert!(waiting(&pool).await.is_empty(), "every job completed");
}

#[tokio::test]
async fn typed_jobs_enqueued_in_a_rolled_back_transaction_never_run() {
    let (_db, pool, utils) = setup().await;

    let mut tx = pool.begin().await.unwrap();
    let added = RecordVisit::enqueue_many_in(&utils, &mut *tx, [visit("/a"), visit("/b")])
        .await
        .unwrap();
    assert_eq!(added, 2);
    tx.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    RecordVisit::enqueue_in(&utils, &mut *tx, visit("/c"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    run_once(worker(&pool)).await;

    assert_eq!(
        runs(&pool).await,
        [("record_visit".into(), "/c".into(), None)]
    );
}

#[tokio::test]
async fn only_runs_the_named_tasks_and_leaves_the_others_waiting() {
    let (_db, pool, utils) = setup().await;
    RecordVisit::enqueue(&utils, visit("/x")).await.unwrap();
    AddToTally::enqueue(&utils, tally(1)).await.unwrap();
    LocalNote::enqueue(&utils, LocalNote { note: "n".into() })
        .await
        .unwrap();

    run_once(worker(&pool).only(&["linked.add_to_tally"])).await;

    assert_eq!(
        runs(&pool).await,
        [(
            "linked.add_to_tally".into(),
            "daily+1".into(),
            Some("tallies".into())
        )]
    );
    assert_eq!(waiting(&pool).await, ["record_visit", "local_note"]);
    let attempts: Vec<i16> = sqlx::query_scalar("select attempts from graphile_worker.jobs")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, [0, 0], "the other tasks' jobs were never claimed");
}

#[tokio::test]
async fn except_runs_every_other_task() {
    let (_db, pool, utils) = setup().await;
    RecordVisit::enqueue(&utils, visit("/y")).await.unwrap();
    AddToTally::enqueue(&utils, tally(2)).await.unwrap();
    LocalNote::enqueue(&utils, LocalNote { note: "m".into() })
        .await
        .unwrap();

    run_once(worker(&pool).except(&["record_visit", "local_note"])).await;

    let ran: Vec<String> = runs(&pool).await.into_iter().map(|r| r.0).collect();
    assert_eq!(ran, ["linked.add_to_tally"]);
    assert_eq!(waiting(&pool).await, ["record_visit", "local_note"]);
}

#[tokio::test]
async fn only_and_except_refuse_a_name_no_task_has() {
    let (_db, pool, _utils) = setup().await;

    for options in [
        worker(&pool).only(&["record_visit", "record_visits"]),
        worker(&pool).except(&["record_visits"]),
    ] {
        let err = options.init().await.unwrap_err();
        assert!(
            matches!(&err, Error::UnknownTask(name) if name == "record_visits"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "no registered task is called `record_visits`; check the name given to only(), except() or task_policy()"
        );
    }
}

#[tokio::test]
async fn excepting_every_task_leaves_none_to_run() {
    let (_db, pool, _utils) = setup().await;
    let err = worker(&pool)
        .except(&["record_visit", "linked.add_to_tally", "local_note"])
        .init()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoTasksLeft { .. }), "{err:?}");
}

#[tokio::test]
async fn a_hand_written_task_runs_alongside_the_registry() {
    let (_db, pool, utils) = setup().await;
    utils
        .add_job(
            HandWritten {
                word: "manual".into(),
            },
            JobSpec::default(),
        )
        .await
        .unwrap();
    RecordVisit::enqueue(&utils, visit("/z")).await.unwrap();

    run_once(worker(&pool).register::<HandWritten>()).await;

    let mut ran: Vec<(String, String)> = runs(&pool)
        .await
        .into_iter()
        .map(|(task, detail, _)| (task, detail))
        .collect();
    ran.sort();
    assert_eq!(
        ran,
        [
            ("hand_written".into(), "manual".into()),
            ("record_visit".into(), "/z".into())
        ]
    );
}

#[tokio::test]
async fn a_registered_task_taking_a_linked_identifier_is_a_duplicate() {
    let (_db, pool, _utils) = setup().await;
    let register_line = line!() + 1;
    let options = worker(&pool).register::<Impostor>();

    let err = options.init().await.unwrap_err();

    assert_clash_with_linked_record_visit(
        &err,
        &format!("tests/registry_linked_tasks.rs:{register_line}"),
    );
}
