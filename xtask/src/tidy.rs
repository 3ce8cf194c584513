//! Repository rules that no compiler checks: every Rust file starts with a `//!` summary; the core depends on serde
//! only; only `mesh-kafka` names rdkafka and only `mesh-redis` names redis.

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
    for dir in ["crates", "fixtures", "xtask", "bench"] {
        rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        if !text.starts_with("//!") {
            problems.push(format!("{}: must start with a `//!` summary of what the file is for", f.display()));
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
        for (dep, owner) in [("rdkafka", "mesh-kafka"), ("redis", "mesh-redis")] {
            if deps.iter().any(|d| d == dep) && crate_dir != owner {
                problems.push(format!("{}: only {owner} may depend on {dep}; go through its adapter", m.display()));
            }
        }
    }
    Ok(problems)
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
}
