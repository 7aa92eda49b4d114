//! Two `#[task]`s with one identifier, one in a linked crate and one in this
//! binary: a worker built from the registry refuses to start and names both
//! source locations.
//!
//! The linked crate is named here only by `use ... as _;`, so this also shows
//! that such a line is enough to register a crate's tasks.

mod common;

use common::{assert_clash_with_linked_record_visit, from_registry_error};
use graphile_worker::{Error, Worker, task};
use graphile_worker_dev::fresh_database;

use graphile_worker_linked_tasks as _;

const LOCAL_LINE: u32 = line!() + 4;

/// Same identifier as the linked crate's `record_visit`.
#[task]
async fn record_visit(page: String) {
    let _ = page;
}

#[test]
fn use_as_underscore_registers_the_linked_crates_tasks() {
    let mut identifiers: Vec<&str> = graphile_worker::registered_tasks()
        .map(|t| t.identifier())
        .collect();
    identifiers.sort();
    assert_eq!(
        identifiers,
        ["linked.add_to_tally", "record_visit", "record_visit"]
    );
}

#[tokio::test]
async fn two_tasks_with_one_identifier_stop_the_worker_naming_both_places() {
    let db = fresh_database().await;

    let err = from_registry_error(&db.url).await;

    let places = assert_clash_with_linked_record_visit(
        &err,
        &format!("tests/registry_duplicate_task.rs:{LOCAL_LINE}"),
    );
    let message = err.to_string();
    assert!(
        message.contains(&places[0]) && message.contains(&places[1]),
        "{message}"
    );
    assert!(
        message.contains("give one of them another identifier"),
        "{message}"
    );

    // Selecting a subset does not hide the clash: it is found first.
    let err = Worker::from_registry()
        .database_url(&db.url)
        .only(&["linked.add_to_tally"])
        .init()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateTask { .. }), "{err:?}");
}
