//! What every handler shares: the settings, the CSRF token, the chart's
//! samples; and the request's base path (where the router is nested).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use rand::RngCore;

use crate::AdminUi;

/// Samples kept for the chart: an hour at the default interval.
pub(crate) const MAX_SAMPLES: usize = 360;

/// Jobs by state at one moment.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub(crate) at: DateTime<Utc>,
    /// Ready, scheduled, retrying, locked, failed.
    pub(crate) counts: [i64; 5],
}

pub(crate) struct Shared {
    pub(crate) ui: AdminUi,
    /// The token every action must carry.
    pub(crate) csrf: String,
    pub(crate) samples: Mutex<VecDeque<Sample>>,
}

pub(crate) type AppState = axum::extract::State<Arc<Shared>>;

impl Shared {
    pub(crate) fn new(ui: AdminUi) -> Self {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let csrf = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Shared {
            ui,
            csrf,
            samples: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The path the router is nested under (`""` at the root, `/admin` when
/// nested there), for links and form actions.
#[derive(Clone, Debug)]
pub(crate) struct Base(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for Base {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let inner = parts.uri.path().to_owned();
        let full = parts
            .extensions
            .get::<OriginalUri>()
            .map_or_else(|| inner.clone(), |o| o.0.path().to_owned());
        let base = match full.strip_suffix(inner.as_str()) {
            Some(base) => base,
            // `/admin` nested as `/admin` reaches the router as `/`.
            None if inner == "/" => full.as_str(),
            None => "",
        };
        let base = base.trim_end_matches('/');
        // Only a plain absolute path: `//host` or `/\host` in a redirect
        // would send the browser to another site.
        let safe = base.is_empty()
            || (base.starts_with('/')
                && !base[1..].starts_with(['/', '\\'])
                && !base.contains("\\"));
        Ok(Base(if safe { base.to_owned() } else { String::new() }))
    }
}

impl Base {
    /// `path` (starting with `/`) under the base. The root of a nested
    /// router is the base itself (`/admin`: axum's `nest` serves no
    /// `/admin/`).
    pub(crate) fn at(&self, path: &str) -> String {
        if path == "/" && !self.0.is_empty() {
            return self.0.clone();
        }
        format!("{}{path}", self.0)
    }
}
