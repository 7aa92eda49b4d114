//! An application as users write one: sqlx with its default features
//! (which turn on sqlx's `offline` feature and so change its `Executor`
//! trait), a `#[task]`, a worker. `tests/downstream_build.rs` checks that it
//! compiles.

use graphile_worker::{Worker, task};

/// Says hello.
#[task]
async fn hello(name: String) {
    println!("hello {name}");
}

#[tokio::main]
async fn main() -> Result<(), graphile_worker::Error> {
    let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    let _worker = Worker::from_registry().pg_pool(pool);
    Ok(())
}
