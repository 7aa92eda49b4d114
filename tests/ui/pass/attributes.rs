//! Every attribute key: identifier, queue, max_attempts, priority,
//! rename_all and repeated cron.

use graphile_worker::{JobSpec, Task, task};

#[task(
    identifier = "emails.digest",
    queue = "emails",
    max_attempts = 3,
    priority = -5,
    rename_all = "camelCase",
    cron = "0 4 * * *",
    cron = "30 12 * * 1"
)]
async fn send_digest(user_id: i64, include_archived: bool) {
    let _ = (user_id, include_archived);
}

#[task(priority = 10)]
async fn low_priority() {}

fn main() {
    assert_eq!(SendDigest::IDENTIFIER, "emails.digest");
    assert_eq!(
        SendDigest::default_spec(),
        JobSpec {
            queue_name: Some("emails".into()),
            max_attempts: Some(3),
            priority: Some(-5),
            ..JobSpec::default()
        }
    );
    assert_eq!(
        serde_json::to_value(SendDigest {
            user_id: 1,
            include_archived: true
        })
        .unwrap(),
        serde_json::json!({"userId": 1, "includeArchived": true})
    );
    assert_eq!(LowPriority::default_spec().priority, Some(10));
    assert_eq!(LowPriority::default_spec().queue_name, None);

    let mut found: Vec<_> = graphile_worker::registered_tasks()
        .map(|t| (t.identifier(), t.cron().to_vec()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("emails.digest", vec!["0 4 * * *", "30 12 * * 1"]),
            ("low_priority", vec![]),
        ]
    );
    let digest = graphile_worker::registered_tasks()
        .find(|t| t.identifier() == "emails.digest")
        .unwrap();
    assert!(
        digest.location().contains("attributes.rs:"),
        "{}",
        digest.location()
    );
}
