//! How statements reach the server: prepared and cached (the default), or
//! without named prepared statements, for PgBouncer in transaction pooling
//! mode.
//!
//! sqlx prepares every statement that has bind parameters under a name
//! (`sqlx_s_1`, ...) and caches it on the client connection. Behind PgBouncer
//! in transaction mode a client connection is handed a different server
//! connection for each transaction, so the cached name is missing there, or
//! belongs to another client. Even an unnamed statement is not safe on its
//! own: sqlx parses it in one round trip and binds it in the next, and
//! PgBouncer may move the client to another server in between.
//!
//! So in [`StatementMode::Unnamed`] every statement is unnamed, and a
//! statement sent outside a transaction is wrapped in one
//! ([`Autocommit`]): `BEGIN`, parse, bind and execute, `COMMIT`, all on the
//! one server connection PgBouncer keeps for the transaction. That is three
//! extra round trips per statement; statements already inside a transaction
//! ([`Unprepared`]) only lose the cache.

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt as _, TryStreamExt as _};
use sqlx::postgres::{PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Acquire, Either, Execute, Executor, Postgres, SqlStr};

/// Whether statements are prepared under names and cached (the default), or
/// sent unnamed (for PgBouncer in transaction pooling mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum StatementMode {
    /// Named, cached prepared statements: one round trip per statement once
    /// it is cached.
    #[default]
    Prepared,
    /// Unnamed statements, each inside a transaction.
    Unnamed,
}

/// A query sent as an unnamed statement (sqlx's "not persistent").
struct Unnamed<Q>(Q);

impl<'q, Q: Execute<'q, Postgres>> Execute<'q, Postgres> for Unnamed<Q> {
    fn sql(self) -> SqlStr {
        self.0.sql()
    }

    fn statement(&self) -> Option<&PgStatement> {
        self.0.statement()
    }

    fn take_arguments(
        &mut self,
    ) -> Result<Option<sqlx::postgres::PgArguments>, sqlx::error::BoxDynError> {
        self.0.take_arguments()
    }

    fn persistent(&self) -> bool {
        false
    }
}

/// An executor whose statements are unnamed in [`StatementMode::Unnamed`]:
/// for a transaction the caller holds (or an executor the caller gave us,
/// which must then be a transaction when running through PgBouncer).
#[derive(Debug)]
pub(crate) struct Unprepared<X> {
    pub(crate) inner: X,
    pub(crate) mode: StatementMode,
}

impl<'c, X> Executor<'c> for Unprepared<X>
where
    X: Executor<'c, Database = Postgres>,
{
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        match self.mode {
            StatementMode::Prepared => self.inner.fetch_many(query),
            StatementMode::Unnamed => self.inner.fetch_many(Unnamed(query)),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        match self.mode {
            StatementMode::Prepared => self.inner.fetch_optional(query),
            StatementMode::Unnamed => self.inner.fetch_optional(Unnamed(query)),
        }
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        self.inner.prepare_with(sql, parameters)
    }

    // sqlx's `macros` feature (on by default) turns on its `offline`
    // feature, which adds this method to the trait; Cargo.toml turns it on
    // here too, so that this impl compiles either way.
    fn describe<'e>(
        self,
        sql: SqlStr,
    ) -> BoxFuture<'e, Result<sqlx::Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        self.inner.describe(sql)
    }
}

/// An executor for statements sent outside a transaction (on the pool, or
/// on a connection of our own): in [`StatementMode::Unnamed`] each statement
/// runs unnamed in a transaction of its own, so that PgBouncer keeps it on
/// one server connection from parse to result.
#[derive(Debug)]
pub(crate) struct Autocommit<X> {
    pub(crate) inner: X,
    pub(crate) mode: StatementMode,
}

impl<'c, X> Executor<'c> for Autocommit<X>
where
    X: Executor<'c, Database = Postgres> + Acquire<'c, Database = Postgres> + 'c,
{
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        match self.mode {
            StatementMode::Prepared => self.inner.fetch_many(query),
            StatementMode::Unnamed => {
                let inner = self.inner;
                // The results are read whole before the commit; the callers
                // read small results.
                stream::once(async move {
                    let mut tx = inner.begin().await?;
                    let items: Vec<_> = (&mut *tx).fetch_many(Unnamed(query)).try_collect().await?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(stream::iter(items.into_iter().map(Ok)))
                })
                .try_flatten()
                .boxed()
            }
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        match self.mode {
            StatementMode::Prepared => self.inner.fetch_optional(query),
            StatementMode::Unnamed => {
                let inner = self.inner;
                Box::pin(async move {
                    let mut tx = inner.begin().await?;
                    let row = (&mut *tx).fetch_optional(Unnamed(query)).await?;
                    tx.commit().await?;
                    Ok(row)
                })
            }
        }
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        self.inner.prepare_with(sql, parameters)
    }

    // sqlx's `macros` feature (on by default) turns on its `offline`
    // feature, which adds this method to the trait; Cargo.toml turns it on
    // here too, so that this impl compiles either way.
    fn describe<'e>(
        self,
        sql: SqlStr,
    ) -> BoxFuture<'e, Result<sqlx::Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        self.inner.describe(sql)
    }
}
