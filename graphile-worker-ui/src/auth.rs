//! HTTP basic authentication for the standalone server, or an application
//! that wants nothing more.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Puts `router` behind HTTP basic authentication with one user and
/// password (compared in constant time). Use it over HTTPS, or on a
/// loopback address: basic authentication sends the password with every
/// request.
///
/// ```no_run
/// # fn demo(utils: graphile_worker::WorkerUtils) -> axum::Router {
/// use graphile_worker_ui::{AdminUi, basic_auth};
/// basic_auth(AdminUi::new(utils).router(), "ops", "correct horse battery staple")
/// # }
/// ```
pub fn basic_auth(router: Router, user: &str, password: &str) -> Router {
    let expected: Arc<str> =
        format!("Basic {}", base64(format!("{user}:{password}").as_bytes())).into();
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let expected = expected.clone();
            async move {
                let given = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
                    next.run(request).await
                } else {
                    challenge()
                }
            }
        },
    ))
}

fn challenge() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"graphile-worker\", charset=\"UTF-8\"",
        )],
        "Sign in to see the queue.",
    )
        .into_response()
}

/// Whether `a` equals `b`, taking as long whatever they hold.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("ops:pässword", "b3BzOnDDpHNzd29yZA=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }
}
