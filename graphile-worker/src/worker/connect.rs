//! Connecting a worker: reading the database URL, a first connection that
//! reports why it failed, the pool, and whether a pool given is big enough.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::error::Error;
use crate::sql::StatementMode;

/// A pool for `url`: `max_pool_size`, or enough for `concurrency` jobs and
/// the engine (at least 10).
pub(super) async fn pool_from_url(
    url: &str,
    max_pool_size: Option<u32>,
    concurrency: usize,
    mode: StatementMode,
) -> Result<PgPool, Error> {
    pool_from_options(parse_database_url(url)?, max_pool_size, concurrency, mode).await
}

/// A pool for the listener's direct connection beside PgBouncer, connected
/// when the listener first asks (it retries on its own).
pub(super) fn listener_pool(url: &str) -> Result<PgPool, Error> {
    let options = parse_database_url(url).map_err(|e| match e {
        Error::InvalidDatabaseUrl { reason } => {
            Error::Config(format!("listen_url is not a valid database URL: {reason}"))
        }
        other => other,
    })?;
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .connect_lazy_with(options))
}

/// A pool on `options`, checked by connecting once.
pub(super) async fn pool_from_options(
    options: PgConnectOptions,
    max_pool_size: Option<u32>,
    concurrency: usize,
    mode: StatementMode,
) -> Result<PgPool, Error> {
    // PgBouncer refuses startup parameters it does not know unless told to
    // ignore them; sqlx sends this one by default.
    let options = match mode {
        StatementMode::Prepared => options,
        StatementMode::Unnamed => options.extra_float_digits(None),
    };
    check_connection(&options).await?;
    let size = max_pool_size.unwrap_or_else(|| needed(concurrency).max(10));
    let pool = PgPoolOptions::new()
        .max_connections(size)
        .connect_with(options)
        .await?;
    warn_if_pool_small(&pool, concurrency);
    Ok(pool)
}

/// Connections a worker may hold at once: one per running job, plus
/// [`ENGINE_CONNECTIONS`].
fn needed(concurrency: usize) -> u32 {
    u32::try_from(concurrency)
        .unwrap_or(u32::MAX)
        .saturating_add(ENGINE_CONNECTIONS)
}

/// How long the first connection may take. A refused connection fails at
/// once; this bounds a server that does not answer at all (a dropped
/// packet, a wrong address behind a firewall).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a database URL. The messages never repeat the URL, which may hold
/// a password.
fn parse_database_url(url: &str) -> Result<PgConnectOptions, Error> {
    let invalid = |reason: String| Error::InvalidDatabaseUrl { reason };
    if url.trim().is_empty() {
        return Err(invalid("it is empty".into()));
    }
    let options: PgConnectOptions = url.parse().map_err(|e| match e {
        sqlx::Error::Configuration(reason) => invalid(reason.to_string()),
        other => invalid(other.to_string()),
    })?;
    // The text parsed as a URL, so it has a scheme, and the scheme ends at
    // the first `:`.
    let scheme = url.trim_start().split(':').next().unwrap_or_default();
    if !scheme.eq_ignore_ascii_case("postgres") && !scheme.eq_ignore_ascii_case("postgresql") {
        return Err(invalid(format!(
            "it starts with `{scheme}:`, not `postgres:` or `postgresql:`"
        )));
    }
    Ok(options)
}

/// Where `options` connect, for messages: `host:port`, or the path of the
/// Unix socket.
fn connect_target(options: &PgConnectOptions) -> String {
    let host = options.get_host();
    let port = options.get_port();
    match options.get_socket() {
        Some(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
        None if host.starts_with('/') => format!("{host}/.s.PGSQL.{port}"),
        None if host.contains(':') => format!("[{host}]:{port}"),
        None => format!("{host}:{port}"),
    }
}

/// Opens one connection and closes it, so that a server that is down,
/// unreachable or refuses the login is reported at once with the reason. A
/// pool would retry until its acquire timeout (30 s) and then say only that
/// it timed out.
async fn check_connection(options: &PgConnectOptions) -> Result<(), Error> {
    let target = connect_target(options);
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options)).await {
        Ok(Ok(conn)) => {
            // The pool opens its own; failing to say goodbye is harmless.
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(error)) => Err(Error::Connect { target, error }),
        Err(_) => Err(Error::Connect {
            target,
            error: sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            )),
        }),
    }
}

/// Connections a worker may hold at once beyond one per running job: the
/// listener, a claim, the outcome writer, and lock refreshing or recovery.
/// (Heartbeats use a connection of their own, outside the pool.)
const ENGINE_CONNECTIONS: u32 = 4;

/// Warns when `pool` (given with `pg_pool`, or sized with `max_pool_size`) is smaller than the worker may
/// need: tasks and the engine would wait for each other's connections.
pub(super) fn warn_if_pool_small(pool: &PgPool, concurrency: usize) {
    let needed = needed(concurrency);
    let max = pool.options().get_max_connections();
    if max < needed {
        tracing::warn!(
            max_connections = max,
            needed,
            "the pool has {max} connections, but this worker may use {needed} at once (concurrency {concurrency} + {ENGINE_CONNECTIONS} for listening, claiming, writing outcomes and keeping locks fresh); jobs and the engine will wait for connections: give the pool at least {needed}"
        );
    }
}
