//! The library compiles in an application that uses sqlx with its default
//! features (`tests/downstream`): those turn on sqlx's `offline` feature,
//! which adds a method to the `Executor` trait the library implements. The
//! workspace itself builds sqlx without them, so only this catches a
//! mismatch.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn an_application_with_sqlx_default_features_compiles() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("downstream");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .arg("check")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(root.join("tests/downstream/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("run cargo check");
    assert!(
        out.status.success(),
        "tests/downstream does not compile:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
