//! Tasks defined with `#[task]`, enqueued through the generated helpers
//! against a real database: what gets stored, the attribute defaults, batch
//! and transactional enqueue, the registry, and a payload written by Node
//! graphile-worker decoded into a `rename_all = "camelCase"` task.

mod common;

use common::{migrated, run_sql};
use graphile_worker::testing::{Enqueued, TestDb};
use graphile_worker::{JobContext, JobSpec, Task, Worker, task};
use graphile_worker_dev::node;
use serde_json::json;
use sqlx::PgPool;

const SCHEMA: &str = "graphile_worker";

// A task's location is the line of its function's name.
const SEND_EMAIL_LINE: u32 = line!() + 4;

/// Sends one email.
#[task]
async fn send_email(ctx: JobContext, to: String, subject: String) -> Result<(), std::io::Error> {
    let _ = (ctx.job_id(), to, subject);
    Ok(())
}

const BUILD_REPORT_LINE: u32 = line!() + 9;
#[task(
    identifier = "reports.build",
    queue = "reports",
    max_attempts = 3,
    priority = -2,
    rename_all = "camelCase",
    cron = "0 4 * * *"
)]
async fn build_report(report_id: i64, include_drafts: bool) {
    let _ = (report_id, include_drafts);
}

/// Records a signup written by JavaScript code (camelCase payload).
#[task(rename_all = "camelCase")]
async fn record_signup(
    ctx: JobContext,
    user_id: i64,
    referral_code: Option<String>,
) -> Result<(), sqlx::Error> {
    sqlx::query("insert into signups (user_id, referral_code, job_id) values ($1, $2, $3)")
        .bind(user_id)
        .bind(referral_code)
        .bind(ctx.job_id())
        .execute(ctx.utils().pool())
        .await?;
    Ok(())
}

/// What the database holds for one job: identifier, queue, priority,
/// max_attempts, key, and the stored payload.
#[derive(Debug, PartialEq)]
struct Stored {
    identifier: String,
    queue: Option<String>,
    priority: i16,
    max_attempts: i16,
    key: Option<String>,
    payload: serde_json::Value,
}

type StoredRow = (
    String,
    Option<String>,
    i16,
    i16,
    Option<String>,
    serde_json::Value,
);

async fn stored(pool: &PgPool) -> Vec<Stored> {
    let rows: Vec<StoredRow> = sqlx::query_as(
        "select v.task_identifier, v.queue_name, v.priority, v.max_attempts, v.key, j.payload
               from graphile_worker.jobs v
               join graphile_worker._private_jobs j on j.id = v.id
              order by v.id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(
            |(identifier, queue, priority, max_attempts, key, payload)| Stored {
                identifier,
                queue,
                priority,
                max_attempts,
                key,
                payload,
            },
        )
        .collect()
}

fn email(to: &str) -> SendEmail {
    SendEmail {
        to: to.into(),
        subject: "Welcome".into(),
    }
}

#[graphile_worker::test]
async fn enqueue_stores_the_function_name_and_the_parameters_as_payload(db: TestDb) {
    let job = SendEmail::enqueue(db.utils(), email("ada@example.com"))
        .await
        .unwrap();

    assert_eq!(job.task_identifier, "send_email");
    assert_eq!(
        job.payload,
        json!({"to": "ada@example.com", "subject": "Welcome"})
    );
    db.assert_enqueued(
        Enqueued::<SendEmail>::new()
            .payload(email("ada@example.com"))
            .no_queue()
            .priority(0)
            .max_attempts(25),
    )
    .await;
    assert_eq!(
        stored(db.pool()).await,
        [Stored {
            identifier: "send_email".into(),
            queue: None,
            priority: 0,
            max_attempts: 25,
            key: None,
            payload: json!({"to": "ada@example.com", "subject": "Welcome"}),
        }]
    );
}

#[graphile_worker::test]
async fn attribute_defaults_apply_and_the_callers_spec_wins_field_by_field(db: TestDb) {
    let report = |report_id, include_drafts| BuildReport {
        report_id,
        include_drafts,
    };
    BuildReport::enqueue(db.utils(), report(1, true))
        .await
        .unwrap();
    let spec = JobSpec {
        priority: Some(7),
        job_key: Some("report:2".into()),
        ..JobSpec::default()
    };
    let job = BuildReport::enqueue_with(db.utils(), report(2, false), spec)
        .await
        .unwrap();
    assert_eq!(job.key.as_deref(), Some("report:2"));

    // The attribute's queue, priority and attempts, and the payload with
    // rename_all applied.
    let first = db
        .assert_enqueued(
            Enqueued::<BuildReport>::new()
                .payload(report(1, true))
                .queue("reports")
                .priority(-2)
                .max_attempts(3),
        )
        .await;
    assert_eq!(first.payload, json!({"reportId": 1, "includeDrafts": true}));
    assert_eq!(first.key, None);
    // The spec's priority and key win; the rest stays the attribute's.
    db.assert_enqueued(
        Enqueued::<BuildReport>::new()
            .payload(report(2, false))
            .queue("reports")
            .priority(7)
            .max_attempts(3)
            .key("report:2"),
    )
    .await;
    let ids: Vec<i64> = db
        .enqueued::<BuildReport>()
        .await
        .into_iter()
        .map(|r| r.report_id)
        .collect();
    assert_eq!(ids, [1, 2]);
}

#[tokio::test]
async fn enqueue_many_adds_every_payload_in_order_with_the_task_defaults() {
    let (_db, pool, utils) = migrated().await;

    let emails = SendEmail::enqueue_many(&utils, ["a@x", "b@x", "c@x"].map(email))
        .await
        .unwrap();
    let reports = BuildReport::enqueue_many(
        &utils,
        (10..12).map(|report_id| BuildReport {
            report_id,
            include_drafts: false,
        }),
    )
    .await
    .unwrap();

    // The helpers return only the count; the jobs are read from the table.
    assert_eq!((emails, reports), (3, 2));
    let send = |to: &str| Stored {
        identifier: "send_email".into(),
        queue: None,
        priority: 0,
        max_attempts: 25,
        key: None,
        payload: json!({"to": to, "subject": "Welcome"}),
    };
    let report = |report_id: i64| Stored {
        identifier: "reports.build".into(),
        queue: Some("reports".into()),
        priority: -2,
        max_attempts: 3,
        key: None,
        payload: json!({"reportId": report_id, "includeDrafts": false}),
    };
    let all = vec![
        send("a@x"),
        send("b@x"),
        send("c@x"),
        report(10),
        report(11),
    ];
    assert_eq!(stored(&pool).await, all);

    // An empty batch is a no-op, not an error.
    let none = SendEmail::enqueue_many(&utils, Vec::new()).await.unwrap();
    assert_eq!(none, 0);
    assert_eq!(stored(&pool).await, all);
}

#[tokio::test]
async fn jobs_enqueued_in_a_transaction_exist_only_once_it_commits() {
    let (_db, pool, utils) = migrated().await;

    let mut tx = pool.begin().await.unwrap();
    SendEmail::enqueue_in(&utils, &mut *tx, email("one@x"))
        .await
        .unwrap();
    let added = SendEmail::enqueue_many_in(&utils, &mut *tx, [email("two@x"), email("three@x")])
        .await
        .unwrap();
    assert_eq!(added, 2);
    let keyed = JobSpec {
        job_key: Some("report:tx".into()),
        ..JobSpec::default()
    };
    utils
        .add_job_in(
            &mut *tx,
            BuildReport {
                report_id: 5,
                include_drafts: false,
            },
            keyed,
        )
        .await
        .unwrap();
    // Not visible to anyone else before the commit.
    assert!(stored(&pool).await.is_empty());
    tx.commit().await.unwrap();

    let after_commit = stored(&pool).await;
    let recipients: Vec<_> = after_commit
        .iter()
        .filter(|s| s.identifier == "send_email")
        .map(|s| s.payload["to"].clone())
        .collect();
    assert_eq!(
        recipients,
        [json!("one@x"), json!("two@x"), json!("three@x")]
    );
    let report = after_commit.last().unwrap();
    assert_eq!(report.identifier, "reports.build");
    assert_eq!(report.key.as_deref(), Some("report:tx"));
    assert_eq!(report.queue.as_deref(), Some("reports"));

    let mut tx = pool.begin().await.unwrap();
    SendEmail::enqueue_in(&utils, &mut *tx, email("lost@x"))
        .await
        .unwrap();
    SendEmail::enqueue_many_in(&utils, &mut *tx, [email("lost2@x")])
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    assert_eq!(stored(&pool).await, after_commit);
}

#[test]
fn registered_tasks_lists_this_files_tasks_with_their_locations() {
    let find = |identifier: &str| {
        graphile_worker::registered_tasks()
            .find(|t| t.identifier() == identifier)
            .unwrap_or_else(|| panic!("{identifier} is not registered"))
    };
    let send = find("send_email");
    assert_eq!(
        send.location(),
        format!("tests/macro_enqueue.rs:{SEND_EMAIL_LINE}")
    );
    assert!(send.cron().is_empty());
    let report = find("reports.build");
    assert_eq!(
        report.location(),
        format!("tests/macro_enqueue.rs:{BUILD_REPORT_LINE}")
    );
    assert_eq!(report.cron(), ["0 4 * * *"]);
    let mut identifiers: Vec<_> = graphile_worker::registered_tasks()
        .map(|t| t.identifier())
        .collect();
    identifiers.sort();
    assert_eq!(
        identifiers,
        ["record_signup", "reports.build", "send_email"]
    );
    assert_eq!(RecordSignup::IDENTIFIER, "record_signup");
}

const NODE_ADD_SIGNUP: &str = r#"
const { makeWorkerUtils } = require("graphile-worker");
(async () => {
  const utils = await makeWorkerUtils({ connectionString: process.env.DATABASE_URL });
  await utils.addJob("record_signup", { userId: 42, referralCode: "FRIEND" });
  await utils.addJob("record_signup", { userId: 43 });
  await utils.release();
})().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
"#;

#[tokio::test]
async fn a_node_add_job_payload_runs_through_a_camel_case_task() {
    let (db, pool, _utils) = migrated().await;
    run_sql(
        &pool,
        "create table signups (user_id bigint not null, referral_code text, job_id bigint not null)",
    )
    .await;
    node::run_js_ok(&db.url, SCHEMA, NODE_ADD_SIGNUP).await;

    let worker = Worker::options()
        .pg_pool(pool.clone())
        .schema(SCHEMA)
        .handle_signals(false)
        .register::<RecordSignup>()
        .init()
        .await
        .unwrap();
    worker.run_once().await.unwrap();

    let signups: Vec<(i64, Option<String>)> =
        sqlx::query_as("select user_id, referral_code from signups order by user_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(signups, [(42, Some("FRIEND".into())), (43, None)]);
    assert!(stored(&pool).await.is_empty(), "both jobs completed");
}
