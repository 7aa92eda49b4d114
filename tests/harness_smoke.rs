//! The test harness itself: a throwaway server and Node graphile-worker.

mod common;

use common::node_install;
use graphile_worker_dev::fresh_database;

#[tokio::test]
async fn databases_are_fresh_and_separate() {
    let a = fresh_database().await;
    let b = fresh_database().await;
    assert_ne!(a.name, b.name);
    let pool = a.pool(2).await;
    let name: String = sqlx::query_scalar("select current_database()::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(name, a.name);
}

#[tokio::test]
async fn node_graphile_worker_migrates() {
    let db = fresh_database().await;
    node_install(&db, "graphile_worker").await;
    let pool = db.pool(2).await;
    let latest: i32 = sqlx::query_scalar("select max(id) from graphile_worker.migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(latest, 20);
}
