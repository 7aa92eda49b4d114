//! Our migrations build the same schema as Node graphile-worker 0.18: after a
//! full install, after a Node install continued by ours, and after every
//! single migration. Plus the SQL behaviour that the catalog cannot show:
//! one row per spec from `add_jobs` (also when a worker locks the keyed job
//! mid-call, upstream issue #580), flags, notifications, migration 11's
//! locked-jobs guard and data copy, and the worker registry functions.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::node_install;
use graphile_worker::{JobKeyMode, JobSpec, WorkerUtils, quote_identifier};
use graphile_worker_dev::{TestDatabase, fresh_database, node};
use sqlx::postgres::PgListener;
use sqlx::{AssertSqlSafe, PgPool};

const SCHEMA: &str = "graphile_worker";

/// The objects of our migration 20's worker registry, as catalog lines (see
/// [`catalog`]); everything else must be identical to Node's.
fn is_registry_line(line: &str) -> bool {
    const NAMES: [&str; 8] = [
        "_private_workers",
        "worker_heartbeat(",
        "worker_deregister(",
        "list_stale_workers(",
        "list_orphan_locked_workers(",
        "recover_dead_worker_jobs(",
        "delete_stale_workers(",
        "_private_workers_last_heartbeat_at_idx",
    ];
    let object = line.split_whitespace().nth(1).unwrap_or("");
    NAMES.iter().any(|n| object.starts_with(n))
}

/// One line per schema object and property, from the system catalogs, with
/// the schema name replaced by `SCHEMA`.
const CATALOG_SQL: &str = r#"
with ns as (select oid from pg_namespace where nspname = $1)
select format('relation %s kind=%s rls=%s force_rls=%s',
              c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity)
  from pg_class c
 where c.relnamespace = (select oid from ns)
union all
select format('column %s.%s position=%s type=%s not_null=%s default=%s identity=%s generated=%s',
              c.relname, a.attname,
              row_number() over (partition by c.oid order by a.attnum),
              format_type(a.atttypid, a.atttypmod), a.attnotnull,
              coalesce(pg_get_expr(d.adbin, d.adrelid), '-'), a.attidentity, a.attgenerated)
  from pg_attribute a
  join pg_class c on c.oid = a.attrelid
  left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
 where c.relnamespace = (select oid from ns) and a.attnum > 0 and not a.attisdropped
union all
select format('constraint %s on=%s type=%s def=%s',
              k.conname, coalesce(c.relname, '-'), k.contype, pg_get_constraintdef(k.oid))
  from pg_constraint k
  left join pg_class c on c.oid = k.conrelid
 where k.connamespace = (select oid from ns)
union all
select format('index %s %s', c.relname, pg_get_indexdef(i.indexrelid))
  from pg_index i
  join pg_class c on c.oid = i.indexrelid
 where c.relnamespace = (select oid from ns)
union all
select format('sequence %s type=%s start=%s increment=%s min=%s max=%s cache=%s cycle=%s owned_by=%s',
              c.relname, s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
              s.seqcache, s.seqcycle,
              coalesce((select format('%s.%s(%s)', r.relname, a.attname, dp.deptype)
                          from pg_depend dp
                          join pg_class r on r.oid = dp.refobjid
                          join pg_attribute a on a.attrelid = dp.refobjid and a.attnum = dp.refobjsubid
                         where dp.classid = 'pg_class'::regclass and dp.objid = c.oid
                           and dp.refclassid = 'pg_class'::regclass), '-'))
  from pg_sequence s
  join pg_class c on c.oid = s.seqrelid
 where c.relnamespace = (select oid from ns)
union all
select format('type %s typtype=%s relkind=%s',
              t.typname, t.typtype,
              coalesce((select c.relkind::text from pg_class c where c.oid = t.typrelid), '-'))
  from pg_type t
 where t.typnamespace = (select oid from ns) and t.typelem = 0
union all
select format('function %s(%s) identity=(%s) returns=%s language=%s strict=%s volatility=%s security_definer=%s kind=%s parallel=%s cost=%s rows=%s config=%s',
              p.proname, pg_get_function_arguments(p.oid),
              pg_get_function_identity_arguments(p.oid), pg_get_function_result(p.oid),
              l.lanname, p.proisstrict, p.provolatile, p.prosecdef, p.prokind, p.proparallel,
              p.procost, p.prorows, coalesce(p.proconfig::text, '-'))
  from pg_proc p
  join pg_language l on l.oid = p.prolang
 where p.pronamespace = (select oid from ns)
union all
select format('trigger %s on=%s %s', t.tgname, c.relname, pg_get_triggerdef(t.oid))
  from pg_trigger t
  join pg_class c on c.oid = t.tgrelid
 where c.relnamespace = (select oid from ns) and not t.tgisinternal
union all
select format('policy %s on=%s', po.polname, c.relname)
  from pg_policy po
  join pg_class c on c.oid = po.polrelid
 where c.relnamespace = (select oid from ns)
"#;

async fn catalog(pool: &PgPool, schema: &str) -> BTreeSet<String> {
    let lines: Vec<String> = sqlx::query_scalar(CATALOG_SQL)
        .bind(schema)
        .fetch_all(pool)
        .await
        .unwrap();
    assert!(!lines.is_empty(), "schema {schema:?} has no objects");
    let quoted = format!("{}.", quote_identifier(schema));
    let bare = format!("{schema}.");
    lines
        .into_iter()
        .map(|l| l.replace(&quoted, "SCHEMA.").replace(&bare, "SCHEMA."))
        .collect()
}

/// Asserts two catalogs are equal, listing the differences.
fn assert_same(
    left_name: &str,
    left: &BTreeSet<String>,
    right_name: &str,
    right: &BTreeSet<String>,
) {
    let only_left: Vec<_> = left.difference(right).collect();
    let only_right: Vec<_> = right.difference(left).collect();
    assert!(
        only_left.is_empty() && only_right.is_empty(),
        "schemas differ\nonly in {left_name}:\n  {}\nonly in {right_name}:\n  {}",
        only_left
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        only_right
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
    );
}

/// Splits off the registry lines, checking they are all there.
fn without_registry(catalog: &BTreeSet<String>) -> BTreeSet<String> {
    let registry: Vec<&String> = catalog.iter().filter(|l| is_registry_line(l)).collect();
    for expected in [
        "relation _private_workers kind=r",
        "index _private_workers_last_heartbeat_at_idx",
        "constraint _private_workers_pkey",
        "column _private_workers.id position=1 type=text not_null=t",
        "column _private_workers.last_heartbeat_at position=2 type=timestamp with time zone not_null=t",
        "column _private_workers.started_at position=3 type=timestamp with time zone not_null=t default=now()",
        "column _private_workers.metadata position=4 type=jsonb not_null=f",
        "function worker_heartbeat(worker_id text, metadata json DEFAULT NULL::json) identity=(worker_id text, metadata json) returns=void",
        "function worker_deregister(worker_id text) identity=(worker_id text) returns=void",
        "function list_stale_workers(stale_threshold interval) identity=(stale_threshold interval) returns=TABLE(worker_id text)",
        "function list_orphan_locked_workers(stale_threshold interval) identity=(stale_threshold interval) returns=TABLE(worker_id text)",
        "function recover_dead_worker_jobs(worker_ids text[], recovery_delay interval DEFAULT '00:00:00'::interval) identity=(worker_ids text[], recovery_delay interval) returns=integer",
        "function delete_stale_workers(worker_ids text[]) identity=(worker_ids text[]) returns=void",
    ] {
        assert!(
            registry.iter().any(|l| l.starts_with(expected)),
            "missing registry object {expected:?}; registry lines:\n{registry:#?}"
        );
    }
    catalog
        .iter()
        .filter(|l| !is_registry_line(l))
        .cloned()
        .collect()
}

async fn our_install(pool: &PgPool, schema: &str) {
    WorkerUtils::new(pool.clone(), schema)
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("migrate {schema:?}: {e}"));
}

async fn ledger_ids(pool: &PgPool, schema: &str) -> Vec<i32> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "select id from {}.migrations order by id",
        quote_identifier(schema)
    )))
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Two fresh databases, at once: one with Node's install of `schema`, one
/// with ours; each with a pool.
async fn node_and_our_installs(schema: &str) -> ((TestDatabase, PgPool), (TestDatabase, PgPool)) {
    let (node_db, our_db) = tokio::join!(fresh_database(), fresh_database());
    let (node_pool, our_pool) = tokio::join!(node_db.pool(2), our_db.pool(2));
    tokio::join!(
        node_install(&node_db, schema),
        our_install(&our_pool, schema)
    );
    ((node_db, node_pool), (our_db, our_pool))
}

#[tokio::test]
async fn fresh_install_matches_node_apart_from_the_worker_registry() {
    let ((_node_db, node_pool), (_our_db, our_pool)) = node_and_our_installs(SCHEMA).await;

    let node = catalog(&node_pool, SCHEMA).await;
    let ours = catalog(&our_pool, SCHEMA).await;
    assert!(!node.iter().any(|l| is_registry_line(l)));
    assert_same("node", &node, "ours", &without_registry(&ours));

    // Spot checks of the facts the comparison is about.
    for fact in [
        "constraint jobs_pkey1 on=_private_jobs type=p def=PRIMARY KEY (id)",
        "constraint jobs_key_key1 on=_private_jobs type=u def=UNIQUE (key)",
        "constraint job_queues_pkey1 on=_private_job_queues type=p def=PRIMARY KEY (id)",
        "sequence jobs_id_seq1 type=bigint start=1 increment=1 min=1 max=9223372036854775807 cache=1 cycle=f owned_by=_private_jobs.id(i)",
        "relation _private_jobs kind=r rls=t force_rls=f",
        "relation migrations kind=r rls=f force_rls=f",
    ] {
        assert!(ours.contains(fact), "missing {fact:?}");
    }
    assert!(!ours.iter().any(|l| l.starts_with("policy ")));
    assert!(!ours.iter().any(|l| l.starts_with("trigger ")));
    assert_eq!(
        ledger_ids(&our_pool, SCHEMA).await,
        (1..=20).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn node_install_continued_by_ours_only_gains_the_registry() {
    let ((_node_db, pool), (_our_db, our_pool)) = node_and_our_installs(SCHEMA).await;
    let before = catalog(&pool, SCHEMA).await;

    our_install(&pool, SCHEMA).await;
    let after = catalog(&pool, SCHEMA).await;
    assert_same("node", &before, "node then ours", &without_registry(&after));
    // Identical to our own fresh install, registry included.
    assert_same(
        "node then ours",
        &after,
        "ours",
        &catalog(&our_pool, SCHEMA).await,
    );
    assert_eq!(
        ledger_ids(&pool, SCHEMA).await,
        (1..=20).collect::<Vec<_>>()
    );

    // Running it again changes nothing.
    our_install(&pool, SCHEMA).await;
    assert_same(
        "first run",
        &after,
        "second run",
        &catalog(&pool, SCHEMA).await,
    );
}

/// The text of migration `n` from `dir`.
fn migration_file(dir: &std::path::Path, n: u32) -> String {
    let path = dir.join(format!("{n:06}.sql"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn our_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

fn node_sql_dir() -> PathBuf {
    node::node_dir().join("node_modules/graphile-worker/sql")
}

/// Applies migrations `range` from `dir` to `schema`, one transaction each,
/// the way both migrators do (without the ledger).
async fn apply(
    pool: &PgPool,
    schema: &str,
    dir: &std::path::Path,
    range: std::ops::RangeInclusive<u32>,
) {
    let quoted = quote_identifier(schema);
    sqlx::raw_sql(AssertSqlSafe(format!(
        "create schema if not exists {quoted}"
    )))
    .execute(pool)
    .await
    .unwrap();
    for n in range {
        let body = migration_file(dir, n).replace(":GRAPHILE_WORKER_SCHEMA", &quoted);
        let mut tx = pool.begin().await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(body))
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("migration {n} from {} on {schema}: {e}", dir.display()));
        tx.commit().await.unwrap();
    }
}

/// After every migration N, our 1..N and Node's 1..N leave the same objects;
/// and each one's 1..N continued by the other's N+1.. ends where the other
/// one's full history does.
#[tokio::test]
async fn every_migration_leaves_the_same_objects_as_nodes() {
    let db = fresh_database().await;
    let pool = db.pool(2).await;
    let (ours, node) = (our_dir(), node_sql_dir());

    apply(&pool, "full_node", &node, 1..=20).await;
    apply(&pool, "full_ours", &ours, 1..=20).await;
    let full_node = catalog(&pool, "full_node").await;
    let full_ours = catalog(&pool, "full_ours").await;
    assert_same(
        "node 1..20",
        &full_node,
        "ours 1..20",
        &without_registry(&full_ours),
    );

    for n in 1..=19 {
        let (node_n, ours_n) = (format!("node_upto_{n}"), format!("ours_upto_{n}"));
        apply(&pool, &node_n, &node, 1..=n).await;
        apply(&pool, &ours_n, &ours, 1..=n).await;
        assert_same(
            &format!("node 1..{n}"),
            &catalog(&pool, &node_n).await,
            &format!("ours 1..{n}"),
            &catalog(&pool, &ours_n).await,
        );

        // Node's database continued by our migrations, and the other way.
        apply(&pool, &node_n, &ours, n + 1..=20).await;
        assert_same(
            &format!("node 1..{n} + ours"),
            &catalog(&pool, &node_n).await,
            "ours 1..20",
            &full_ours,
        );
        apply(&pool, &ours_n, &node, n + 1..=20).await;
        assert_same(
            &format!("ours 1..{n} + node"),
            &catalog(&pool, &ours_n).await,
            "node 1..20",
            &full_node,
        );
    }

    // Our 20 is re-runnable, also over Node's own 20.
    apply(&pool, "full_ours", &ours, 20..=20).await;
    apply(&pool, "full_node", &ours, 20..=20).await;
    assert_same(
        "ours 20 twice",
        &catalog(&pool, "full_ours").await,
        "ours",
        &full_ours,
    );
    assert_same(
        "node 20 + ours 20",
        &catalog(&pool, "full_node").await,
        "ours",
        &full_ours,
    );
}

#[tokio::test]
async fn a_schema_name_with_quotes_and_spaces_installs_and_adds_jobs() {
    const ODD: &str = "gw \"odd\" schema";
    let ((_node_db, node_pool), (_our_db, pool)) = node_and_our_installs(ODD).await;
    assert_same(
        "node",
        &catalog(&node_pool, ODD).await,
        "ours",
        &without_registry(&catalog(&pool, ODD).await),
    );

    let utils = WorkerUtils::new(pool.clone(), ODD);
    let job = utils
        .add_raw_job(
            "send email",
            serde_json::json!({"to": "a@example.com"}),
            JobSpec {
                queue_name: Some("odd \"queue\"".into()),
                job_key: Some("odd key".into()),
                ..JobSpec::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(job.task_identifier, "send email");
    assert_eq!(job.queue_name.as_deref(), Some("odd \"queue\""));
    assert_eq!(job.payload, serde_json::json!({"to": "a@example.com"}));

    // A keyed replace and an unsafe_dedupe go through the other branches.
    let replaced = utils
        .add_raw_job(
            "send email",
            serde_json::json!({"to": "b@example.com"}),
            JobSpec {
                job_key: Some("odd key".into()),
                ..JobSpec::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((replaced.id, replaced.revision), (job.id, 1));
    assert_eq!(replaced.queue_name, None);
    let deduped = utils
        .add_raw_job(
            "send email",
            serde_json::json!({}),
            JobSpec {
                job_key: Some("odd key".into()),
                job_key_mode: Some(JobKeyMode::UnsafeDedupe),
                ..JobSpec::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((deduped.id, deduped.revision), (job.id, 2));

    let in_view: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "select count(*) from {}.jobs where task_identifier = 'send email'",
        quote_identifier(ODD)
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(in_view, 1);
}

/// Runs `sql` in its own transaction with the worker schema first on the
/// search path.
async fn query_rows<T>(pool: &PgPool, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let mut tx = pool.begin().await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "set local search_path = {SCHEMA}, public"
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    let rows = sqlx::query_as(AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    tx.commit().await.unwrap();
    rows
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "set search_path = {SCHEMA}, public; {sql}; reset search_path"
    )))
    .execute(pool)
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn our_database() -> (TestDatabase, PgPool) {
    let db = fresh_database().await;
    let pool = db.pool(5).await;
    our_install(&pool, SCHEMA).await;
    (db, pool)
}

#[tokio::test]
async fn add_jobs_returns_one_row_per_spec() {
    let (_db, pool) = our_database().await;
    // A running keyed job, a permanently failed keyed job, a pending keyed
    // job, and new jobs with and without keys and queues.
    exec(
        &pool,
        "select add_job('t', job_key => 'running');
         select add_job('t', job_key => 'dead', max_attempts => 1);
         select add_job('t', job_key => 'pending');
         update _private_jobs set locked_at = now(), locked_by = 'pool-x' where key = 'running';
         update _private_jobs set attempts = 1 where key = 'dead'",
    )
    .await;
    let rows: Vec<(i64, Option<String>, i32, Option<i32>)> = query_rows(
        &pool,
        "select id, key, revision, job_queue_id from add_jobs(array[
           ('t', null, null, null, null, 'running', null, null),
           ('t', null, null, null, null, 'dead', null, null),
           ('t', null, null, null, null, 'pending', null, null),
           ('t', null, 'q', null, null, 'new', null, null),
           ('u', null, 'q', null, null, null, null, null),
           ('u', null, null, null, null, null, null, null)
         ]::job_spec[])",
    )
    .await;
    assert_eq!(rows.len(), 6, "{rows:?}");
    let keys: BTreeSet<Option<&str>> = rows.iter().map(|r| r.1.as_deref()).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            None,
            Some("dead"),
            Some("new"),
            Some("pending"),
            Some("running")
        ])
    );
    let pending = rows
        .iter()
        .find(|r| r.1.as_deref() == Some("pending"))
        .unwrap();
    assert_eq!(pending.2, 1, "the pending job is updated in place");

    // The running and the dead job kept running/dead but gave up their keys.
    let retired: Vec<(Option<String>, i16, i16)> = query_rows(
        &pool,
        "select key, attempts, max_attempts from _private_jobs where key is null and task_id = \
         (select id from _private_tasks where identifier = 't') order by id",
    )
    .await;
    assert_eq!(retired, vec![(None, 25, 25), (None, 1, 1)]);
}

/// A statement trigger fired by add_jobs' "retire unavailable keyed jobs"
/// update locks the keyed job right after it, as a worker claiming it at
/// that moment would: the window of upstream issue #580.
async fn lock_keyed_job_mid_call(pool: &PgPool, key: &str) {
    exec(
        pool,
        &format!(
            "create or replace function test_lock_keyed_job() returns trigger language plpgsql as $$
             begin
               if pg_trigger_depth() = 1 then
                 update _private_jobs set locked_at = now(), locked_by = 'pool-racer'
                  where key = '{key}' and locked_at is null and revision = 0 and attempts = 0;
               end if;
               return null;
             end $$;
             create trigger race after update on _private_jobs
               for each statement execute function test_lock_keyed_job()"
        ),
    )
    .await;
}

#[tokio::test]
async fn add_job_and_add_jobs_survive_a_worker_locking_the_keyed_job_mid_call() {
    // Node's functions lose the job in this window ...
    let node_db = fresh_database().await;
    let node_pool = node_db.pool(2).await;
    node_install(&node_db, SCHEMA).await;
    exec(&node_pool, "select add_job('t', job_key => 'k')").await;
    lock_keyed_job_mid_call(&node_pool, "k").await;
    let node_row: Vec<(Option<i64>,)> =
        query_rows(&node_pool, "select id from add_job('t', job_key => 'k')").await;
    assert_eq!(node_row, vec![(None,)], "the trigger reproduces the race");

    // ... ours retire the now-locked job and insert a fresh one.
    let (_db, pool) = our_database().await;
    exec(&pool, "select add_job('t', job_key => 'k')").await;
    let first: Vec<(i64,)> = query_rows(&pool, "select id from _private_jobs").await;
    lock_keyed_job_mid_call(&pool, "k").await;
    let row: Vec<(Option<i64>, Option<String>, Option<String>)> = query_rows(
        &pool,
        "select id, key, locked_by from add_job('t', '{\"n\":2}', job_key => 'k')",
    )
    .await;
    assert_eq!(row.len(), 1);
    let (id, key, locked_by) = row[0].clone();
    assert!(id.is_some_and(|id| id != first[0].0), "{row:?}");
    assert_eq!((key.as_deref(), locked_by), (Some("k"), None));
    let old: Vec<(Option<String>, i16, Option<String>)> = query_rows(
        &pool,
        &format!(
            "select key, attempts, locked_by from _private_jobs where id = {}",
            first[0].0
        ),
    )
    .await;
    assert_eq!(old, vec![(None, 25, Some("pool-racer".to_owned()))]);

    // The same for add_jobs, next to a spec that is not affected.
    exec(
        &pool,
        "delete from _private_jobs; select add_job('t', job_key => 'k2')",
    )
    .await;
    exec(&pool, "drop trigger race on _private_jobs").await;
    lock_keyed_job_mid_call(&pool, "k2").await;
    let rows: Vec<(i64, Option<String>)> = query_rows(
        &pool,
        "select id, key from add_jobs(array[
           ('t', null, null, null, null, 'k2', null, null),
           ('t', null, null, null, null, 'other', null, null)
         ]::job_spec[])",
    )
    .await;
    let keys: BTreeSet<Option<String>> = rows.into_iter().map(|r| r.1).collect();
    assert_eq!(
        keys,
        BTreeSet::from([Some("k2".to_owned()), Some("other".to_owned())])
    );
}

/// The real race: workers claiming the keyed job while producers re-add
/// it. (Node's add_job returns all-NULL rows here, hundreds in a few
/// seconds.)
#[tokio::test]
async fn add_job_under_contention_always_returns_a_row() {
    let (_db, pool) = our_database().await;
    let done = Arc::new(AtomicBool::new(false));
    let claimer = {
        let (pool, done) = (pool.clone(), done.clone());
        tokio::spawn(async move {
            let mut claims = 0u64;
            while !done.load(Ordering::Relaxed) {
                claims += sqlx::query(
                    "update graphile_worker._private_jobs set locked_at = now(), locked_by = 'pool-claimer' \
                     where key = 'k' and locked_at is null",
                )
                .execute(&pool)
                .await
                .unwrap()
                .rows_affected();
            }
            claims
        })
    };
    let adders: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut lost = 0;
                for _ in 0..150 {
                    let id: Option<i64> = sqlx::query_scalar(
                        "select id from graphile_worker.add_job('t', job_key => 'k')",
                    )
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                    lost += usize::from(id.is_none());
                }
                lost
            })
        })
        .collect();
    let mut lost = 0;
    for adder in adders {
        lost += adder.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let claims = claimer.await.unwrap();
    assert_eq!(lost, 0, "add_job returned all-NULL rows");
    assert!(
        claims > 0,
        "the claimer never got a job; no contention tested"
    );
}

#[tokio::test]
async fn flags_become_an_object_of_trues() {
    let (_db, pool) = our_database().await;
    let rows: Vec<(Option<serde_json::Value>,)> = query_rows(
        &pool,
        "select flags from add_job('t', flags => array['a']) \
         union all select flags from add_job('t', flags => array['a', 'b']) \
         union all select flags from add_job('t', flags => array[]::text[]) \
         union all select flags from add_job('t')",
    )
    .await;
    assert_eq!(
        rows,
        vec![
            (Some(serde_json::json!({"a": true})),),
            (Some(serde_json::json!({"a": true, "b": true})),),
            (None,),
            (None,),
        ]
    );
}

async fn next_count(listener: &mut PgListener) -> i64 {
    let note = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("no notification within 10 s")
        .unwrap();
    let payload: serde_json::Value = serde_json::from_str(note.payload())
        .unwrap_or_else(|e| panic!("payload {:?}: {e}", note.payload()));
    assert!(payload["r"].is_f64(), "{payload}");
    assert_eq!(payload.as_object().unwrap().len(), 2, "{payload}");
    payload["count"].as_i64().unwrap()
}

#[tokio::test]
async fn notifications_carry_counts_and_remove_job_sends_minus_one() {
    let (db, pool) = our_database().await;
    let mut listener = PgListener::connect(&db.url).await.unwrap();
    listener.listen("jobs:insert").await.unwrap();

    exec(&pool, "select add_job('t', job_key => 'k')").await;
    assert_eq!(next_count(&mut listener).await, 1);
    exec(
        &pool,
        "select count(*) from add_jobs(array[('t', null, null, null, null, null, null, null),
           ('t', null, null, null, null, null, null, null),
           ('t', null, null, null, null, null, null, null)]::job_spec[])",
    )
    .await;
    assert_eq!(next_count(&mut listener).await, 3);
    // unsafe_dedupe notifies only a fresh insert.
    exec(
        &pool,
        "select add_job('t', job_key => 'k', job_key_mode => 'unsafe_dedupe');
         select add_job('t', job_key => 'fresh', job_key_mode => 'unsafe_dedupe')",
    )
    .await;
    assert_eq!(next_count(&mut listener).await, 1);

    let removed: Vec<(Option<String>,)> =
        query_rows(&pool, "select key from remove_job('fresh')").await;
    assert_eq!(removed, vec![(Some("fresh".to_owned()),)]);
    assert_eq!(next_count(&mut listener).await, -1);

    // A locked job is kept (key cleared, no retries) and nothing is sent;
    // the next notification is from a later add.
    exec(
        &pool,
        "update _private_jobs set locked_at = now(), locked_by = 'pool-x' where key = 'k'",
    )
    .await;
    let kept: Vec<(Option<String>, i16)> =
        query_rows(&pool, "select key, attempts from remove_job('k')").await;
    assert_eq!(kept, vec![(None, 25)]);
    let missing: Vec<(Option<i64>,)> = query_rows(&pool, "select id from remove_job('nope')").await;
    assert_eq!(missing, vec![(None,)]);
    exec(&pool, "select add_job('t')").await;
    assert_eq!(next_count(&mut listener).await, 1);
}

#[tokio::test]
async fn migration_11_refuses_recent_locks_and_carries_old_jobs_across() {
    let db = fresh_database().await;
    let pool = db.pool(2).await;
    let ours = our_dir();

    // A recent lock: division by zero, nothing changed.
    apply(&pool, "busy", &ours, 1..=10).await;
    sqlx::raw_sql(
        "select busy.add_job('t', queue_name => 'q');
         select busy.get_job('worker-0123456789')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let body = migration_file(&ours, 11).replace(":GRAPHILE_WORKER_SCHEMA", "\"busy\"");
    let mut tx = pool.begin().await.unwrap();
    let err = sqlx::raw_sql(AssertSqlSafe(body))
        .execute(&mut *tx)
        .await
        .unwrap_err();
    tx.rollback().await.unwrap();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("22012"),
        "{err}"
    );

    // Locks older than 4 hours are dropped and the jobs copied across.
    apply(&pool, "idle", &ours, 1..=10).await;
    sqlx::raw_sql(
        "select idle.add_job('a', '{\"n\":1}', queue_name => 'q', job_key => 'k', flags => array['f'], priority => 3);
         select idle.add_job('b', '[1]', max_attempts => 2);
         select idle.get_job('worker-0123456789', task_identifiers => array['a']);
         update idle.jobs set locked_at = now() - interval '5 hours', last_error = 'boom';
         update idle.job_queues set locked_at = now() - interval '5 hours'",
    )
    .execute(&pool)
    .await
    .unwrap();
    apply(&pool, "idle", &ours, 11..=20).await;
    type Row = (
        String,
        Option<String>,
        serde_json::Value,
        i16,
        i16,
        i16,
        Option<String>,
        Option<String>,
        Option<serde_json::Value>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select v.task_identifier, v.queue_name, j.payload, v.priority, v.attempts, v.max_attempts, \
                v.key, v.last_error, v.flags, v.locked_by \
           from idle.jobs v join idle._private_jobs j using (id) order by v.task_identifier",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            (
                "a".into(),
                Some("q".into()),
                serde_json::json!({"n": 1}),
                3,
                1,
                25,
                Some("k".into()),
                Some("boom".into()),
                Some(serde_json::json!({"f": true})),
                None
            ),
            (
                "b".into(),
                None,
                serde_json::json!([1]),
                0,
                0,
                2,
                None,
                Some("boom".into()),
                None,
                None
            ),
        ]
    );
    let queues: Vec<(String, Option<String>)> =
        sqlx::query_as("select queue_name, locked_by from idle._private_job_queues")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(queues, vec![("q".to_owned(), None)]);
}

#[tokio::test]
async fn worker_registry_functions() {
    let (_db, pool) = our_database().await;
    exec(
        &pool,
        "select worker_heartbeat('pool-live', '{\"host\":\"a\"}');
         select worker_heartbeat('pool-live');
         select worker_heartbeat('pool-dead', '{\"host\":\"b\"}');
         update _private_workers set last_heartbeat_at = now() - interval '10 minutes' where id = 'pool-dead';
         select add_job('t', queue_name => 'q');
         select add_job('t', max_attempts => 1);
         select add_job('t', run_at => now() + interval '1 hour');
         select add_job('t');
         update _private_jobs set attempts = 1, locked_at = now() - interval '6 minutes', locked_by = 'pool-dead'
          where id in (select id from _private_jobs order by id limit 3);
         update _private_job_queues set locked_at = now() - interval '6 minutes', locked_by = 'pool-dead';
         update _private_jobs set attempts = 1, locked_at = now() - interval '6 minutes', locked_by = 'pool-node'
          where id = (select max(id) from _private_jobs)",
    )
    .await;

    let metadata: Vec<(String, Option<serde_json::Value>)> = query_rows(
        &pool,
        "select id, metadata from _private_workers order by id",
    )
    .await;
    assert_eq!(
        metadata,
        vec![
            ("pool-dead".into(), Some(serde_json::json!({"host": "b"}))),
            ("pool-live".into(), Some(serde_json::json!({"host": "a"}))),
        ]
    );
    let stale: Vec<(String,)> = query_rows(
        &pool,
        "select worker_id from list_stale_workers('5 minutes')",
    )
    .await;
    assert_eq!(stale, vec![("pool-dead".to_owned(),)]);
    let orphans: Vec<(String,)> = query_rows(
        &pool,
        "select worker_id from list_orphan_locked_workers('5 minutes')",
    )
    .await;
    assert_eq!(orphans, vec![("pool-node".to_owned(),)]);

    let recovered: Vec<(i32,)> = query_rows(
        &pool,
        "select recover_dead_worker_jobs(array['pool-dead'], '30 seconds')",
    )
    .await;
    assert_eq!(recovered, vec![(3,)]);
    // Attempts are not refunded; the job with no attempts left stays dead.
    type Job = (i16, i16, Option<String>, Option<String>, bool, bool);
    let jobs: Vec<Job> = query_rows(
        &pool,
        "select attempts, max_attempts, locked_by, last_error, \
                run_at >= now() + interval '29 seconds', run_at > now() + interval '50 minutes' \
           from _private_jobs order by id",
    )
    .await;
    let retrying = "worker pool-dead stopped heartbeating while running this job; retrying";
    assert_eq!(
        jobs,
        vec![
            (1, 25, None, Some(retrying.into()), true, false),
            (
                1,
                1,
                None,
                Some("worker pool-dead stopped heartbeating while running this job; no attempts left".into()),
                true,
                false
            ),
            (1, 25, None, Some(retrying.into()), true, true),
            (1, 25, Some("pool-node".into()), None, false, false),
        ]
    );
    let queue_lock: Vec<(Option<String>,)> =
        query_rows(&pool, "select locked_by from _private_job_queues").await;
    assert_eq!(queue_lock, vec![(None,)]);

    exec(
        &pool,
        "select delete_stale_workers(array['pool-dead']); select worker_deregister('pool-live')",
    )
    .await;
    let left: Vec<(String,)> = query_rows(&pool, "select id from _private_workers").await;
    assert!(left.is_empty(), "{left:?}");
}
