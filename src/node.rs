//! Running Node graphile-worker 0.18 (from npm, pinned by
//! `tests/node/package-lock.json`) beside our worker.
//!
//! The packages are installed with `npm ci` into `target/node-interop/`,
//! once, outside the source tree; a file lock keeps concurrent test
//! binaries from installing at the same time.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();

fn source_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("node-interop")
}

fn install() -> Result<PathBuf, String> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let lock_file =
        std::fs::File::create(dir.join(".lock")).map_err(|e| format!("create lock file: {e}"))?;
    lock_file.lock().map_err(|e| format!("lock: {e}"))?;
    let lock = std::fs::read(source_dir().join("package-lock.json"))
        .map_err(|e| format!("read package-lock.json: {e}"))?;
    let installed_lock = std::fs::read(dir.join("installed-lock.json")).ok();
    if installed_lock.as_deref() != Some(&lock[..])
        || !dir.join("node_modules/graphile-worker").is_dir()
    {
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(source_dir().join(file), dir.join(file))
                .map_err(|e| format!("copy {file}: {e}"))?;
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("run npm (is Node.js installed?): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "npm ci failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::fs::write(dir.join("installed-lock.json"), &lock)
            .map_err(|e| format!("write marker: {e}"))?;
    }
    Ok(dir)
}

/// The directory holding `node_modules/graphile-worker`, installing it on
/// first use (panics with the reason if that fails).
pub fn node_dir() -> PathBuf {
    match INSTALLED.get_or_init(install) {
        Ok(dir) => dir.clone(),
        Err(e) => panic!("could not install Node graphile-worker: {e}"),
    }
}

/// Runs a JavaScript program with Node, where `require("graphile-worker")`
/// resolves to the pinned package. `DATABASE_URL` and
/// `GRAPHILE_WORKER_SCHEMA` are set for it. Returns its output once it exits.
pub async fn run_js(database_url: &str, schema: &str, script: &str) -> Output {
    let mut cmd = js_command(database_url, schema, script);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    tokio::process::Command::from(cmd)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run node: {e}"))
}

/// A `node` command for `script`, ready to spawn (for long-running workers).
pub fn js_command(database_url: &str, schema: &str, script: &str) -> Command {
    let dir = node_dir();
    let mut cmd = Command::new("node");
    cmd.arg("-e")
        .arg(script)
        .current_dir(&dir)
        .env("NODE_PATH", dir.join("node_modules"))
        .env("DATABASE_URL", database_url)
        .env("GRAPHILE_WORKER_SCHEMA", schema)
        .stdin(Stdio::null());
    cmd
}

/// Runs a script and panics with its output unless it succeeds; returns its
/// standard output.
pub async fn run_js_ok(database_url: &str, schema: &str, script: &str) -> String {
    let out = run_js(database_url, schema, script).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "node script failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
