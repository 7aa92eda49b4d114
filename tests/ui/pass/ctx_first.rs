//! The contract's example: context first, a custom error type.

use graphile_worker::{JobContext, Task, task};

#[derive(Debug)]
pub struct MyError(String);

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mail failed: {}", self.0)
    }
}

/// Sends one email.
#[task]
pub async fn send_email(ctx: JobContext, to: String, subject: String) -> Result<(), MyError> {
    if ctx.is_cancelled() {
        return Err(MyError(format!("{to}: {subject}")));
    }
    Ok(())
}

fn main() {
    assert_eq!(SendEmail::IDENTIFIER, "send_email");
    let payload = SendEmail {
        to: "a@example.com".into(),
        subject: "Hi".into(),
    };
    let copy = payload.clone();
    assert_eq!(
        serde_json::to_value(&copy).unwrap(),
        serde_json::json!({"to": "a@example.com", "subject": "Hi"})
    );
    let back: SendEmail =
        serde_json::from_value(serde_json::json!({"to": "b", "subject": "c"})).unwrap();
    assert_eq!((back.to.as_str(), back.subject.as_str()), ("b", "c"));
    assert!(format!("{payload:?}").contains("SendEmail"));
    assert_eq!(
        SendEmail::default_spec(),
        graphile_worker::JobSpec::default()
    );
    // The function is still there, with its own signature.
    let _still_callable: fn(JobContext, String, String) -> _ = send_email;
}
