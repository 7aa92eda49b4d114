//! A small shop whose background work runs on graphile-worker: placing an
//! order sends a receipt, charges the card, and three days later asks the
//! customer how it went.
//!
//! The tests in `tests/shop.rs` show how to test such code with the
//! `testing` feature of graphile-worker.

#![warn(missing_docs)]

use std::sync::{Arc, Mutex};

use graphile_worker::{Data, JobContext, JobSpec, TaskError, WorkerUtils, task};

/// How long after an order the follow-up runs.
pub const FOLLOW_UP_AFTER: chrono::Duration = chrono::Duration::days(3);

/// An order, as the web shop takes it.
#[derive(Clone, Debug)]
pub struct Order {
    /// The order number.
    pub id: i64,
    /// Where the receipt and the survey go.
    pub email: String,
    /// What to charge, in cents.
    pub cents: i64,
}

/// Sends emails; this one only keeps them in an outbox, as a test double
/// would. Clones share the outbox, so a test keeps one clone and gives the
/// other to the worker.
#[derive(Clone, Debug, Default)]
pub struct Mailer {
    outbox: Arc<Mutex<Vec<String>>>,
}

impl Mailer {
    /// A mailer with an empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `subject` to `to`.
    pub fn send(&self, to: &str, subject: &str) {
        self.outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(format!("{to}: {subject}"));
    }

    /// Everything sent so far, as `"<to>: <subject>"`, oldest first.
    pub fn sent(&self) -> Vec<String> {
        self.outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Takes an order: queues its receipt (one per order, however often the
/// order is submitted), the card payment (before other work) and the
/// follow-up in three days.
pub async fn place_order(utils: &WorkerUtils, order: &Order) -> Result<(), graphile_worker::Error> {
    let receipt = SendReceipt {
        order_id: order.id,
        email: order.email.clone(),
    };
    let spec = JobSpec {
        job_key: Some(format!("receipt:{}", order.id)),
        ..JobSpec::default()
    };
    SendReceipt::enqueue_with(utils, receipt, spec).await?;

    let charge = ChargeCard {
        order_id: order.id,
        cents: order.cents,
    };
    let spec = JobSpec {
        flags: Some(vec!["payments".into()]),
        ..JobSpec::default()
    };
    ChargeCard::enqueue_with(utils, charge, spec).await?;

    let follow_up = FollowUp {
        order_id: order.id,
        email: order.email.clone(),
    };
    let spec = JobSpec {
        run_at: Some(chrono::Utc::now() + FOLLOW_UP_AFTER),
        ..JobSpec::default()
    };
    FollowUp::enqueue_with(utils, follow_up, spec).await?;
    Ok(())
}

/// Emails the receipt of an order.
#[task(queue = "emails")]
pub async fn send_receipt(
    mailer: Data<Mailer>,
    order_id: i64,
    email: String,
) -> Result<(), TaskError> {
    if !email.contains('@') {
        return Err(TaskError::permanent(format!(
            "order {order_id}: {email:?} is not an email address"
        )));
    }
    mailer.send(&email, &format!("Your receipt for order {order_id}"));
    Ok(())
}

/// Charges the customer's card: before other jobs, and at most 5 times.
#[task(priority = -1, max_attempts = 5)]
pub async fn charge_card(order_id: i64, cents: i64) -> Result<(), TaskError> {
    if cents < 0 {
        // No retry can fix this.
        return Err(TaskError::permanent(format!(
            "order {order_id}: cannot charge a negative amount ({cents} cents)"
        )));
    }
    if cents == 0 {
        // The payment provider refuses it; it may be fixed by then.
        return Err(TaskError::new(format!(
            "order {order_id}: the payment provider refused an empty charge"
        )));
    }
    // ... call the payment provider ...
    Ok(())
}

/// Follows an order up: queues the satisfaction survey.
#[task]
pub async fn follow_up(
    ctx: JobContext,
    order_id: i64,
    email: String,
) -> Result<(), graphile_worker::Error> {
    SendSurvey::enqueue(ctx.utils(), SendSurvey { order_id, email }).await?;
    Ok(())
}

/// Emails the satisfaction survey about an order.
#[task(queue = "emails")]
pub async fn send_survey(mailer: Data<Mailer>, order_id: i64, email: String) {
    mailer.send(&email, &format!("How was order {order_id}?"));
}
