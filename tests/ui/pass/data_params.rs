//! `Data<T>` parameters, in any position and mixed with the context and the
//! payload fields, are not part of the payload: the struct and `enqueue`
//! see only the fields, and `required_data()` lists the shared types.

use graphile_worker::{Data, JobContext, Task, WorkerUtils, task};

pub struct Mailer {
    pub from: String,
}

pub struct Templates;

#[task]
pub async fn send_email(
    mailer: Data<Mailer>,
    to: String,
    ctx: JobContext,
    templates: graphile_worker::Data<Templates>,
    subject: String,
) {
    let _ = (&mailer.from, to, ctx.job_id(), &*templates, subject);
}

/// Only shared values, no payload.
#[task]
async fn flush(_mailer: Data<Mailer>) {}

// `enqueue` still takes only the payload struct.
#[allow(dead_code)]
async fn enqueue(utils: &WorkerUtils) -> Result<(), graphile_worker::Error> {
    let payload = SendEmail {
        to: "a@example.com".into(),
        subject: "Hi".into(),
    };
    SendEmail::enqueue(utils, payload).await?;
    Flush::enqueue(utils, Flush {}).await?;
    Ok(())
}

fn main() {
    assert_eq!(
        serde_json::to_value(SendEmail {
            to: "a".into(),
            subject: "b".into(),
        })
        .unwrap(),
        serde_json::json!({"to": "a", "subject": "b"})
    );
    let names: Vec<&str> = <SendEmail as Task>::required_data()
        .iter()
        .map(|r| r.type_name())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names[0].ends_with("::Mailer"), "{names:?}");
    assert!(names[1].ends_with("::Templates"), "{names:?}");
    assert_eq!(Flush::required_data().len(), 1);
    // The function is still there, with its own signature.
    let _still_callable: fn(Data<Mailer>, String, JobContext, Data<Templates>, String) -> _ =
        send_email;
}
