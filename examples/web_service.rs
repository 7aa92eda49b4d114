//! A web service that adds a job in the same transaction as its own insert,
//! and runs the worker in the same process.
//!
//! ```sh
//! cargo run --example web_service
//! ```
//!
//! `POST /signup/{email}` inserts a user and, in the same transaction,
//! enqueues their welcome email: if the insert fails (the address is taken),
//! the transaction rolls back and no email job exists; if it commits, the
//! job exists. The worker runs beside the HTTP server, on the same pool, and
//! both stop together.
//!
//! The program plays its own client: it signs up a user, tries the same
//! address again, waits until the welcome email was sent, prints what
//! happened and exits. No database needs to be configured (a throwaway
//! PostgreSQL, or `DATABASE_URL`).

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use graphile_worker::{Data, JobContext, Worker, WorkerUtils, task};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

/// Where sent emails go (an SMTP client in a real service).
struct Outbox(mpsc::UnboundedSender<String>);

/// Sends the welcome email of user `user_id`.
#[task]
async fn send_welcome(
    ctx: JobContext,
    outbox: Data<Outbox>,
    user_id: i64,
    email: String,
) -> Result<(), String> {
    let line = format!(
        "welcome email to {email} (user {user_id}, job {})",
        ctx.job_id()
    );
    outbox.0.send(line).map_err(|e| e.to_string())
}

/// The HTTP handlers' state: the pool and the worker utilities.
#[derive(Clone)]
struct App {
    pool: sqlx::PgPool,
    utils: WorkerUtils,
}

/// Inserts the user and enqueues their welcome email in one transaction.
async fn signup(State(app): State<App>, Path(email): Path<String>) -> (StatusCode, String) {
    if !email.contains('@') {
        return (
            StatusCode::BAD_REQUEST,
            format!("{email} is not an email address\n"),
        );
    }
    let result: Result<i64, graphile_worker::Error> = async {
        let mut tx = app.pool.begin().await?;
        let user_id: i64 = sqlx::query_scalar("insert into users (email) values ($1) returning id")
            .bind(&email)
            .fetch_one(&mut *tx)
            .await?;
        SendWelcome::enqueue_in(
            &app.utils,
            &mut *tx,
            SendWelcome {
                user_id,
                email: email.clone(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(user_id)
    }
    .await;
    match result {
        Ok(id) => (StatusCode::CREATED, format!("user {id} created\n")),
        Err(graphile_worker::Error::Database(e))
            if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505") =>
        {
            (
                StatusCode::CONFLICT,
                format!("{email} is already signed up\n"),
            )
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// Sends one request to the service and returns its status line.
async fn post_to(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
    Ok(format!("{status}: {body}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A database to play with. In a service: your own DATABASE_URL.
    let db = graphile_worker_dev::fresh_database().await;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    sqlx::query("create table users (id bigserial primary key, email text unique not null)")
        .execute(&pool)
        .await?;

    // The worker shares the service's pool; init() installs the schema.
    let (sent, mut outbox) = mpsc::unbounded_channel();
    let worker = Worker::from_registry()
        .pg_pool(pool.clone())
        .concurrency(4)
        .data(Outbox(sent))
        .init()
        .await?;
    // When the worker stops (SIGINT/SIGTERM, or below), so does the server.
    let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let worker = worker.clone();
        async move {
            let result = worker.run().await;
            let _ = server_stop.send(());
            result
        }
    });

    let app = App {
        pool: pool.clone(),
        utils: worker.utils().clone(),
    };
    let router = Router::new()
        .route("/signup/{email}", post(signup))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = server_stopped.await;
            })
            .await
    });
    println!("Listening on http://{addr}");

    for path in [
        "/signup/ada@example.com",
        "/signup/ada@example.com",
        "/signup/not-an-address",
    ] {
        println!("POST {path} -> {}", post_to(addr, path).await?);
    }
    let email = tokio::time::timeout(Duration::from_secs(30), outbox.recv())
        .await?
        .ok_or("the worker stopped")?;
    println!("The worker sent the {email}.");

    // A graceful shutdown waits for running jobs and writes their outcomes
    // (completions are batched, so the row may still be there a moment after
    // the task returned).
    worker.shutdown_handle().shutdown();
    running.await??;
    server.await??;
    println!("The worker and the server stopped.");

    let jobs: i64 = sqlx::query_scalar("select count(*) from graphile_worker.jobs")
        .fetch_one(&pool)
        .await?;
    println!(
        "Jobs left: {jobs}. The second signup rolled back, so it added no email job; \
         the first one's job ran and is gone."
    );
    Ok(())
}
