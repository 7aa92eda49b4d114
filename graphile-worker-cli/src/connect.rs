//! Connecting: the URL from `-c`/`DATABASE_URL`, a small pool, and errors
//! that say where.

use std::time::Duration;

use graphile_worker::WorkerUtils;
use graphile_worker::sqlx::Connection as _;
use graphile_worker::sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

use crate::error::CliError;

/// How long to wait for the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The URL, or a usage error saying how to give one.
pub(crate) fn require_url(url: Option<&str>) -> Result<String, CliError> {
    url.filter(|u| !u.trim().is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            CliError::Usage(
                "no database given: pass --database-url (-c) or set DATABASE_URL".to_owned(),
            )
        })
}

/// Where a URL points, without its password: `host:port/database`.
pub(crate) fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default database)")
    )
}

/// A two-connection pool on the database, checked by connecting once.
pub(crate) async fn utils(
    url: Option<&str>,
    schema: &str,
    no_prepared_statements: bool,
) -> Result<WorkerUtils, CliError> {
    let url = require_url(url)?;
    let mut options: PgConnectOptions = url
        .parse()
        .map_err(|e| CliError::Usage(format!("the database URL is not valid: {e}")))?;
    if no_prepared_statements {
        // PgBouncer refuses this startup parameter unless told to ignore it.
        options = options.extra_float_digits(None);
    }
    // One connection first: a refused or unreachable server is reported at
    // once (a pool would retry until its timeout).
    let unreachable = |e: &dyn std::fmt::Display| {
        CliError::Failed(format!(
            "could not connect to the database at {}: {e}",
            describe(&options)
        ))
    };
    let first = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| unreachable(&format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))?
        .map_err(|e| unreachable(&e))?;
    let _ = first.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_lazy_with(options);
    let utils = WorkerUtils::new(pool, schema);
    Ok(if no_prepared_statements {
        utils.no_prepared_statements()
    } else {
        utils
    })
}

/// Like [`utils`], and the schema must be installed.
pub(crate) async fn installed(
    url: Option<&str>,
    schema: &str,
    no_prepared_statements: bool,
) -> Result<WorkerUtils, CliError> {
    let utils = utils(url, schema, no_prepared_statements).await?;
    let status = utils.migration_status().await?;
    if !status.installed {
        return Err(CliError::Failed(format!(
            "the {schema} schema is not installed in this database; run `graphile-worker migrate` first"
        )));
    }
    Ok(utils)
}
