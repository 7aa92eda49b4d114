//! What went wrong, in one line for stderr, and the exit code it gives.

use std::process::ExitCode;

/// A command's failure. Its `Display` is the message printed on stderr.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The command line asks for something impossible (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The command could not do what was asked (exit 1).
    #[error("{0}")]
    Failed(String),
    /// The library refused or the database failed (exit 1).
    #[error(transparent)]
    Worker(#[from] graphile_worker::Error),
}

impl CliError {
    /// 2 for usage errors, otherwise 1.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(2),
            CliError::Failed(_) | CliError::Worker(_) => ExitCode::from(1),
        }
    }
}

impl From<graphile_worker::sqlx::Error> for CliError {
    fn from(e: graphile_worker::sqlx::Error) -> Self {
        CliError::Worker(graphile_worker::Error::from(e))
    }
}
