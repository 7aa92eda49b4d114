//! Tests of the shop's background work, with graphile-worker's `testing`
//! helpers: what placing an order enqueues, what the jobs do when they run,
//! what happens days later, and the tasks on their own with no database.
//!
//! Each test gets a fresh database of its own: on `DATABASE_URL`'s server
//! when it is set, else on a throwaway PostgreSQL the helpers start. The
//! helpers are synchronous: once `run_jobs().await` returns, the jobs have
//! run, so nothing here sleeps or polls.

use std::time::Duration;

use chrono::Utc;
use graphile_worker::testing::{Enqueued, RunOutcome, TestDb};
use graphile_worker::{Data, Job, JobContext, Task, task};
use graphile_worker_example_testing::{
    ChargeCard, FOLLOW_UP_AFTER, FollowUp, Mailer, Order, SendReceipt, SendSurvey, charge_card,
    place_order, send_receipt,
};
use serde_json::json;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const THREE_DAYS: Duration = Duration::from_secs(3 * 24 * 60 * 60);
/// Slack for the time between enqueueing and asserting.
const TOLERANCE: Duration = Duration::from_secs(30);

/// Order `id` of 12.50 by Ada.
fn order(id: i64) -> Order {
    Order {
        id,
        email: "ada@example.com".into(),
        cents: 1250,
    }
}

fn receipt(order_id: i64) -> SendReceipt {
    SendReceipt {
        order_id,
        email: "ada@example.com".into(),
    }
}

// ---------------------------------------------------------------------------
// What placing an order enqueues
// ---------------------------------------------------------------------------

#[graphile_worker::test]
async fn placing_an_order_queues_the_receipt_the_payment_and_the_follow_up(db: TestDb) {
    let placed_at = Utc::now();
    place_order(db.utils(), &order(1)).await.unwrap();

    // Each assertion describes the job it wants; fields not asked about
    // match anything. It returns the job found.
    let job = db
        .assert_enqueued(
            Enqueued::<SendReceipt>::new()
                .payload(receipt(1))
                .queue("emails")
                .key("receipt:1"),
        )
        .await;
    assert_eq!(job.attempts, 0);

    // The task's defaults (`priority = -1, max_attempts = 5`) plus the flag
    // `place_order` adds.
    db.assert_enqueued(
        Enqueued::<ChargeCard>::new()
            .payload(ChargeCard {
                order_id: 1,
                cents: 1250,
            })
            .no_queue()
            .priority(-1)
            .max_attempts(5)
            .flags(["payments"]),
    )
    .await;

    // Scheduled three days out: against a fixed time, or against "now".
    db.assert_enqueued(
        Enqueued::<FollowUp>::new()
            .matching(|f| f.order_id == 1 && f.email.ends_with("@example.com"))
            .no_queue()
            .run_at(placed_at + FOLLOW_UP_AFTER, TOLERANCE),
    )
    .await;
    db.assert_enqueued(Enqueued::<FollowUp>::new().due_in(THREE_DAYS, TOLERANCE))
        .await;

    // Nothing else: no survey yet, and no charge of a bad amount.
    db.assert_not_enqueued(Enqueued::<SendSurvey>::new()).await;
    db.assert_not_enqueued(Enqueued::<ChargeCard>::new().matching(|c| c.cents <= 0))
        .await;
    // The follow-up is not due today.
    db.assert_not_enqueued(Enqueued::<FollowUp>::new().due_in(Duration::ZERO, TOLERANCE))
        .await;
}

#[graphile_worker::test]
async fn submitting_an_order_twice_keeps_one_receipt(db: TestDb) {
    place_order(db.utils(), &order(1)).await.unwrap();
    place_order(db.utils(), &order(1)).await.unwrap();
    place_order(db.utils(), &order(2)).await.unwrap();

    // The job key `receipt:<id>` replaced the first receipt of order 1.
    let receipts: Vec<i64> = db
        .enqueued::<SendReceipt>()
        .await
        .into_iter()
        .map(|r| r.order_id)
        .collect();
    assert_eq!(receipts, [1, 2]);

    // The raw jobs, with what the database knows about them.
    let jobs = db.enqueued_jobs::<SendReceipt>().await;
    let keys: Vec<Option<&str>> = jobs.iter().map(|j| j.key.as_deref()).collect();
    assert_eq!(keys, [Some("receipt:1"), Some("receipt:2")]);
    assert!(
        jobs.iter()
            .all(|j| j.queue_name.as_deref() == Some("emails"))
    );
}

#[graphile_worker::test]
async fn a_scope_sees_only_the_jobs_enqueued_after_it_began(db: TestDb) {
    // Set-up: an earlier order.
    place_order(db.utils(), &order(1)).await.unwrap();

    let scope = db.scope().await;
    place_order(db.utils(), &order(2)).await.unwrap();

    scope
        .assert_enqueued(Enqueued::<SendReceipt>::new().key("receipt:2"))
        .await;
    // Order 1's receipt is in the database, but came before the scope.
    scope
        .assert_not_enqueued(Enqueued::<SendReceipt>::new().key("receipt:1"))
        .await;
    db.assert_enqueued(Enqueued::<SendReceipt>::new().key("receipt:1"))
        .await;

    let charged: Vec<i64> = scope
        .enqueued::<ChargeCard>()
        .await
        .into_iter()
        .map(|c| c.order_id)
        .collect();
    assert_eq!(charged, [2]);
    assert_eq!(scope.enqueued_jobs::<FollowUp>().await.len(), 1);

    // Submitting order 1 again replaces its receipt through the job key:
    // that counts as enqueued in the scope.
    place_order(db.utils(), &order(1)).await.unwrap();
    scope
        .assert_enqueued(Enqueued::<SendReceipt>::new().payload(receipt(1)))
        .await;
}

// ---------------------------------------------------------------------------
// Running the jobs
// ---------------------------------------------------------------------------

/// A plain `#[tokio::test]` works too, with `TestDb::new()`.
#[tokio::test]
async fn running_the_jobs_sends_receipts_and_charges_cards() {
    let db = TestDb::new().await;
    let mailer = Mailer::new();
    place_order(db.utils(), &order(1)).await.unwrap();
    place_order(
        db.utils(),
        &Order {
            cents: 0,
            ..order(2)
        },
    )
    .await
    .unwrap();
    place_order(
        db.utils(),
        &Order {
            cents: -5,
            ..order(3)
        },
    )
    .await
    .unwrap();

    // `send_receipt` takes a `Data<Mailer>`: give the worker one. The
    // test keeps a clone to read the outbox.
    let report = db.run_jobs().worker(db.worker().data(mailer.clone())).await;

    assert_eq!(
        mailer.sent(),
        [
            "ada@example.com: Your receipt for order 1",
            "ada@example.com: Your receipt for order 2",
            "ada@example.com: Your receipt for order 3",
        ]
    );
    assert_eq!(report.of_task("send_receipt").len(), 3);
    // Three receipts and the first charge; the follow-ups are not due.
    assert_eq!(report.completed().len(), 4);
    assert!(report.of_task("follow_up").is_empty());

    let mut errors: Vec<&str> = report.failed().iter().filter_map(|j| j.error()).collect();
    errors.sort();
    assert_eq!(
        errors,
        [
            "order 2: the payment provider refused an empty charge",
            "order 3: cannot charge a negative amount (-5 cents)",
        ]
    );
    let outcomes: Vec<(i16, &RunOutcome)> = report
        .of_task("charge_card")
        .into_iter()
        .filter(|j| !j.completed())
        .map(|j| (j.attempt, &j.outcome))
        .collect();
    assert!(outcomes.contains(&(
        1,
        &RunOutcome::Failed {
            error: "order 2: the payment provider refused an empty charge".into(),
            will_retry: true,
        }
    )));
    assert!(outcomes.contains(&(
        1,
        &RunOutcome::Failed {
            error: "order 3: cannot charge a negative amount (-5 cents)".into(),
            will_retry: false,
        }
    )));

    // The failed charges stay in the table; the retrying one waits for its
    // next attempt.
    let retrying = db
        .assert_enqueued(Enqueued::<ChargeCard>::new().payload(ChargeCard {
            order_id: 2,
            cents: 0,
        }))
        .await;
    assert_eq!(retrying.attempts, 1);
    assert!(retrying.run_at > Utc::now());
}

#[graphile_worker::test]
async fn a_run_can_be_limited_to_a_queue_or_a_task(db: TestDb) {
    let mailer = Mailer::new();
    place_order(db.utils(), &order(1)).await.unwrap();

    // Only the `emails` queue: the receipt, not the payment.
    let report = db
        .run_jobs()
        .worker(db.worker().data(mailer.clone()))
        .queue("emails")
        .await;
    report.assert_all_completed();
    assert_eq!(report.jobs.len(), 1);
    assert_eq!(report.jobs[0].task, "send_receipt");
    assert_eq!(report.jobs[0].queue.as_deref(), Some("emails"));
    db.assert_enqueued(Enqueued::<ChargeCard>::new()).await;

    // Only `charge_card`. It takes no shared value, so the default worker
    // (every registered task) will do: only the selected task's values are
    // required.
    let report = db.run_jobs().task("charge_card").await;
    report.assert_all_completed();
    assert_eq!(report.of_task("charge_card").len(), 1);
    db.assert_not_enqueued(Enqueued::<ChargeCard>::new()).await;

    // The follow-up is still scheduled.
    db.assert_enqueued(Enqueued::<FollowUp>::new()).await;
}

#[graphile_worker::test]
async fn run_job_runs_one_payload_through_its_task(db: TestDb) {
    let ran = db
        .run_job(ChargeCard {
            order_id: 1,
            cents: 1250,
        })
        .await;
    assert!(ran.completed());
    assert_eq!((ran.task.as_str(), ran.attempt), ("charge_card", 1));

    let ran = db
        .run_job(ChargeCard {
            order_id: 2,
            cents: -5,
        })
        .await;
    assert_eq!(
        ran.outcome,
        RunOutcome::Failed {
            error: "order 2: cannot charge a negative amount (-5 cents)".into(),
            will_retry: false,
        }
    );
    assert_eq!(
        ran.to_string(),
        format!(
            "job {} `charge_card` (attempt 1): failed: order 2: cannot charge a negative amount (-5 cents)",
            ran.id
        )
    );

    // A task that takes a shared value: give the worker options.
    let mailer = Mailer::new();
    let ran = db
        .run_job_with(db.worker().data(mailer.clone()), receipt(3))
        .await;
    assert_eq!(ran.outcome, RunOutcome::Completed);
    assert_eq!(
        ran.queue.as_deref(),
        Some("emails"),
        "the task's default queue"
    );
    assert_eq!(mailer.sent(), ["ada@example.com: Your receipt for order 3"]);
}

#[graphile_worker::test]
async fn a_refused_charge_is_retried_until_its_attempts_run_out(db: TestDb) {
    let ran = db
        .run_job(ChargeCard {
            order_id: 1,
            cents: 0,
        })
        .await;
    assert_eq!(
        ran.error(),
        Some("order 1: the payment provider refused an empty charge")
    );
    assert!(matches!(
        ran.outcome,
        RunOutcome::Failed {
            will_retry: true,
            ..
        }
    ));

    // The retry waits for its backoff; nothing is due now.
    assert!(db.run_jobs().task("charge_card").await.jobs.is_empty());

    // Make it due, and it runs again.
    assert_eq!(db.make_due().await, 1);
    let report = db.run_jobs().task("charge_card").await;
    assert_eq!(report.jobs.len(), 1);
    assert_eq!(report.jobs[0].attempt, 2);

    // `include_scheduled` makes each retry due as the run goes: the job
    // runs until its 5 attempts are used up.
    let report = db.run_jobs().task("charge_card").include_scheduled().await;
    let attempts: Vec<i16> = report.jobs.iter().map(|j| j.attempt).collect();
    assert_eq!(attempts, [3, 4, 5]);
    assert_eq!(report.failed().len(), 3);
    assert!(matches!(
        report.jobs[2].outcome,
        RunOutcome::Failed {
            will_retry: false,
            ..
        }
    ));

    // Failed for good: nothing left to make due.
    assert_eq!(db.make_due().await, 0);
    let job = db
        .assert_enqueued(Enqueued::<ChargeCard>::new().max_attempts(5))
        .await;
    assert!(job.is_permanently_failed());
}

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

#[graphile_worker::test]
async fn the_survey_goes_out_three_days_after_the_order(db: TestDb) {
    let mailer = Mailer::new();
    let worker = || db.worker().data(mailer.clone());
    place_order(db.utils(), &order(1)).await.unwrap();
    db.run_jobs().worker(worker()).await.assert_all_completed();
    assert_eq!(mailer.sent(), ["ada@example.com: Your receipt for order 1"]);

    // Two days later: still nothing to do. `advance_time` moves every
    // waiting job (here, the follow-up) and says how many.
    assert_eq!(db.advance_time(2 * DAY).await, 1);
    let report = db.run_jobs().worker(worker()).await;
    assert!(report.jobs.is_empty(), "{report}");

    // On the third day the follow-up runs, and the survey it enqueues runs
    // in the same call.
    db.advance_time(DAY).await;
    let report = db.run_jobs().worker(worker()).await;
    report.assert_all_completed();
    assert_eq!(report.of_task("follow_up").len(), 1, "{report}");
    assert_eq!(report.of_task("send_survey").len(), 1, "{report}");
    assert_eq!(
        mailer.sent(),
        [
            "ada@example.com: Your receipt for order 1",
            "ada@example.com: How was order 1?",
        ]
    );
}

#[graphile_worker::test]
async fn include_scheduled_runs_everything_now(db: TestDb) {
    let mailer = Mailer::new();
    place_order(db.utils(), &order(1)).await.unwrap();
    let report = db
        .run_jobs()
        .worker(db.worker().data(mailer.clone()))
        .include_scheduled()
        .max_jobs(10)
        .await;
    report.assert_all_completed();
    assert_eq!(report.jobs.len(), 4, "{report}");
    assert_eq!(report.of_task("send_survey").len(), 1);
    assert_eq!(mailer.sent().len(), 2);
}

#[graphile_worker::test]
async fn make_due_runs_the_follow_up_now(db: TestDb) {
    let mailer = Mailer::new();
    place_order(db.utils(), &order(1)).await.unwrap();
    // The follow-up is the only job scheduled in the future.
    assert_eq!(db.make_due().await, 1);
    db.assert_enqueued(Enqueued::<FollowUp>::new().due_in(Duration::ZERO, TOLERANCE))
        .await;
    let report = db.run_jobs().worker(db.worker().data(mailer.clone())).await;
    report.assert_all_completed();
    assert_eq!(report.of_task("send_survey").len(), 1);
}

// ---------------------------------------------------------------------------
// Tasks on their own
// ---------------------------------------------------------------------------

/// A `#[task]` function stays an ordinary function: call it with its
/// arguments and a `Data::new(..)` for the shared value. No database.
#[tokio::test]
async fn tasks_can_be_called_directly() {
    let mailer = Mailer::new();
    send_receipt(Data::new(mailer.clone()), 7, "ada@example.com".into())
        .await
        .unwrap();
    assert_eq!(mailer.sent(), ["ada@example.com: Your receipt for order 7"]);

    let error = charge_card(7, -1).await.unwrap_err();
    assert!(error.is_permanent());
    assert_eq!(
        error.message(),
        "order 7: cannot charge a negative amount (-1 cents)"
    );
    let error = charge_card(7, 0).await.unwrap_err();
    assert!(!error.is_permanent());
}

/// As the worker runs it: a payload decoded from the job's JSON, and a
/// context with the shared values. `#[graphile_worker::test]` without a
/// parameter starts no database.
#[graphile_worker::test]
async fn tasks_can_be_run_with_a_hand_made_context() {
    let mailer = Mailer::new();
    let job = Job::new(
        "send_receipt",
        json!({"order_id": 7, "email": "not an address"}),
    );
    let ctx = JobContext::builder(job).data(mailer.clone()).build();
    let payload: SendReceipt = serde_json::from_value(ctx.job().payload.clone()).unwrap();
    let error = payload.run(ctx).await.unwrap_err();
    assert!(error.is_permanent());
    assert_eq!(
        error.message(),
        "order 7: \"not an address\" is not an email address"
    );
    assert!(mailer.sent().is_empty());
}

/// A task that enqueues follow-up jobs, called by hand with the test
/// database's utilities: what it enqueued can be asserted as usual.
#[graphile_worker::test]
async fn a_task_called_by_hand_enqueues_into_the_test_database(db: TestDb) {
    let job = Job::new(
        FollowUp::IDENTIFIER,
        json!({"order_id": 9, "email": "ada@example.com"}),
    );
    let ctx = JobContext::builder(job).utils(db.utils().clone()).build();
    FollowUp {
        order_id: 9,
        email: "ada@example.com".into(),
    }
    .run(ctx)
    .await
    .unwrap();
    db.assert_enqueued(
        Enqueued::<SendSurvey>::new()
            .payload(SendSurvey {
                order_id: 9,
                email: "ada@example.com".into(),
            })
            .queue("emails"),
    )
    .await;
}

// ---------------------------------------------------------------------------
// What a failing assertion says
// ---------------------------------------------------------------------------

/// The message lists the jobs of the task that are there, and what differs:
///
/// ```text
/// expected a `send_receipt` job with payload {"email":"ada@example.com","order_id":2} enqueued,
/// but none of the 1 `send_receipt` job(s) there matches:
///   job 1: payload {"email":"ada@example.com","order_id":1}, queue "emails", priority 0,
///   run_at ... (due), attempts 0/25, key "receipt:1", flags -
///     differs in: payload
/// ```
#[graphile_worker::test]
#[should_panic(expected = "expected a `send_receipt` job with payload")]
async fn a_wrong_payload_fails_with_what_was_expected_and_what_was_there(db: TestDb) {
    place_order(db.utils(), &order(1)).await.unwrap();
    db.assert_enqueued(Enqueued::<SendReceipt>::new().payload(receipt(2)))
        .await;
}

/// The message shows the job that should not be there:
///
/// ```text
/// expected no `send_receipt` job with key "receipt:1", but found 1:
///   job 1: payload {"email":"ada@example.com","order_id":1}, queue "emails", ...
/// ```
#[graphile_worker::test]
#[should_panic(expected = "expected no `send_receipt` job with key \"receipt:1\", but found 1:")]
async fn assert_not_enqueued_fails_on_a_job_that_is_there(db: TestDb) {
    place_order(db.utils(), &order(1)).await.unwrap();
    db.assert_not_enqueued(Enqueued::<SendReceipt>::new().key("receipt:1"))
        .await;
}

/// A job enqueued before the scope began does not satisfy the scope:
///
/// ```text
/// expected a `send_receipt` job with payload {...} enqueued in this scope,
/// but no `send_receipt` job was (no job was enqueued in this scope)
/// 1 matching job(s) were enqueued before this scope began
/// ```
#[graphile_worker::test]
#[should_panic(expected = "1 matching job(s) were enqueued before this scope began")]
async fn a_scope_does_not_see_jobs_from_before_it(db: TestDb) {
    place_order(db.utils(), &order(1)).await.unwrap();
    let scope = db.scope().await;
    scope
        .assert_enqueued(Enqueued::<SendReceipt>::new().payload(receipt(1)))
        .await;
}

/// The message lists the runs:
///
/// ```text
/// expected every job to complete, but 1 of 1 runs did not:
///   job 2 `charge_card` (attempt 1): failed: order 1: the payment provider refused an empty charge (will retry)
/// ```
#[graphile_worker::test]
#[should_panic(expected = "expected every job to complete, but 1 of 1 runs did not")]
async fn assert_all_completed_lists_the_runs_that_did_not(db: TestDb) {
    place_order(
        db.utils(),
        &Order {
            cents: 0,
            ..order(1)
        },
    )
    .await
    .unwrap();
    db.run_jobs()
        .task("charge_card")
        .await
        .assert_all_completed();
}

/// `run_jobs()` without `.worker(..)` runs every registered task, and
/// `send_receipt` needs a `Mailer`: the worker refuses to start, saying so.
#[graphile_worker::test]
#[should_panic(
    expected = "task `send_receipt` takes `Data<graphile_worker_example_testing::Mailer>`, but the worker has no value of that type"
)]
async fn a_worker_without_the_shared_value_does_not_start(db: TestDb) {
    place_order(db.utils(), &order(1)).await.unwrap();
    // Every registered task, but no `Mailer` for `send_receipt`.
    db.run_jobs().await;
}

/// Checks for updates, and checks again: a job that enqueues itself
/// forever, the kind of bug `max_jobs` turns into a failure.
#[task]
async fn poll_for_updates(ctx: JobContext, round: u32) -> Result<(), graphile_worker::Error> {
    PollForUpdates::enqueue(ctx.utils(), PollForUpdates { round: round + 1 }).await?;
    Ok(())
}

/// A run stops at `max_jobs` and fails, listing the runs:
///
/// ```text
/// graphile_worker::testing: the run started 3 jobs, its bound, and stopped with more to do
/// (a task may be enqueueing jobs forever; raise .max_jobs(n) if not):
///   job 1 `poll_for_updates` (attempt 1): completed
///   ...
/// ```
#[graphile_worker::test]
#[should_panic(expected = "the run started 3 jobs")]
async fn a_job_that_enqueues_itself_forever_fails_the_run(db: TestDb) {
    PollForUpdates::enqueue(db.utils(), PollForUpdates { round: 1 })
        .await
        .unwrap();
    db.run_jobs().task("poll_for_updates").max_jobs(3).await;
}
