//! No parameters at all: the payload is `{}`.

use graphile_worker::{Task, task};

#[task]
pub async fn nightly_cleanup() {}

fn main() {
    assert_eq!(NightlyCleanup::IDENTIFIER, "nightly_cleanup");
    assert_eq!(
        serde_json::to_value(NightlyCleanup {}).unwrap(),
        serde_json::json!({})
    );
    let _: NightlyCleanup = serde_json::from_value(serde_json::json!({})).unwrap();
    // Node's addJob without a payload stores `{}`; extra keys are ignored.
    let _: NightlyCleanup = serde_json::from_value(serde_json::json!({"extra": 1})).unwrap();
}
