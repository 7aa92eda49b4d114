//! A real PgBouncer (Debian's `pgbouncer` package) in transaction pooling
//! mode in front of the test server, for the tests that run workers
//! through it.
//!
//! ```no_run
//! # async fn example() {
//! let db = graphile_worker_dev::fresh_database().await;
//! let bouncer = graphile_worker_dev::pgbouncer::PgBouncer::start(&db.url);
//! // Connect the code under test to `bouncer.url()`.
//! # let _ = bouncer.url();
//! # }
//! ```
//!
//! It is configured the way a careful operator would: transaction pooling,
//! few server connections per database (so that clients share them, which
//! is what breaks named prepared statements), no reset query, and no
//! `ignore_startup_parameters` (so a client must not send parameters
//! PgBouncer does not know). As root it runs as the `postgres` user, since
//! PgBouncer refuses to run as root. It stops, and its files are removed,
//! when the [`PgBouncer`] is dropped.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

/// A running PgBouncer; stops when dropped.
#[derive(Debug)]
pub struct PgBouncer {
    url: String,
    log: PathBuf,
    stdin: Option<ChildStdin>,
    child: Child,
}

/// Server connections PgBouncer keeps per database and user: fewer than the
/// worker's pool, so that clients take turns on them.
pub const SERVER_CONNECTIONS: u32 = 3;

impl PgBouncer {
    /// Starts PgBouncer in front of the server of `database_url` (any
    /// database on it) and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// When PgBouncer is not installed (`apt-get install pgbouncer`), the
    /// URL does not parse, or it does not start within 20 s.
    pub fn start(database_url: &str) -> PgBouncer {
        let bin = find_pgbouncer();
        let options: PgConnectOptions = database_url
            .parse()
            .unwrap_or_else(|e| panic!("pgbouncer: cannot read the database URL: {e}"));
        let root = graphile_worker::testing::is_root();
        let dir = std::env::temp_dir().join(format!(
            "gw-pgbouncer-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("pgbouncer: create dir: {e}"));
        let port = free_port();
        let user = options.get_username().to_owned();
        let upstream_host = match options.get_host() {
            "localhost" => "127.0.0.1",
            host => host,
        };
        let log = dir.join("pgbouncer.log");
        let ini = dir.join("pgbouncer.ini");
        let users = dir.join("users.txt");
        write(&users, &format!("\"{user}\" \"\"\n"));
        write(
            &ini,
            &format!(
                "[databases]\n\
                 * = host={upstream_host} port={upstream_port} user={user}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {users}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {SERVER_CONNECTIONS}\n\
                 max_client_conn = 500\n\
                 server_reset_query =\n\
                 logfile = {log}\n\
                 pidfile = {dir}/pgbouncer.pid\n",
                upstream_port = options.get_port(),
                users = users.display(),
                log = log.display(),
                dir = dir.display(),
            ),
        );
        if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                ok,
                "pgbouncer: could not hand {} to postgres",
                dir.display()
            );
        }
        // The shell stops PgBouncer when this process closes its stdin (on
        // drop, or when the test process exits), then removes the files.
        let script = format!(
            "'{bin}' '{ini}' & pid=$!; read _ignored; kill $pid; wait $pid; rm -rf '{dir}'",
            bin = bin.display(),
            ini = ini.display(),
            dir = dir.display(),
        );
        let mut command = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "/bin/sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("/bin/sh");
            c.args(["-c", &script]);
            c
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("pgbouncer: cannot start it: {e}"));
        let stdin = child.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "pgbouncer exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen within 20 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let database = options.get_database().unwrap_or("postgres");
        PgBouncer {
            url: format!("postgres://{user}@127.0.0.1:{port}/{database}"),
            log,
            stdin,
            child,
        }
    }

    /// The URL of the same database through PgBouncer.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// PgBouncer's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.child.wait();
    }
}

fn find_pgbouncer() -> PathBuf {
    for candidate in ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("pgbouncer"))
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| panic!("pgbouncer is not installed (apt-get install pgbouncer)"))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text)
        .unwrap_or_else(|e| panic!("pgbouncer: write {}: {e}", path.display()));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("pgbouncer: no free port: {e}"))
}
