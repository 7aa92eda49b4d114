//! The user guide (`docs/`, an mdBook): it builds without a warning, every
//! link in the built book resolves (files and `#anchors`), and every
//! chapter's code is compiled (each chapter is a doctest of this package,
//! listed in `src/lib.rs`; the last test checks none is missing there).
//!
//! mdBook is taken from `PATH` when it is the pinned version, else
//! installed once with `cargo install` into the target directory.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const MDBOOK_VERSION: &str = "0.5.4";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The mdbook binary: from PATH if it is the pinned version, else
/// installed into `target/tools` (once, under a file lock).
fn mdbook() -> PathBuf {
    static MDBOOK: OnceLock<PathBuf> = OnceLock::new();
    MDBOOK
        .get_or_init(|| {
            let on_path = Command::new("mdbook").arg("--version").output();
            if let Ok(out) = on_path
                && String::from_utf8_lossy(&out.stdout).contains(MDBOOK_VERSION)
            {
                return PathBuf::from("mdbook");
            }
            let tools = target_dir().join("tools");
            std::fs::create_dir_all(&tools).expect("create target/tools");
            let lock = std::fs::File::create(tools.join(".mdbook.lock")).expect("lock file");
            lock.lock().expect("lock");
            let bin = tools.join("bin/mdbook");
            let installed = Command::new(&bin)
                .arg("--version")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains(MDBOOK_VERSION))
                .unwrap_or(false);
            if !installed {
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                let status = Command::new(cargo)
                    .args(["install", "mdbook", "--locked", "--version", MDBOOK_VERSION])
                    .args(["--no-default-features", "--features", "search", "--root"])
                    .arg(&tools)
                    .status()
                    .expect("run cargo install mdbook");
                assert!(
                    status.success(),
                    "cargo install mdbook {MDBOOK_VERSION} failed"
                );
            }
            bin
        })
        .clone()
}

/// Builds the book into a fresh directory and returns it.
fn build() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // One directory, replaced by each run (a directory per run
            // piled up in the target directory).
            let dest = target_dir().join("guide-test");
            let _ = std::fs::remove_dir_all(&dest);
            let out = Command::new(mdbook())
                .arg("build")
                .arg(root().join("docs"))
                .arg("--dest-dir")
                .arg(&dest)
                .output()
                .expect("run mdbook");
            let log = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "mdbook build failed:\n{log}");
            let noisy: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            assert!(
                noisy.is_empty(),
                "mdbook build warned:\n{}",
                noisy.join("\n")
            );
            dest
        })
        .clone()
}

fn html_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            html_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "html") {
            found.push(path);
        }
    }
}

/// The values of `href="…"` and `src="…"` attributes in `html`.
fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["href=\"", "src=\""] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            if let Some(end) = rest.find('"') {
                out.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    out
}

/// The `id="…"` values in `html`.
fn ids(html: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut rest = html;
    while let Some(i) = rest.find(" id=\"") {
        rest = &rest[i + 5..];
        if let Some(end) = rest.find('"') {
            out.insert(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    out
}

fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_guide_builds_without_warnings_and_every_link_resolves() {
    let book = build();
    let mut pages = Vec::new();
    html_files(&book, &mut pages);
    assert!(pages.len() > 10, "only {} pages built", pages.len());
    let mut id_cache: HashMap<PathBuf, HashSet<String>> = HashMap::new();
    let mut broken = Vec::new();
    for page in &pages {
        // The not-found page links from the site's root (`<base href="/">`),
        // wherever the book is served.
        if page.file_name().is_some_and(|n| n == "404.html") {
            continue;
        }
        let html = std::fs::read_to_string(page).expect("read page");
        for link in links(&html) {
            let link = link.replace("&amp;", "&");
            if link.is_empty()
                || link.starts_with("http://")
                || link.starts_with("https://")
                || link.starts_with("mailto:")
                || link.starts_with("javascript:")
                || link.starts_with("data:")
                || link.contains("{{")
            {
                continue;
            }
            let (path, fragment) = match link.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (link.as_str(), None),
            };
            let path = path.split('?').next().unwrap_or_default();
            let target = if path.is_empty() {
                page.clone()
            } else {
                let t = page.parent().expect("page dir").join(decode(path));
                if t.is_dir() { t.join("index.html") } else { t }
            };
            if !target.exists() {
                broken.push(format!("{}: {link} (no such file)", page.display()));
                continue;
            }
            if let Some(fragment) = fragment
                && !fragment.is_empty()
                && target.extension().is_some_and(|e| e == "html")
            {
                let ids = id_cache.entry(target.clone()).or_insert_with(|| {
                    ids(&std::fs::read_to_string(&target).expect("read target"))
                });
                if !ids.contains(&decode(fragment)) {
                    broken.push(format!("{}: {link} (no such anchor)", page.display()));
                }
            }
        }
    }
    broken.sort();
    broken.dedup();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_chapter_is_compiled_as_a_doctest() {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("read src/lib.rs");
    let summary =
        std::fs::read_to_string(root().join("docs/src/SUMMARY.md")).expect("read SUMMARY.md");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root().join("docs/src"))
        .expect("docs/src")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".md") || name == "SUMMARY.md" {
            continue;
        }
        if !summary.contains(&format!("({name})")) {
            missing.push(format!("{name} is not in SUMMARY.md"));
        }
        if !lib.contains(&format!("\"../docs/src/{name}\"")) {
            missing.push(format!("{name} is not included as a doctest in src/lib.rs"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
