//! The migration runner: ledger, concurrency, take-over of older ledgers,
//! refusals, notifications, and coexistence with Node graphile-worker 0.18.

use std::time::{Duration, Instant};

mod common;

use chrono::{DateTime, Utc};
use common::{Captured, node_install};
use graphile_worker::{Error, JobSpec, MigrateError, WorkerUtils, quote_identifier};
use graphile_worker_dev::{TestDatabase, fresh_database, node};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

const SCHEMA: &str = "graphile_worker";
const OUR_BREAKING: [i32; 6] = [1, 3, 11, 13, 14, 16];
const REGISTRY_FUNCTIONS: [&str; 6] = [
    "worker_heartbeat",
    "worker_deregister",
    "list_stale_workers",
    "list_orphan_locked_workers",
    "recover_dead_worker_jobs",
    "delete_stale_workers",
];

fn sql(text: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(text)
}

async fn exec(pool: &PgPool, text: String) {
    sqlx::raw_sql(sql(text.clone()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{text}: {e}"));
}

/// The ledger as (id, ts, breaking), in id order.
async fn ledger(pool: &PgPool, schema: &str) -> Vec<(i32, DateTime<Utc>, bool)> {
    sqlx::query_as(sql(format!(
        "select id, ts, breaking from {}.migrations order by id",
        quote_identifier(schema)
    )))
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn ledger_ids(pool: &PgPool, schema: &str) -> Vec<i32> {
    ledger(pool, schema)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect()
}

/// Asserts that the ledger holds exactly migrations 1..=`last`.
async fn assert_ledger_upto(pool: &PgPool, schema: &str, last: i32) {
    assert_eq!(
        ledger_ids(pool, schema).await,
        (1..=last).collect::<Vec<_>>()
    );
}

async fn breaking_ids(pool: &PgPool, schema: &str) -> Vec<i32> {
    ledger(pool, schema)
        .await
        .into_iter()
        .filter(|r| r.2)
        .map(|r| r.0)
        .collect()
}

/// Whether the worker-registry table and all six functions exist.
async fn registry_objects(pool: &PgPool, schema: &str) -> (bool, Vec<String>) {
    let table: bool = sqlx::query_scalar(
        "select exists (select from pg_class c join pg_namespace n on n.oid = c.relnamespace \
         where n.nspname = $1 and c.relname = '_private_workers' and c.relkind = 'r')",
    )
    .bind(schema)
    .fetch_one(pool)
    .await
    .unwrap();
    let functions: Vec<String> = sqlx::query_scalar(
        "select distinct p.proname::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
         where n.nspname = $1 and p.proname = any($2) order by 1",
    )
    .bind(schema)
    .bind(&REGISTRY_FUNCTIONS[..])
    .fetch_all(pool)
    .await
    .unwrap();
    (table, functions)
}

async fn assert_registry_present(pool: &PgPool, schema: &str) {
    let (table, functions) = registry_objects(pool, schema).await;
    assert!(table, "table _private_workers is missing in {schema:?}");
    let mut expected: Vec<String> = REGISTRY_FUNCTIONS.iter().map(|f| f.to_string()).collect();
    expected.sort();
    assert_eq!(
        functions, expected,
        "worker registry functions in {schema:?}"
    );
}

async fn relation_kind(pool: &PgPool, schema: &str, name: &str) -> Option<String> {
    sqlx::query_scalar(
        "select c.relkind::text from pg_class c join pg_namespace n on n.oid = c.relnamespace \
         where n.nspname = $1 and c.relname = $2",
    )
    .bind(schema)
    .bind(name)
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn function_exists(pool: &PgPool, schema: &str, name: &str) -> bool {
    sqlx::query_scalar(
        "select exists (select from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
         where n.nspname = $1 and p.proname = $2)",
    )
    .bind(schema)
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn utils(db: &TestDatabase, schema: &str) -> WorkerUtils {
    WorkerUtils::new(db.pool(2).await, schema)
}

/// Runs Node 0.18's `runOnce` with one task, `node_task`, that prints its
/// payload after `RAN `. Returns Node's standard output.
async fn node_run_once(db: &TestDatabase, schema: &str) -> String {
    node::run_js_ok(
        &db.url,
        schema,
        "const {runOnce}=require('graphile-worker');\
         runOnce({connectionString: process.env.DATABASE_URL, taskList: {\
           node_task: async (payload) => { console.log('RAN ' + JSON.stringify(payload)); }\
         }}).then(()=>process.exit(0),e=>{console.error(e);process.exit(1)})",
    )
    .await
}

/// Drops the ledger's `breaking` column, as in a ledger written before Node
/// 0.15.2.
async fn drop_the_breaking_column(pool: &PgPool) {
    exec(
        pool,
        "alter table graphile_worker.migrations drop column breaking".into(),
    )
    .await;
}

/// What taking over an older ledger leaves: our breaking rows marked, the
/// worker registry, and a schema that takes jobs.
async fn assert_taken_over(utils: &WorkerUtils) {
    assert_eq!(breaking_ids(utils.pool(), SCHEMA).await, OUR_BREAKING);
    assert_registry_present(utils.pool(), SCHEMA).await;
    utils
        .add_raw_job("after_takeover", serde_json::json!({}), JobSpec::default())
        .await
        .unwrap();
}

/// A fresh database with our schema `SCHEMA`, and utils on it.
async fn our_install() -> (TestDatabase, WorkerUtils) {
    let db = fresh_database().await;
    let utils = utils(&db, SCHEMA).await;
    utils.migrate().await.unwrap();
    (db, utils)
}

/// A fresh database migrated up to migration `last` (with its pool).
async fn migrated_until(last: i32) -> (TestDatabase, PgPool) {
    let db = fresh_database().await;
    let pool = db.pool(2).await;
    graphile_worker::testing::migrate_until(&pool, SCHEMA, last)
        .await
        .unwrap();
    (db, pool)
}

/// Stands in for a newer version: a migration 21 in the ledger.
async fn add_migration_21(pool: &PgPool, breaking: bool) {
    exec(
        pool,
        format!("insert into graphile_worker.migrations (id, breaking) values (21, {breaking})"),
    )
    .await;
}

/// Runs `n` migrators at once, each on a connection of its own; each must
/// succeed.
async fn migrate_concurrently(db: &TestDatabase, n: usize) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let pool = db.pool(1).await;
        tasks.push(tokio::spawn(async move {
            WorkerUtils::new(pool, SCHEMA).migrate().await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

async fn job_count(pool: &PgPool, schema: &str) -> i64 {
    sqlx::query_scalar(sql(format!(
        "select count(*) from {}.jobs",
        quote_identifier(schema)
    )))
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn fresh_install_writes_the_ledger_with_our_breaking_ids() {
    let (_db, utils) = our_install().await;

    let rows = ledger(utils.pool(), SCHEMA).await;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    assert_eq!(breaking_ids(utils.pool(), SCHEMA).await, OUR_BREAKING);
    // The ledger has exactly Node's shape.
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "select column_name::text, data_type::text, is_nullable::text \
         from information_schema.columns \
         where table_schema = 'graphile_worker' and table_name = 'migrations' \
         order by ordinal_position",
    )
    .fetch_all(utils.pool())
    .await
    .unwrap();
    assert_eq!(
        columns,
        [
            ("id".into(), "integer".into(), "NO".into()),
            ("ts".into(), "timestamp with time zone".into(), "NO".into()),
            ("breaking".into(), "boolean".into(), "NO".into()),
        ]
    );
    assert_registry_present(utils.pool(), SCHEMA).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_migrators_all_succeed() {
    let db = fresh_database().await;
    migrate_concurrently(&db, 20).await;
    let pool = db.pool(1).await;
    assert_ledger_upto(&pool, SCHEMA, 20).await;
    assert_eq!(breaking_ids(&pool, SCHEMA).await, OUR_BREAKING);
    assert_registry_present(&pool, SCHEMA).await;
}

/// A second migrator holds an uncommitted ledger row for migration 16 (the
/// one that renames the tables). Ours must have committed 1..15 one by one,
/// and must wait on its ledger insert for 16 before running anything of 16.
/// When the holder rolls back, ours runs 16 itself and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_row_comes_first_and_each_migration_commits_alone() {
    let db = fresh_database().await;
    let pool = db.pool(4).await;
    // A ledger prepared in advance (as for a restricted role).
    exec(
        &pool,
        "create schema graphile_worker; \
         create table graphile_worker.migrations(id int primary key, \
           ts timestamptz default now() not null, breaking boolean not null default false)"
            .into(),
    )
    .await;
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("insert into graphile_worker.migrations (id, breaking) values (16, false)")
        .execute(&mut *holder)
        .await
        .unwrap();

    let ours = WorkerUtils::new(db.pool(1).await, SCHEMA);
    let run = tokio::spawn(async move { ours.migrate().await });

    let deadline = Instant::now() + Duration::from_secs(60);
    let waiting_pid: i32 = loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "select pid from pg_stat_activity \
             where datname = current_database() and wait_event_type = 'Lock' \
             and query ilike '%migrations (id, breaking)%'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        if let Some(pid) = pid {
            break pid;
        }
        assert!(
            !run.is_finished(),
            "migrate finished without waiting on row 16"
        );
        assert!(Instant::now() < deadline, "migrate never waited on row 16");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // 1..15 are committed, each on its own.
    assert_ledger_upto(&pool, SCHEMA, 15).await;
    assert!(function_exists(&pool, SCHEMA, "force_unlock_workers").await);
    // The waiting transaction holds locks on the ledger only: nothing of
    // migration 16 ran before its ledger insert.
    let locked: Vec<String> = sqlx::query_scalar(
        "select distinct c.relname::text from pg_locks l join pg_class c on c.oid = l.relation \
         where l.pid = $1 and l.granted order by 1",
    )
    .bind(waiting_pid)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        locked
            .iter()
            .all(|r| r == "migrations" || r == "migrations_pkey"),
        "the waiting migrator holds locks on {locked:?}"
    );
    // So the tables 16 renames are free to read, under their old names.
    let mut reader = pool.begin().await.unwrap();
    sqlx::query("set local lock_timeout = '2s'")
        .execute(&mut *reader)
        .await
        .unwrap();
    let jobs: i64 = sqlx::query_scalar("select count(*) from graphile_worker.jobs")
        .fetch_one(&mut *reader)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
    reader.rollback().await.unwrap();

    holder.rollback().await.unwrap();
    run.await.unwrap().unwrap();
    assert_ledger_upto(&pool, SCHEMA, 20).await;
    assert_eq!(breaking_ids(&pool, SCHEMA).await, OUR_BREAKING);
}

#[tokio::test]
async fn migrating_again_changes_nothing_and_keeps_jobs() {
    let (db, utils) = our_install().await;
    let job = utils
        .add_raw_job(
            "keep_me",
            serde_json::json!({"a": 1}),
            JobSpec {
                job_key: Some("k".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let before = ledger(utils.pool(), SCHEMA).await;

    utils.migrate().await.unwrap();
    WorkerUtils::new(db.pool(1).await, SCHEMA)
        .migrate()
        .await
        .unwrap();

    assert_eq!(ledger(utils.pool(), SCHEMA).await, before);
    let (id, key, payload): (i64, Option<String>, serde_json::Value) =
        sqlx::query_as("select id, key, payload from graphile_worker._private_jobs")
            .fetch_one(utils.pool())
            .await
            .unwrap();
    assert_eq!((id, key.as_deref()), (job.id, Some("k")));
    assert_eq!(payload, serde_json::json!({"a": 1}));
}

/// Node 0.18 installs; the `breaking` column is then dropped, as in a ledger
/// written before Node 0.15.2. We adopt it and mark our breaking rows.
#[tokio::test]
async fn takes_over_a_node_ledger_without_the_breaking_column() {
    let db = fresh_database().await;
    node_install(&db, SCHEMA).await;
    let pool = db.pool(2).await;
    drop_the_breaking_column(&pool).await;
    let ts_before: Vec<DateTime<Utc>> =
        sqlx::query_scalar("select ts from graphile_worker.migrations order by id")
            .fetch_all(&pool)
            .await
            .unwrap();

    let utils = WorkerUtils::new(pool.clone(), SCHEMA);
    utils.migrate().await.unwrap();

    let rows = ledger(&pool, SCHEMA).await;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), ts_before);
    assert_taken_over(&utils).await;
}

/// An older ledger (rows 1..10, no `breaking` column) is adopted and the
/// remaining migrations 11..20 really run.
#[tokio::test]
async fn takes_over_an_old_ledger_and_applies_the_rest() {
    let (_db, pool) = migrated_until(10).await;
    assert_ledger_upto(&pool, SCHEMA, 10).await;
    drop_the_breaking_column(&pool).await;

    let utils = WorkerUtils::new(pool.clone(), SCHEMA);
    utils.migrate().await.unwrap();

    assert_ledger_upto(&pool, SCHEMA, 20).await;
    assert_eq!(
        relation_kind(&pool, SCHEMA, "_private_jobs")
            .await
            .as_deref(),
        Some("r")
    );
    assert_eq!(
        relation_kind(&pool, SCHEMA, "jobs").await.as_deref(),
        Some("v")
    );
    assert_taken_over(&utils).await;
}

#[tokio::test]
async fn migration_11_refuses_recently_locked_jobs() {
    let (_db, pool) = migrated_until(10).await;
    // At revision 10 jobs live in the old `jobs` table.
    exec(
        &pool,
        "select graphile_worker.add_job('old_task', '{\"n\": 1}'::json); \
         update graphile_worker.jobs set locked_at = now(), locked_by = 'worker-old'"
            .into(),
    )
    .await;

    let utils = WorkerUtils::new(pool.clone(), SCHEMA);
    let err = utils.migrate().await.unwrap_err();
    let Error::Migrate(MigrateError::LockedJobs { source }) = &err else {
        panic!("expected MigrateError::LockedJobs, got {err:?}");
    };
    let code = source
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("22012"), "cause: {source}");
    let message = err.to_string();
    assert!(message.contains("locked jobs"), "{message}");
    assert!(message.contains("migration 11"), "{message}");
    // It says what to do.
    assert!(message.contains("locked_at"), "{message}");
    assert!(message.contains("migrate again"), "{message}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the database error is kept as the cause"
    );

    // Migration 11 was rolled back as a whole; 1..10 stay.
    assert_ledger_upto(&pool, SCHEMA, 10).await;
    assert_eq!(
        relation_kind(&pool, SCHEMA, "jobs").await.as_deref(),
        Some("r")
    );
    assert_eq!(relation_kind(&pool, SCHEMA, "_private_jobs").await, None);

    // Once the job is unlocked, the upgrade goes through and keeps the job.
    exec(
        &pool,
        "update graphile_worker.jobs set locked_at = null, locked_by = null".into(),
    )
    .await;
    utils.migrate().await.unwrap();
    assert_ledger_upto(&pool, SCHEMA, 20).await;
    let (task, payload): (String, serde_json::Value) = sqlx::query_as(
        "select t.identifier, j.payload from graphile_worker._private_jobs j \
             join graphile_worker._private_tasks t on t.id = j.task_id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(task, "old_task");
    assert_eq!(payload, serde_json::json!({"n": 1}));
}

#[tokio::test]
async fn a_newer_breaking_migration_is_refused_and_nothing_changes() {
    let (_db, pool) = migrated_until(15).await;
    add_migration_21(&pool, true).await;
    let before = ledger(&pool, SCHEMA).await;

    let err = WorkerUtils::new(pool.clone(), SCHEMA)
        .migrate()
        .await
        .unwrap_err();
    match &err {
        Error::Migrate(MigrateError::DatabaseTooNew {
            latest,
            latest_breaking,
            highest,
        }) => assert_eq!((*latest, *latest_breaking, *highest), (21, 21, 20)),
        other => panic!("expected DatabaseTooNew, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("21") && message.contains("20"),
        "{message}"
    );

    assert_eq!(ledger(&pool, SCHEMA).await, before);
    // Migration 16 (the rename) did not run, nor did the registry step.
    assert_eq!(
        relation_kind(&pool, SCHEMA, "jobs").await.as_deref(),
        Some("r")
    );
    assert_eq!(relation_kind(&pool, SCHEMA, "_private_workers").await, None);
}

#[tokio::test]
async fn a_newer_non_breaking_migration_only_warns() {
    let (_db, utils) = our_install().await;
    let pool = utils.pool().clone();
    add_migration_21(&pool, false).await;
    let before = ledger(&pool, SCHEMA).await;

    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded, so the whole migration runs on
    // this thread under this subscriber.
    let guard = tracing::subscriber::set_default(subscriber);
    let result = utils.migrate().await;
    drop(guard);
    result.unwrap();

    let log = captured.text();
    let warning = log
        .lines()
        .find(|l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning logged; log:\n{log}"));
    assert!(
        warning.contains("21") && warning.contains("20"),
        "{warning}"
    );
    assert_eq!(ledger(&pool, SCHEMA).await, before);
}

/// On a database past our last migration (a newer Node installed 21), a
/// missing worker registry is created alone: our migration 20 as a whole
/// would replace that version's add_job/add_jobs with ours.
#[tokio::test]
async fn past_migration_20_only_the_registry_is_created() {
    let (_db, utils) = our_install().await;
    let pool = utils.pool().clone();
    // Stand in for a newer Node: a migration 21 in the ledger, an add_jobs
    // of its own, and no registry.
    add_migration_21(&pool, false).await;
    exec(&pool, "drop table graphile_worker._private_workers".into()).await;
    let newer: String =
        sqlx::query_scalar("select pg_get_functiondef('graphile_worker.add_jobs'::regproc)")
            .fetch_one(&pool)
            .await
            .unwrap();
    exec(
        &pool,
        "create or replace function graphile_worker.add_jobs(specs graphile_worker.job_spec[], \
               job_key_preserve_run_at boolean default false) \
             returns setof graphile_worker._private_jobs language sql as $$ select * from \
               graphile_worker._private_jobs where false $$"
            .into(),
    )
    .await;
    let replaced: String =
        sqlx::query_scalar("select pg_get_functiondef('graphile_worker.add_jobs'::regproc)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_ne!(newer, replaced);

    utils.migrate().await.unwrap();
    assert_registry_present(&pool, SCHEMA).await;
    let after: String =
        sqlx::query_scalar("select pg_get_functiondef('graphile_worker.add_jobs'::regproc)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(after, replaced, "the newer add_jobs was left alone");
}

/// A schema name that would end the migrations' `$body$` quoting is refused
/// with a clear error, and nothing is created.
#[tokio::test]
async fn a_schema_name_holding_the_body_quote_is_refused() {
    let db = fresh_database().await;
    let pool = db.pool(2).await;
    let name = "x$body$y";
    let err = WorkerUtils::new(pool.clone(), name)
        .migrate()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid schema name \"x$body$y\": it contains `$body$`, which the migrations use to quote function bodies; choose a non-empty name of at most 63 bytes without NUL or `$body$`"
    );
    let schemas: i64 = sqlx::query_scalar("select count(*) from pg_namespace where nspname = $1")
        .bind(name)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(schemas, 0);
}

#[tokio::test]
async fn each_migration_is_announced_on_worker_migrate() {
    let db = fresh_database().await;
    let mut listener = PgListener::connect(&db.url).await.unwrap();
    listener.listen("worker:migrate").await.unwrap();
    WorkerUtils::new(db.pool(1).await, SCHEMA)
        .migrate()
        .await
        .unwrap();

    let mut payloads = Vec::new();
    while payloads.len() < 20 {
        let n = tokio::time::timeout(Duration::from_secs(30), listener.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} notifications: {payloads:?}", payloads.len()))
            .unwrap();
        assert_eq!(n.channel(), "worker:migrate");
        payloads.push(n.payload().to_owned());
    }
    for (i, payload) in payloads.iter().enumerate() {
        let number = i as i32 + 1;
        let breaking = OUR_BREAKING.contains(&number);
        assert_eq!(
            payload,
            &format!(r#"{{"migrationNumber":{number},"breaking":{breaking},"schema":"{SCHEMA}"}}"#)
        );
    }
}

#[tokio::test]
async fn node_installed_database_gets_our_worker_registry() {
    let db = fresh_database().await;
    node_install(&db, SCHEMA).await;
    let pool = db.pool(2).await;
    let before = ledger(&pool, SCHEMA).await;
    // Node's own migration 20 has no worker registry.
    assert_eq!(registry_objects(&pool, SCHEMA).await, (false, vec![]));

    let utils = WorkerUtils::new(pool.clone(), SCHEMA);
    utils.migrate().await.unwrap();

    assert_registry_present(&pool, SCHEMA).await;
    // The ledger is Node's, untouched (Node marks 19 breaking too).
    assert_eq!(ledger(&pool, SCHEMA).await, before);
    assert_eq!(
        breaking_ids(&pool, SCHEMA).await,
        [1, 3, 11, 13, 14, 16, 19]
    );
    // The registry works.
    exec(
        &pool,
        "select graphile_worker.worker_heartbeat('worker-a')".into(),
    )
    .await;
    let workers: i64 = sqlx::query_scalar("select count(*) from graphile_worker._private_workers")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(workers, 1);
    // Running again is a no-op.
    utils.migrate().await.unwrap();
    assert_eq!(ledger(&pool, SCHEMA).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrators_add_the_registry_to_a_node_install_once() {
    let db = fresh_database().await;
    node_install(&db, SCHEMA).await;
    migrate_concurrently(&db, 20).await;
    let pool = db.pool(1).await;
    assert_registry_present(&pool, SCHEMA).await;
    assert_ledger_upto(&pool, SCHEMA, 20).await;
}

#[tokio::test]
async fn node_worker_runs_a_job_we_added() {
    let (db, utils) = our_install().await;
    utils
        .add_raw_job(
            "node_task",
            serde_json::json!({"n": 42}),
            JobSpec::default(),
        )
        .await
        .unwrap();

    let stdout = node_run_once(&db, SCHEMA).await;
    assert!(stdout.contains(r#"RAN {"n":42}"#), "node output:\n{stdout}");
    assert_eq!(job_count(utils.pool(), SCHEMA).await, 0);
    // Node found nothing to migrate.
    assert_ledger_upto(utils.pool(), SCHEMA, 20).await;
}

#[tokio::test]
async fn a_schema_name_with_a_quote_and_a_space_works_end_to_end() {
    let schema = "gw \"odd\" schema";
    let db = fresh_database().await;
    let mut listener = PgListener::connect(&db.url).await.unwrap();
    listener.listen("worker:migrate").await.unwrap();
    let utils = utils(&db, schema).await;
    utils.migrate().await.unwrap();
    utils.migrate().await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.payload(),
        r#"{"migrationNumber":1,"breaking":true,"schema":"gw \"odd\" schema"}"#
    );

    assert_ledger_upto(utils.pool(), schema, 20).await;
    assert_eq!(breaking_ids(utils.pool(), schema).await, OUR_BREAKING);
    assert_registry_present(utils.pool(), schema).await;

    let keyed = JobSpec {
        job_key: Some("odd-key".into()),
        queue_name: Some("odd queue".into()),
        ..Default::default()
    };
    utils
        .add_raw_job("node_task", serde_json::json!({"n": 1}), keyed.clone())
        .await
        .unwrap();
    let job = utils
        .add_raw_job("node_task", serde_json::json!({"n": 2}), keyed)
        .await
        .unwrap();
    assert_eq!(job.revision, 1);
    assert_eq!(job.queue_name.as_deref(), Some("odd queue"));
    assert_eq!(job_count(utils.pool(), schema).await, 1);

    let stdout = node_run_once(&db, schema).await;
    assert!(stdout.contains(r#"RAN {"n":2}"#), "node output:\n{stdout}");
    assert_eq!(job_count(utils.pool(), schema).await, 0);
    assert_ledger_upto(utils.pool(), schema, 20).await;
}
