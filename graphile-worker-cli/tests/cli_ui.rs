//! `graphile-worker ui`: what it refuses at start, and serving the admin UI
//! with basic authentication and read-only mode.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use support::{BIN, database, gw};

/// A running `graphile-worker ui`, stopped when dropped.
struct Served {
    child: Child,
    address: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(url: &str, args: &[&str]) -> Served {
    let mut child = Command::new(BIN)
        .env("DATABASE_URL", url)
        .env_remove("GRAPHILE_WORKER_SCHEMA")
        .args(["ui", "--bind", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start graphile-worker ui");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the first line");
    // "admin UI on http://127.0.0.1:PORT/ (...); Ctrl-C stops it"
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    Served { child, address }
}

/// Status line and body of one HTTP request.
fn request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (String, String) {
    request_to(address, address, method, path, headers, body)
}

/// The same, with the `Host` header naming `host`.
fn request_to(
    address: &str,
    host: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (String, String) {
    let mut stream = TcpStream::connect(address).expect("connect");
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    if !body.is_empty() {
        text.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(text.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_address_needs_auth_or_read_only() {
    let (db, _utils) = database(true).await;
    let run = gw(&db, &["ui", "--bind", "0.0.0.0:0"]).await.expect_code(2);
    assert_eq!(
        run.stderr.trim(),
        "graphile-worker: refusing to serve the admin UI on 0.0.0.0:0 without --basic-auth USER:PASS or --read-only: anyone who can reach that address could retry, fail and delete jobs"
    );
    let run = gw(&db, &["ui", "--basic-auth", "nopassword"])
        .await
        .expect_code(2);
    assert_eq!(
        run.stderr.trim(),
        "graphile-worker: --basic-auth takes USER:PASS, both non-empty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_ui_behind_basic_auth() {
    let (db, utils) = database(true).await;
    utils
        .add_raw_job(
            "send_email",
            serde_json::json!({"to": "ada@example.com"}),
            Default::default(),
        )
        .await
        .unwrap();
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let served = serve(&url, &["--basic-auth", "ops:secret"]);
        let (status, _) = request(&served.address, "GET", "/jobs", &[], "");
        assert_eq!(status, "HTTP/1.1 401 Unauthorized");
        // "ops:secret" in base64.
        let auth = "Authorization: Basic b3BzOnNlY3JldA==";
        let (status, body) = request(&served.address, "GET", "/jobs", &[auth], "");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("send_email"), "{body}");
        assert!(body.contains("name=\"action\""), "actions are on");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_shows_and_refuses() {
    let (db, utils) = database(true).await;
    let id = utils
        .add_raw_job("send_email", serde_json::json!({}), Default::default())
        .await
        .unwrap()
        .id;
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let served = serve(&url, &["--read-only", "--hide-payloads"]);
        let (status, body) = request(&served.address, "GET", &format!("/jobs/{id}"), &[], "");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(!body.contains("name=\"action\""), "no buttons: {body}");
        assert!(
            body.contains("Payloads are hidden on this server."),
            "{body}"
        );
        let token = body
            .split("name=\"csrf-token\" content=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_owned();
        let (status, _) = request(
            &served.address,
            "POST",
            &format!("/jobs/{id}/actions"),
            &[],
            &format!("csrf={token}&action=delete"),
        );
        assert_eq!(status, "HTTP/1.1 403 Forbidden");
        // Without a password, a host name re-pointed at 127.0.0.1 (DNS
        // rebinding) is refused; localhost is fine.
        let port = served
            .address
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        let (status, body) = request_to(
            &served.address,
            &format!("rebound.example:{port}"),
            "GET",
            "/jobs",
            &[],
            "",
        );
        assert_eq!(status, "HTTP/1.1 403 Forbidden");
        assert!(body.contains("answers only to localhost"), "{body}");
        let (status, _) = request_to(
            &served.address,
            &format!("localhost:{port}"),
            "GET",
            "/jobs",
            &[],
            "",
        );
        assert_eq!(status, "HTTP/1.1 200 OK");
    })
    .await
    .unwrap();
    assert!(
        utils.get_job(id).await.unwrap().is_some(),
        "nothing deleted"
    );
}
