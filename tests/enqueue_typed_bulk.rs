//! Typed bulk enqueue: `add_jobs` (the jobs back, names filled in without
//! joins) and `add_jobs_count` (only the count) write what the payloads and
//! the task's defaults say.

mod common;

use common::{count, migrated};
use graphile_worker::{Error, JobKeyMode, JobSpec, task};
use serde_json::json;
use sqlx::Row;

/// A task on a named queue with a priority.
#[task(queue = "thumbs", priority = 4, max_attempts = 2)]
async fn thumbnail(image_id: i64) {
    let _ = image_id;
}

/// A task with no options.
#[task]
async fn ping(n: i64) {
    let _ = n;
}

#[tokio::test]
async fn add_jobs_returns_the_jobs_with_their_task_and_queue_names() {
    let (_db, _pool, utils) = migrated().await;

    // add_jobs writes a batch of one task in reverse under some plans; the
    // jobs still come back in input order, equal payloads included.
    let thumbs = utils
        .add_jobs([1, 2, 2, 3].map(|image_id| Thumbnail { image_id }))
        .await
        .unwrap();
    let pings = utils.add_jobs([Ping { n: 7 }]).await.unwrap();

    let ids: Vec<_> = thumbs
        .iter()
        .map(|j| j.payload["image_id"].clone())
        .collect();
    assert_eq!(ids, [json!(1), json!(2), json!(2), json!(3)]);
    for job in &thumbs {
        assert_eq!(job.task_identifier, "thumbnail");
        assert_eq!(job.queue_name.as_deref(), Some("thumbs"));
        assert_eq!((job.priority, job.max_attempts, job.attempts), (4, 2, 0));
        assert_eq!(job.revision, 0);
        assert!(job.key.is_none() && job.locked_by.is_none());
    }
    assert_eq!(pings[0].task_identifier, "ping");
    assert_eq!(pings[0].queue_name, None);
    assert_eq!(pings[0].max_attempts, 25);
    assert_eq!(pings[0].payload, json!({"n": 7}));
}

#[tokio::test]
async fn add_jobs_count_writes_every_job_and_reads_nothing_back() {
    let (_db, pool, utils) = migrated().await;

    let added = utils
        .add_jobs_count((0..500).map(|image_id| Thumbnail { image_id }))
        .await
        .unwrap();
    assert_eq!(added, 500);
    assert_eq!(utils.add_jobs_count(Vec::<Ping>::new()).await.unwrap(), 0);

    let row = sqlx::query(
        "select count(*) as jobs, count(distinct j.payload::text) as payloads, \
           min(q.queue_name) as queue, min(j.priority) as low, max(j.priority) as high, \
           min(j.max_attempts) as attempts \
         from graphile_worker._private_jobs j \
         join graphile_worker._private_tasks t on t.id = j.task_id \
         left join graphile_worker._private_job_queues q on q.id = j.job_queue_id \
         where t.identifier = 'thumbnail'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row.get::<i64, _>("jobs"), 500);
    assert_eq!(row.get::<i64, _>("payloads"), 500);
    assert_eq!(
        row.get::<Option<String>, _>("queue").as_deref(),
        Some("thumbs")
    );
    assert_eq!(
        (row.get::<i16, _>("low"), row.get::<i16, _>("high")),
        (4, 4)
    );
    assert_eq!(row.get::<i16, _>("attempts"), 2);
}

#[tokio::test]
async fn typed_bulk_enqueue_in_a_rolled_back_transaction_leaves_nothing() {
    let (_db, pool, utils) = migrated().await;

    let mut tx = pool.begin().await.unwrap();
    utils
        .add_jobs_count_in(&mut *tx, [Ping { n: 1 }, Ping { n: 2 }])
        .await
        .unwrap();
    utils.add_jobs_in(&mut *tx, [Ping { n: 3 }]).await.unwrap();
    tx.rollback().await.unwrap();

    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        0
    );
}

/// A hand-written task whose default spec carries a job key.
#[derive(serde::Serialize, serde::Deserialize)]
struct Keyed {
    n: i64,
}

impl graphile_worker::Task for Keyed {
    const IDENTIFIER: &'static str = "keyed";
    fn default_spec() -> JobSpec {
        JobSpec {
            job_key: Some("the-one".into()),
            job_key_mode: Some(JobKeyMode::Replace),
            ..JobSpec::default()
        }
    }
    async fn run(
        self,
        _ctx: graphile_worker::JobContext,
    ) -> Result<(), graphile_worker::TaskError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_keyed_default_spec_updates_the_one_job_and_refuses_a_batch_of_two() {
    let (_db, pool, utils) = migrated().await;

    utils.add_jobs([Keyed { n: 1 }]).await.unwrap();
    let replaced = utils.add_jobs([Keyed { n: 2 }]).await.unwrap();
    assert_eq!(replaced[0].payload, json!({"n": 2}));
    assert_eq!(replaced[0].key.as_deref(), Some("the-one"));
    assert_eq!(replaced[0].revision, 1);
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        1
    );

    let err = utils
        .add_jobs_count([Keyed { n: 3 }, Keyed { n: 4 }])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidBatch(m) if m.contains("job key `the-one` twice")),
        "{err:?}"
    );
}
