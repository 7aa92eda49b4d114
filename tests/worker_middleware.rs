//! Job middleware: reads the job, adds per-job values the task sees, runs
//! outermost first, sees (and may change) the outcome.

mod common;

use std::sync::{Arc, Mutex};

use graphile_worker::{JobContext, JobSpec, Next, TaskError, Worker, task};
use serde_json::json;

struct Tenant(String);

#[task]
async fn mw_bill(ctx: JobContext, amount: i64) -> Result<(), TaskError> {
    let tenant = ctx.data::<Tenant>()?;
    if amount < 0 {
        return Err(TaskError::permanent(format!(
            "{}: negative amount",
            tenant.0
        )));
    }
    Ok(())
}

type Log = Arc<Mutex<Vec<String>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_wraps_each_job_and_sees_its_outcome() {
    let (_db, pool, utils) = common::migrated().await;
    let good = utils
        .add_raw_job(
            "mw_bill",
            json!({"amount": 5, "tenant": "acme"}),
            JobSpec::default(),
        )
        .await
        .unwrap();
    let bad = utils
        .add_raw_job(
            "mw_bill",
            json!({"amount": -1, "tenant": "globex"}),
            JobSpec::default(),
        )
        .await
        .unwrap();
    let undecodable = utils
        .add_raw_job("mw_bill", json!({"amount": "many"}), JobSpec::default())
        .await
        .unwrap();

    let log: Log = Arc::default();
    let (outer_log, inner_log) = (log.clone(), log.clone());
    let worker = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<MwBill>()
        .middleware(move |ctx: JobContext, next: Next| {
            let log = outer_log.clone();
            async move {
                let id = ctx.job().id;
                log.lock().unwrap().push(format!("outer before {id}"));
                let result = next.run(ctx).await;
                log.lock()
                    .unwrap()
                    .push(format!("outer after {id}: {result:?}"));
                result
            }
        })
        .middleware(move |ctx: JobContext, next: Next| {
            let log = inner_log.clone();
            async move {
                let id = ctx.job().id;
                let tenant = ctx.job().payload["tenant"]
                    .as_str()
                    .unwrap_or("none")
                    .to_owned();
                log.lock().unwrap().push(format!("inner before {id}"));
                next.run(ctx.with_data(Tenant(tenant))).await
            }
        })
        .init()
        .await
        .unwrap();
    worker.run_once().await.unwrap();

    let log = log.lock().unwrap().clone();
    let of = |id: i64| -> Vec<String> {
        log.iter()
            .filter(|l| l.contains(&format!(" {id}")))
            .cloned()
            .collect()
    };
    assert_eq!(
        of(good.id),
        vec![
            format!("outer before {}", good.id),
            format!("inner before {}", good.id),
            format!("outer after {}: Ok(())", good.id),
        ]
    );
    assert!(of(bad.id)[2].contains("globex: negative amount"), "{log:?}");
    assert!(of(undecodable.id)[2].contains("Err"), "{log:?}");

    let failed = utils.get_job(bad.id).await.unwrap().unwrap();
    assert_eq!(
        failed.job.last_error.as_deref(),
        Some("globex: negative amount")
    );
    assert_eq!(
        failed.job.attempts, failed.job.max_attempts,
        "permanent: no attempts left"
    );
    let undecoded = utils.get_job(undecodable.id).await.unwrap().unwrap();
    assert_eq!(
        undecoded.job.attempts, undecoded.job.max_attempts,
        "undecodable: permanent"
    );
    assert!(utils.get_job(good.id).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_can_turn_a_failure_into_a_success() {
    let (_db, pool, utils) = common::migrated().await;
    let bad = utils
        .add_raw_job("mw_bill", json!({"amount": -1}), JobSpec::default())
        .await
        .unwrap();
    let worker = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<MwBill>()
        .middleware(|ctx: JobContext, next: Next| async move {
            let _ = next.run(ctx.with_data(Tenant("test".into()))).await;
            Ok(())
        })
        .init()
        .await
        .unwrap();
    worker.run_once().await.unwrap();
    assert!(utils.get_job(bad.id).await.unwrap().is_none());
}
