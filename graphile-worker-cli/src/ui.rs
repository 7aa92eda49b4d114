//! `ui`: the admin web UI (graphile-worker-ui) served on its own.

use graphile_worker::WorkerUtils;
use graphile_worker_ui::{AdminUi, basic_auth};

use crate::UiArgs;
use crate::error::CliError;
use crate::output::Out;

/// With no password, a loopback server answers only requests addressed to
/// a loopback name: a web page whose host name an attacker re-points at
/// 127.0.0.1 (DNS rebinding) is refused instead of reading the pages and
/// their CSRF token.
fn loopback_hosts_only(router: axum::Router) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| async move {
            let host = request
                .headers()
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            // The name without its port: `[::1]:8080`, `localhost:8080`.
            let name = match host.strip_prefix('[') {
                Some(rest) => rest.split(']').next().map(|ip| format!("[{ip}]")),
                None => host.split(':').next().map(str::to_owned),
            }
            .unwrap_or_default()
            .to_ascii_lowercase();
            if matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]") {
                next.run(request).await
            } else {
                use axum::response::IntoResponse as _;
                (
                    axum::http::StatusCode::FORBIDDEN,
                    "Refused: this admin UI answers only to localhost, 127.0.0.1 or [::1]; use --basic-auth to serve it under another name.",
                )
                    .into_response()
            }
        },
    ))
}

pub(crate) async fn serve(out: &Out, utils: WorkerUtils, args: UiArgs) -> Result<(), CliError> {
    let credentials = match &args.basic_auth {
        None => None,
        Some(pair) => match pair.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                Some((user.to_owned(), password.to_owned()))
            }
            _ => {
                return Err(CliError::Usage(
                    "--basic-auth takes USER:PASS, both non-empty".to_owned(),
                ));
            }
        },
    };
    if !args.bind.ip().is_loopback() && credentials.is_none() && !args.read_only {
        return Err(CliError::Usage(format!(
            "refusing to serve the admin UI on {} without --basic-auth USER:PASS or --read-only: anyone who can reach that address could retry, fail and delete jobs",
            args.bind
        )));
    }
    let crontab = match &args.crontab {
        Some(path) => crate::admin::read_crontab(path)?,
        None => Vec::new(),
    };
    let mut router = AdminUi::new(utils)
        .read_only(args.read_only)
        .hide_payloads(args.hide_payloads)
        .crontab(crontab)
        .router();
    if let Some((user, password)) = &credentials {
        router = basic_auth(router, user, password);
    } else if args.bind.ip().is_loopback() {
        router = loopback_hosts_only(router);
    }
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| CliError::Failed(format!("could not listen on {}: {e}", args.bind)))?;
    let address = listener
        .local_addr()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let mut notes = Vec::new();
    if args.read_only {
        notes.push("read-only");
    }
    if credentials.is_some() {
        notes.push("basic auth");
    }
    if args.hide_payloads {
        notes.push("payloads hidden");
    }
    out.line(format!(
        "admin UI on http://{address}/{}; Ctrl-C stops it",
        if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        }
    ));
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| CliError::Failed(format!("the admin UI server failed: {e}")))
}
