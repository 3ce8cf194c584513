//! Repository rules that no compiler checks: every Rust file starts with a `//!` summary; the core depends on serde
//! only; only `mesh-kafka` names rdkafka and only `mesh-redis` names redis; the wall clock is read in one place;
//! every declared dependency is used.

use std::path::{Path, PathBuf};

use anyhow::Result;

/// The workspace root (the parent of `xtask/`).
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && p.file_name().is_some_and(|n| n != "target") {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The names under `[dependencies]` of a Cargo.toml (not dev- or build-dependencies).
fn dependencies(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut out = Vec::new();
    for line in manifest.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_deps = t == "[dependencies]";
            continue;
        }
        if in_deps && let Some((name, _)) = t.split_once('=') {
            let name = name.trim();
            if !name.is_empty() && !name.starts_with('#') {
                out.push(name.split('.').next().unwrap_or(name).to_owned());
            }
        }
    }
    out
}

/// Every violation, as `path: problem` lines.
pub(crate) fn check(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for dir in ["crates", "fixtures", "xtask", "bench", "chaos"] {
        rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        if !text.starts_with("//!") {
            problems.push(format!("{}: must start with a `//!` summary of what the file is for", f.display()));
        }
        if let Some(problem) = second_clock(f, &text) {
            problems.push(format!("{}: {problem}", f.display()));
        }
    }
    let mut manifests = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root.join("crates")) {
        for e in entries.flatten() {
            manifests.push(e.path().join("Cargo.toml"));
        }
    }
    for dir in ["fixtures", "bench", "chaos"] {
        manifests.push(root.join(dir).join("Cargo.toml"));
    }
    manifests.push(root.join("xtask/Cargo.toml"));
    manifests.sort();
    for m in &manifests {
        let Ok(text) = std::fs::read_to_string(m) else { continue };
        let crate_dir = m.parent().and_then(Path::file_name).and_then(|n| n.to_str()).unwrap_or("");
        let deps = dependencies(&text);
        if crate_dir == "mesh-core" {
            for d in deps.iter().filter(|d| *d != "serde") {
                problems
                    .push(format!("{}: the core depends on serde only, not {d} (keep it free of I/O)", m.display()));
            }
        }
        for d in unused_dependencies(&deps, &crate_sources(m)) {
            problems.push(format!("{}: declares {d} but no source of the crate names it; remove it", m.display()));
        }
        for (dep, owner) in [("rdkafka", "mesh-kafka"), ("redis", "mesh-redis")] {
            if deps.iter().any(|d| d == dep) && crate_dir != owner {
                problems.push(format!("{}: only {owner} may depend on {dep}; go through its adapter", m.display()));
            }
        }
    }
    Ok(problems)
}

/// The one file allowed to read the Unix clock as ms or µs: seven copies of `now_ms` once read it in different ways.
const CLOCK_FILE: &str = "crates/mesh-transport/src/clock.rs";

/// A definition of `now_ms`/`now_us` outside [`CLOCK_FILE`]: a second clock whose stamps may not compare.
fn second_clock(path: &Path, text: &str) -> Option<String> {
    // Spelt apart so that this file does not define what it looks for.
    let defines = ["now_ms", "now_us"].iter().any(|name| text.contains(&format!("fn {name}(")));
    (defines && !path.ends_with(CLOCK_FILE))
        .then(|| format!("reads its own clock; use mesh_transport::clock ({CLOCK_FILE})"))
}

/// Every Rust source of the crate whose manifest is `manifest`, concatenated.
fn crate_sources(manifest: &Path) -> String {
    let mut files = Vec::new();
    let dir = manifest.parent().unwrap_or(Path::new("."));
    for sub in ["src", "tests", "benches", "examples"] {
        rust_files(&dir.join(sub), &mut files);
    }
    rust_files_at(dir, &mut files);
    files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).collect::<Vec<_>>().join("\n")
}

/// `build.rs` and other sources at a crate's top level.
fn rust_files_at(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    out.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "rs")));
}

/// Dependencies that no source names (as `name::` or `name` in a `use`, with `-` as `_`). A crate kept only for a
/// feature it switches on elsewhere would be named here with why; none is today.
fn unused_dependencies(deps: &[String], sources: &str) -> Vec<String> {
    deps.iter()
        .filter(|d| {
            let ident = d.replace('-', "_");
            !(sources.contains(&format!("{ident}::")) || sources.contains(&format!("use {ident}")))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_is_tidy() {
        let problems = check(&repo_root()).expect("readable repository");
        assert!(problems.is_empty(), "tidy:\n{}", problems.join("\n"));
    }

    #[test]
    fn dependency_names_are_read_from_the_dependencies_table_only() {
        let m = "[package]\nname = \"x\"\n[dependencies]\nserde.workspace = true\ntokio = { version = \"1\" }\n[dev-dependencies]\nproptest = \"1\"\n";
        assert_eq!(dependencies(m), vec!["serde".to_owned(), "tokio".to_owned()]);
    }

    #[test]
    fn a_dependency_no_source_names_is_unused() {
        let deps = ["mesh-proto".to_owned(), "serde".to_owned(), "tokio".to_owned()];
        let sources = "use serde::Deserialize;\n#[tokio::main]\nasync fn main() {}\n";
        assert_eq!(unused_dependencies(&deps, sources), vec!["mesh-proto".to_owned()]);
    }

    #[test]
    fn only_the_clock_module_may_define_a_wall_clock() {
        let text = format!("pub fn {}() -> u64 {{ 0 }}", "now_ms");
        assert!(second_clock(Path::new("/repo/crates/mesh/src/bench.rs"), &text).is_some());
        assert!(second_clock(Path::new("/repo/crates/mesh-transport/src/clock.rs"), &text).is_none());
        assert!(second_clock(Path::new("/repo/crates/mesh/src/bench.rs"), "mesh_node::now_ms()").is_none());
    }
}
