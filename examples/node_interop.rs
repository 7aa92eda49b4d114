//! A Rust worker and a Node graphile-worker 0.18 worker on one database:
//! jobs go both ways.
//!
//! ```sh
//! cargo run --example node_interop
//! ```
//!
//! Needs Node.js and npm: Node graphile-worker is installed from npm (the
//! version pinned by `tests/node/package-lock.json`) into
//! `target/node-interop/` on the first run. No database needs to be
//! configured (a throwaway PostgreSQL, or `DATABASE_URL`).
//!
//! Node installs the schema here (either side may); Rust adds a job for a
//! Node task, Node adds one for a Rust task, and each worker runs its own.
//! The payloads are camelCase JSON on both sides.

use graphile_worker::{JobContext, Worker, WorkerUtils, task};
use graphile_worker_dev::node;

/// Runs jobs that Node added: `{ "orderId": 7, "customerEmail": "…" }`.
#[task(rename_all = "camelCase")]
async fn ship_order(ctx: JobContext, order_id: i64, customer_email: String) {
    println!(
        "  rust: shipping order {order_id} for {customer_email} (job {})",
        ctx.job_id()
    );
}

/// Node's side: install the schema, add a `ship_order` job for Rust, then
/// run the `send_invoice` jobs Rust added.
const NODE_SIDE: &str = r#"
const { runMigrations, quickAddJob, runOnce } = require("graphile-worker");
(async () => {
  const connectionString = process.env.DATABASE_URL;
  if (process.argv.includes("install")) {
    await runMigrations({ connectionString });
    return;
  }
  await quickAddJob({ connectionString }, "ship_order", { orderId: 7, customerEmail: "ada@example.com" });
  console.log("  node: added ship_order for order 7");
  await runOnce({
    connectionString,
    concurrency: 1,
    taskList: {
      send_invoice: async (payload, helpers) => {
        console.log(`  node: sending invoice ${payload.invoiceId} (job ${helpers.job.id})`);
      },
    },
  });
})().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = graphile_worker_dev::fresh_database().await;

    println!("Node installs the graphile_worker schema.");
    let install = node::js_command(&db.url, "graphile_worker", NODE_SIDE)
        .arg("install")
        .status()?;
    if !install.success() {
        return Err("node could not install the schema".into());
    }

    // Rust adds a job only Node runs, by identifier and JSON payload.
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let utils = WorkerUtils::new(pool.clone(), "graphile_worker");
    utils.migrate().await?; // adds this project's migration 20, keeps Node's rows
    utils
        .add_raw_job(
            "send_invoice",
            serde_json::json!({ "invoiceId": 42 }),
            Default::default(),
        )
        .await?;
    println!("  rust: added send_invoice for invoice 42");

    println!("Node adds a job for Rust and runs its own:");
    print!(
        "{}",
        node::run_js_ok(&db.url, "graphile_worker", NODE_SIDE).await
    );

    println!("Rust runs its own:");
    let worker = Worker::from_registry().pg_pool(pool.clone()).init().await?;
    worker.run_once().await?;

    let left: i64 = sqlx::query_scalar("select count(*) from graphile_worker.jobs")
        .fetch_one(&pool)
        .await?;
    println!("Jobs left: {left}.");
    Ok(())
}
