//! `#[task]` functions with `Data<T>` parameters, run through `Task::run`
//! with a hand-built context (no database): the payload keeps only the
//! payload fields, `required_data()` lists the shared types in parameter
//! order, the values arrive, and a missing one fails the job by name.

use std::any::type_name;
use std::sync::Mutex;

use graphile_worker::{Data, Job, JobContext, Task, TaskError, task};
use serde_json::json;

/// What the tasks did, registered on the context so the test can read it.
#[derive(Default)]
struct Outbox {
    sent: Mutex<Vec<String>>,
}

impl Outbox {
    fn sent(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }
}

struct Sender {
    from: String,
}

#[task]
async fn send_email(
    outbox: Data<Outbox>,
    to: String,
    ctx: JobContext,
    sender: graphile_worker::Data<Sender>,
    subject: String,
) -> Result<(), TaskError> {
    let line = format!("job {}: {} -> {to}: {subject}", ctx.job_id(), sender.from);
    outbox.sent.lock().unwrap().push(line);
    Ok(())
}

/// Shared values only; the payload is `{}`.
#[task]
async fn flush_outbox(outbox: Data<Outbox>) {
    outbox.sent.lock().unwrap().clear();
}

#[task]
async fn plain(id: i64) {
    let _ = id;
}

fn job(identifier: &str, payload: serde_json::Value) -> Job {
    Job::new(identifier, payload)
}

/// The text `JobContext::data` fails with when `T` was not registered.
fn missing<T>() -> String {
    let name = type_name::<T>();
    format!(
        "no value of type `{name}` was registered with the worker; add `.data(value)` with a `{name}` to WorkerOptions"
    )
}

#[test]
fn the_payload_has_only_the_payload_fields() {
    let payload = SendEmail {
        to: "ada@example.com".into(),
        subject: "Welcome".into(),
    };
    assert_eq!(
        serde_json::to_value(&payload).unwrap(),
        json!({"to": "ada@example.com", "subject": "Welcome"})
    );
    let decoded: SendEmail =
        serde_json::from_value(json!({"to": "b@example.com", "subject": "Hi"})).unwrap();
    assert_eq!(
        (decoded.to.as_str(), decoded.subject.as_str()),
        ("b@example.com", "Hi")
    );
    assert_eq!(serde_json::to_value(FlushOutbox {}).unwrap(), json!({}));
}

#[test]
fn required_data_lists_the_shared_types_in_parameter_order() {
    let names = |requirements: Vec<graphile_worker::DataRequirement>| {
        requirements
            .iter()
            .map(|r| r.type_name())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(SendEmail::required_data()),
        [type_name::<Outbox>(), type_name::<Sender>()]
    );
    assert_eq!(names(FlushOutbox::required_data()), [type_name::<Outbox>()]);
    assert!(Plain::required_data().is_empty());
}

#[tokio::test]
async fn run_receives_the_registered_values() {
    let payload = json!({"to": "ada@example.com", "subject": "Welcome"});
    let ctx = JobContext::builder(job("send_email", payload.clone()))
        .data(Outbox::default())
        .data(Sender {
            from: "noreply@example.com".into(),
        })
        .build();
    let task: SendEmail = serde_json::from_value(payload).unwrap();
    task.run(ctx.clone()).await.unwrap();
    let outbox = ctx.data::<Outbox>().unwrap();
    assert_eq!(
        outbox.sent(),
        ["job 1: noreply@example.com -> ada@example.com: Welcome"]
    );

    // The same values reach every task of the worker.
    FlushOutbox {}.run(ctx.clone()).await.unwrap();
    assert!(outbox.sent().is_empty());
}

#[tokio::test]
async fn a_missing_value_fails_the_job_without_calling_the_function() {
    let ctx = JobContext::builder(job("send_email", json!({})))
        .data(Outbox::default())
        .build();
    let task = SendEmail {
        to: "ada@example.com".into(),
        subject: "Welcome".into(),
    };
    let error = task.run(ctx.clone()).await.unwrap_err();
    assert_eq!(error.message(), missing::<Sender>());
    assert!(!error.is_permanent());
    assert!(ctx.data::<Outbox>().unwrap().sent().is_empty());

    // The first missing value, in parameter order, is the one named.
    let empty = JobContext::builder(job("send_email", json!({}))).build();
    let error = FlushOutbox {}.run(empty).await.unwrap_err();
    assert_eq!(error.message(), missing::<Outbox>());
}

#[tokio::test]
async fn the_function_can_be_called_directly_with_data_new() {
    let outbox = Data::new(Outbox::default());
    let ctx = JobContext::builder(job("send_email", json!({}))).build();
    let sender = Data::new(Sender {
        from: "me@example.com".into(),
    });
    send_email(
        outbox.clone(),
        "you@example.com".into(),
        ctx,
        sender,
        "Hi".into(),
    )
    .await
    .unwrap();
    assert_eq!(
        outbox.sent(),
        ["job 1: me@example.com -> you@example.com: Hi"]
    );
}
