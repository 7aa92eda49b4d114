//! The page frame, the shared bits of markup (times, states, notices,
//! confirmation buttons) and the embedded assets.

use axum::http::header;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use graphile_worker::JobState;
use maud::{DOCTYPE, Markup, html};

use crate::state::{Base, Shared};

const HTMX: &str = include_str!("../assets/htmx.min.js");
const CSS: &str = include_str!("../assets/ui.css");

pub(crate) async fn htmx() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        HTMX,
    )
}

pub(crate) async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
}

/// Which navigation entry is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Dashboard,
    Jobs,
    Queues,
    Workers,
    Cron,
}

/// A whole page.
pub(crate) fn page(
    shared: &Shared,
    base: &Base,
    nav: Nav,
    title: &str,
    notice: Option<&str>,
    body: Markup,
) -> Markup {
    let entries = [
        (Nav::Dashboard, "/", "Dashboard"),
        (Nav::Jobs, "/jobs", "Jobs"),
        (Nav::Queues, "/queues", "Queues"),
        (Nav::Workers, "/workers", "Workers"),
        (Nav::Cron, "/cron", "Cron"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(shared.csrf);
                title { (title) " · graphile-worker" }
                link rel="stylesheet" href=(base.at("/assets/ui.css"));
                script src=(base.at("/assets/htmx.min.js")) {}
            }
            body {
                header.top {
                    a.brand href=(base.at("/")) { "graphile-worker" }
                    nav {
                        @for (entry, path, label) in entries {
                            a href=(base.at(path)) class=[(entry == nav).then_some("current")] { (label) }
                        }
                    }
                    span.schema title="schema" { (shared.ui.utils.schema()) }
                    @if shared.ui.read_only { span.badge.readonly { "read-only" } }
                }
                main {
                    h1 { (title) }
                    @if let Some(notice) = notice {
                        p.notice role="status" { (notice) }
                    }
                    (body)
                }
            }
        }
    }
}

/// "3 min ago" / "in 5 s", with the exact UTC time on hover.
pub(crate) fn when(time: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    let seconds = (now - time).num_seconds();
    let (ago, span) = if seconds >= 0 {
        (true, seconds)
    } else {
        (false, -seconds)
    };
    let amount = if span < 60 {
        format!("{span} s")
    } else if span < 3600 {
        format!("{} min", span / 60)
    } else if span < 86_400 {
        format!("{} h", span / 3600)
    } else {
        format!("{} d", span / 86_400)
    };
    let text = if span < 2 {
        "now".to_owned()
    } else if ago {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    };
    html! {
        time datetime=(time.to_rfc3339()) title=(time.format("%Y-%m-%d %H:%M:%S UTC")) { (text) }
    }
}

pub(crate) fn state_badge(state: JobState) -> Markup {
    html! { span class={ "state state-" (state.as_str()) } { (state.as_str()) } }
}

/// The hidden CSRF field of an action form.
pub(crate) fn csrf_field(shared: &Shared) -> Markup {
    html! { input type="hidden" name="csrf" value=(shared.csrf); }
}

/// A submit button that asks for confirmation first.
pub(crate) fn confirm_button(label: &str, action: &str, question: &str, class: &str) -> Markup {
    // The question goes through JSON so that quotes in it cannot end the
    // script, then maud escapes the whole for the attribute.
    let question = serde_json::to_string(question).unwrap_or_else(|_| "\"Sure?\"".into());
    html! {
        button type="submit" name="action" value=(action) class=(class)
            onclick=(format!("return confirm({question})")) { (label) }
    }
}

/// A plain submit button.
pub(crate) fn button(label: &str, action: &str, class: &str) -> Markup {
    html! { button type="submit" name="action" value=(action) class=(class) { (label) } }
}

/// The label of a state in the tabs and counts.
pub(crate) fn state_label(state: JobState) -> &'static str {
    match state {
        JobState::Ready => "Ready",
        JobState::Scheduled => "Scheduled",
        JobState::Retrying => "Retrying",
        JobState::Locked => "Locked",
        JobState::Failed => "Failed",
    }
}
