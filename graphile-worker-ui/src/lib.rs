//! An admin web UI for graphile-worker queues: an axum [`Router`] to nest in
//! your application (`/admin`), or `graphile-worker ui` standalone.
//!
//! Pages: a dashboard (counts by state, task and queue, the oldest ready
//! job, a chart of the last hour), jobs by state with filters and bulk
//! actions (Retry, Complete, Fail, Delete), one job in full (with
//! Reschedule), named queues (Pause, Resume), workers (Unlock), and cron
//! schedules. The words and states are the CLI's and the inspection API's.
//!
//! Server-rendered HTML, escaped by default; one vendored script (htmx) for
//! auto-refresh; every asset served by the router itself, so it works
//! offline and behind any prefix.
//!
//! # Embedding
//!
//! ```no_run
//! use axum::Router;
//! use graphile_worker::WorkerUtils;
//! use graphile_worker_ui::AdminUi;
//!
//! # async fn demo(utils: WorkerUtils) {
//! let app: Router = Router::new()
//!     .route("/", axum::routing::get(|| async { "my app" }))
//!     .nest("/admin", AdminUi::new(utils).router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```
//!
//! Authentication is the application's: put the nested router behind your
//! own middleware (a session check, `tower-http`'s auth layers), or use
//! [`basic_auth`] from this crate:
//!
//! ```no_run
//! # use graphile_worker_ui::{AdminUi, basic_auth};
//! # fn demo(utils: graphile_worker::WorkerUtils) -> axum::Router {
//! let admin = AdminUi::new(utils).router();
//! axum::Router::new().nest("/admin", basic_auth(admin, "ops", "a long password"))
//! # }
//! ```
//!
//! # Safety
//!
//! - Every value from the database is escaped.
//! - Actions are POSTs carrying a token only pages of this router know
//!   (cross-site requests cannot read it), and a browser's
//!   `Sec-Fetch-Site: cross-site` is refused too.
//! - [`AdminUi::read_only`] hides every action and answers every POST with
//!   403, changing nothing.
//! - [`AdminUi::hide_payloads`] keeps payloads off every page.

mod actions;
mod auth;
mod chart;
mod layout;
mod pages;
mod state;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use graphile_worker::{CronItem, WorkerUtils};

pub use auth::basic_auth;

/// The admin UI's settings; [`router`](Self::router) builds it.
///
/// ```no_run
/// # fn demo(utils: graphile_worker::WorkerUtils) {
/// let router = graphile_worker_ui::AdminUi::new(utils)
///     .read_only(true)
///     .hide_payloads(true)
///     .router();
/// # let _ = router;
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct AdminUi {
    utils: WorkerUtils,
    read_only: bool,
    hide_payloads: bool,
    crontab: Vec<CronItem>,
    sample_every: Duration,
}

impl AdminUi {
    /// A UI on `utils`' database and schema, with actions, payloads shown,
    /// no crontab, and the chart sampled every 10 s.
    pub fn new(utils: WorkerUtils) -> Self {
        AdminUi {
            utils,
            read_only: false,
            hide_payloads: false,
            crontab: Vec::new(),
            sample_every: Duration::from_secs(10),
        }
    }

    /// No actions: buttons are hidden and every POST gets 403.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Never show job payloads (they may hold personal data).
    pub fn hide_payloads(mut self, hide: bool) -> Self {
        self.hide_payloads = hide;
        self
    }

    /// The schedules the cron page shows the next fire time of (matched to
    /// the database's by identifier).
    pub fn crontab(mut self, items: Vec<CronItem>) -> Self {
        self.crontab = items;
        self
    }

    /// How often the dashboard's chart samples the counts by state
    /// (default 10 s; it keeps the last hour).
    pub fn sample_interval(mut self, every: Duration) -> Self {
        self.sample_every = every.max(Duration::from_millis(100));
        self
    }

    /// The router: pages, actions and assets. Starts the chart's sampler on
    /// the current Tokio runtime; it stops when the router is dropped.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn router(self) -> Router {
        let shared = Arc::new(state::Shared::new(self));
        chart::start_sampler(&shared);
        Router::new()
            .route("/", get(pages::dashboard))
            .route("/jobs", get(pages::jobs))
            .route("/jobs/{id}", get(pages::job))
            .route("/queues", get(pages::queues))
            .route("/workers", get(pages::workers))
            .route("/cron", get(pages::cron))
            .route("/assets/htmx.min.js", get(layout::htmx))
            .route("/assets/ui.css", get(layout::css))
            .route("/jobs/actions", post(actions::jobs))
            .route("/jobs/{id}/actions", post(actions::job))
            .route("/queues/actions", post(actions::queue))
            .route("/workers/actions", post(actions::workers))
            .with_state(shared)
    }
}
