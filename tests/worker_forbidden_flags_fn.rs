//! Forbidden flags from a function, as Node's `forbiddenFlags` function
//! (what rate limiters use): its flags are skipped while it gives them, it
//! is called at most once per claim, and a failure or panic in it is logged
//! and adds no flags (the fixed list still applies).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, migrated, shut_down, start};
use graphile_worker::{JobSpec, TaskError, Worker, WorkerEvent, WorkerOptions, WorkerUtils};
use serde_json::json;
use sqlx::PgPool;

/// Ids of the jobs that ran, and how many claims the worker made.
#[derive(Clone, Default)]
struct Seen {
    ran: Arc<Mutex<Vec<i64>>>,
    claims: Arc<AtomicUsize>,
}

impl Seen {
    fn ran(&self) -> Vec<i64> {
        let mut ran = self.ran.lock().unwrap().clone();
        ran.sort();
        ran
    }

    /// Waits for `n` more claims than now: what was due during them and
    /// not taken was skipped on purpose.
    async fn more_claims(&self, n: usize) {
        let target = self.claims.load(Ordering::SeqCst) + n;
        eventually(Duration::from_secs(10), "more claims", || async {
            (self.claims.load(Ordering::SeqCst) >= target).then_some(())
        })
        .await;
    }
}

fn worker(pool: &PgPool, seen: &Seen) -> WorkerOptions {
    let ran = seen.ran.clone();
    let claims = seen.claims.clone();
    Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .poll_interval(Duration::from_millis(50))
        .register_fn("send", move |ctx| {
            let ran = ran.clone();
            async move {
                ran.lock().unwrap().push(ctx.job().id);
                Ok::<(), TaskError>(())
            }
        })
        .on_event(move |event| {
            if let WorkerEvent::JobsClaimed { .. } = event {
                claims.fetch_add(1, Ordering::SeqCst);
            }
        })
}

async fn add(utils: &WorkerUtils, flags: &[&str]) -> i64 {
    let spec = JobSpec {
        flags: (!flags.is_empty()).then(|| flags.iter().map(|f| (*f).to_owned()).collect()),
        ..JobSpec::default()
    };
    utils.add_raw_job("send", json!({}), spec).await.unwrap().id
}

async fn wait_ran(seen: &Seen, ids: &[i64]) {
    let mut want = ids.to_vec();
    want.sort();
    eventually(Duration::from_secs(10), "the jobs to run", || async {
        let ran = seen.ran();
        want.iter().all(|id| ran.contains(id)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn flags_from_the_function_are_skipped_while_it_gives_them() {
    let (_db, pool, utils) = migrated().await;
    let seen = Seen::default();
    let throttled = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicUsize::new(0));
    let (flag, count) = (throttled.clone(), calls.clone());
    let options = worker(&pool, &seen).forbidden_flags_fn(move || {
        count.fetch_add(1, Ordering::SeqCst);
        let throttled = flag.load(Ordering::SeqCst);
        async move {
            Ok::<_, std::convert::Infallible>(if throttled {
                vec!["smtp".to_owned()]
            } else {
                Vec::new()
            })
        }
    });
    let smtp = [
        add(&utils, &["smtp"]).await,
        add(&utils, &["smtp", "bulk"]).await,
    ];
    let plain = [add(&utils, &[]).await, add(&utils, &["bulk"]).await];
    let (_w, handle, running) = start(options).await;

    wait_ran(&seen, &plain).await;
    seen.more_claims(3).await;
    assert_eq!(seen.ran(), plain, "flagged jobs wait while throttled");

    throttled.store(false, Ordering::SeqCst);
    wait_ran(&seen, &smtp).await;
    shut_down(handle, running).await;
    let (calls, claims) = (
        calls.load(Ordering::SeqCst),
        seen.claims.load(Ordering::SeqCst),
    );
    assert!(calls >= 1, "the function was asked");
    assert!(
        calls <= claims,
        "at most once per claim: {calls} calls, {claims} claims"
    );
}

#[tokio::test]
async fn a_failing_or_panicking_function_adds_no_flags() {
    // Failing, panicking in its future, panicking before it returns one
    // (a poisoned lock, say), and hanging past the timeout is not tried
    // here (10 s).
    for how in ["fails", "panics later", "panics at once"] {
        let (_db, pool, utils) = migrated().await;
        let seen = Seen::default();
        let options = worker(&pool, &seen)
            .forbidden_flags(&["never"])
            .forbidden_flags_fn(move || {
                if how == "panics at once" {
                    panic!("the limiter's lock is poisoned");
                }
                async move {
                    if how == "panics later" {
                        panic!("the limiter crashed");
                    }
                    Err::<Vec<String>, _>("the limiter is down")
                }
            });
        let smtp = add(&utils, &["smtp"]).await;
        let plain = add(&utils, &[]).await;
        let never = add(&utils, &["never"]).await;
        let (_w, handle, running) = start(options).await;

        wait_ran(&seen, &[smtp, plain]).await;
        seen.more_claims(3).await;
        assert_eq!(seen.ran(), vec![smtp, plain], "{how}");
        let left: i64 =
            sqlx::query_scalar("select count(*) from graphile_worker.jobs where id = $1")
                .bind(never)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(left, 1, "the fixed list still applies");
        shut_down(handle, running).await;
    }
}
