//! The PostgreSQL the helpers run against: `DATABASE_URL` when set, else a
//! throwaway server started from the installed PostgreSQL binaries (found
//! on `PATH` or under `/usr/lib/postgresql/<version>/bin`) in a temporary
//! directory, on a free local port; as root, it runs as the `postgres` user
//! through `runuser`. It stops, and its files are removed, when the test
//! process exits.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

struct Server {
    /// URL without a database name.
    base: String,
    bin: PathBuf,
    data: PathBuf,
    root: bool,
    /// Closing this (at process exit) stops the server.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

/// The URL of the server the helpers use: `DATABASE_URL` if set, else a
/// throwaway server started on first use (its `postgres` database).
///
/// # Panics
///
/// When no server can be started, with the reason (no PostgreSQL binaries
/// installed, no `postgres` user when running as root, ...).
pub fn server_url() -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return url;
    }
    match SERVER.get_or_init(start_server) {
        Ok(server) => format!("{}/postgres", server.base),
        Err(e) => panic!(
            "could not start a throwaway PostgreSQL for the tests: {e}; or set DATABASE_URL to a server where this user may create databases"
        ),
    }
}

#[doc(hidden)]
/// Restarts the throwaway server (a fast shutdown, which drops every
/// connection, then a start on the same port) and waits until it accepts
/// connections again. Returns `false`, doing nothing, when `DATABASE_URL`
/// points at a server this process does not own.
pub fn restart_server() -> bool {
    if std::env::var_os("DATABASE_URL").is_some() {
        return false;
    }
    server_url();
    let Some(Ok(server)) = SERVER.get() else {
        return false;
    };
    let status = as_server_user(&server.bin.join("pg_ctl"), server.root)
        .arg("-D")
        .arg(&server.data)
        .args(["stop", "-m", "fast", "-w"])
        .stdout(Stdio::null())
        .status();
    assert!(
        status.map(|s| s.success()).unwrap_or(false),
        "pg_ctl stop failed"
    );
    let port: u16 = server
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready(&server.bin, port) {
        assert!(Instant::now() < deadline, "server did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn find_bin_dir() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("postgres").is_file() && dir.join("initdb").is_file() {
                // Follow symlinks to the real bin directory, which also holds
                // pg_isready.
                let real = std::fs::canonicalize(dir.join("postgres"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .unwrap_or(dir);
                return Ok(real);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| {
            "no PostgreSQL server binaries found: install the postgresql package or set DATABASE_URL"
                .to_string()
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| "no PostgreSQL server binaries under /usr/lib/postgresql".to_string())
}

#[doc(hidden)]
/// Whether this process runs as root (servers then run as `postgres`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Builds a command that runs `program` as the server's user.
fn as_server_user(program: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn start_server() -> Result<Server, String> {
    let bin = find_bin_dir()?;
    let root = is_root();
    let dir = std::env::temp_dir().join(format!(
        "gw-pg-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    if root {
        let ok = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err(
                "running as root, but could not hand the data directory to the `postgres` user; \
                 install the postgresql package (it creates that user) or set DATABASE_URL"
                    .into(),
            );
        }
    }
    let data = dir.join("data");
    let out = as_server_user(&bin.join("initdb"), root)
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        .arg("--locale=C")
        .output()
        .map_err(|e| format!("run initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }

    let mut last_error = String::new();
    for _ in 0..5 {
        let port = free_port()?;
        // The shell restarts the server whenever it stops (so tests can
        // restart it) and waits on its stdin; when this process exits the
        // pipe closes, and the shell stops the server and removes its files.
        let script = format!(
            "(while [ ! -e {dir}/stop ]; do {postgres} -D {data} -p {port} -k {dir} \
               -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
               -c full_page_writes=off -c max_connections=400 -c shared_buffers=128MB; \
               sleep 0.1; done) & loop=$!; \
             read _ignored; touch {dir}/stop; {pg_ctl} -D {data} stop -m fast >/dev/null 2>&1; \
             wait $loop; rm -rf {dir}",
            postgres = bin.join("postgres").display(),
            pg_ctl = bin.join("pg_ctl").display(),
            data = data.display(),
            dir = dir.display(),
        );
        let mut child = as_server_user(Path::new("/bin/sh"), root)
            .arg("-c")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start postgres: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let stderr = child.stderr.take();
        let base = format!("postgres://postgres@127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ready(&bin, port) {
                // Drain the server's log so it never blocks on a full pipe.
                if let Some(stderr) = stderr {
                    std::thread::spawn(move || {
                        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                            if std::env::var_os("GW_PG_LOG").is_some() {
                                eprintln!("postgres: {line}");
                            }
                        }
                    });
                }
                return Ok(Server {
                    base,
                    bin: bin.clone(),
                    data: data.clone(),
                    root,
                    _stdin: Mutex::new(stdin),
                    _child: Mutex::new(child),
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut log = String::new();
                if let Some(mut e) = stderr {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut log);
                }
                last_error = format!("postgres exited ({status}): {log}");
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                last_error = "postgres did not accept connections within 30 s".into();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Err(last_error)
}

/// Whether the server accepts connections (it may accept TCP before it is
/// ready for queries).
fn ready(bin: &Path, port: u16) -> bool {
    Command::new(bin.join("pg_isready"))
        .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(port.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[doc(hidden)]
/// Replaces the database name in a `postgres://` URL.
pub fn with_database(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let scheme_end = head.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}
