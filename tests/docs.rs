//! The documentation keeps up with the code: the README lists every error, and the public docs
//! speak of the project and of the original library, by name.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// What `text` holds after the first `start`, up to the next `end`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let after = text
        .split_once(start)
        .unwrap_or_else(|| panic!("{start:?} not found"))
        .1;
    after.split(end).next().unwrap_or(after)
}

/// The variants of `NexusError`, read from its definition.
fn error_variants() -> Vec<String> {
    let source = read(&root().join("nexus-core/src/error.rs"));
    let body = between(&source, "pub enum NexusError {", "\n}\n");
    body.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("    ")?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            let first = name.chars().next()?;
            let after = &rest[name.len()..];
            (first.is_ascii_uppercase()
                && (after.starts_with(" {") || after.starts_with(',') || after.starts_with('(')))
            .then_some(name)
        })
        .collect()
}

#[test]
fn the_readme_names_every_variant_of_nexus_error() {
    let variants = error_variants();
    assert!(
        variants.len() >= 25 && variants.iter().any(|v| v == "EventNameClash"),
        "the parse of error.rs found {variants:?}"
    );
    let readme = read(&root().join("README.md"));
    let missing: Vec<&String> = variants
        .iter()
        .filter(|v| !readme.contains(&format!("`{v}`")))
        .collect();
    assert!(missing.is_empty(), "README.md does not name {missing:?}");
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn public_docs_speak_of_the_original_library_not_of_a_seed() {
    let mut files = Vec::new();
    for dir in [
        "src",
        "nexus-core/src",
        "nexus-macros/src",
        "nexus-sources/src",
        "nexus-bus/src",
    ] {
        sources(&root().join(dir), &mut files);
    }
    assert!(files.len() > 20, "found only {files:?}");
    let mut found = Vec::new();
    for file in &files {
        for (n, line) in read(file).lines().enumerate() {
            let line = line.trim_start();
            if (line.starts_with("///") || line.starts_with("//!"))
                && line.to_lowercase().contains("seed")
            {
                found.push(format!("{}:{}: {line}", file.display(), n + 1));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

/// Every line of the README's table of what nexus offers beside the original names tests that
/// exist: each file, and each test function named in it, is there.
#[test]
fn the_feature_table_names_tests_that_exist() {
    let readme = read(&root().join("README.md"));
    let table = between(&readme, "## Beside the original and the peers", "\n## ");
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| feature"))
        .collect();
    assert!(rows.len() >= 5, "{rows:?}");
    for row in rows {
        let tests = row.split(" | ").nth(2).expect("a tests column");
        let names: Vec<&str> = tests.split('`').skip(1).step_by(2).collect();
        let files: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| n.ends_with(".rs"))
            .collect();
        assert!(!files.is_empty(), "no test file named in: {row}");
        let sources: Vec<String> = files.iter().map(|file| read(&root().join(file))).collect();
        for name in names.iter().filter(|n| !n.ends_with(".rs")) {
            assert!(
                // A test function, or a trial of a harness of our own, named in quotes.
                sources.iter().any(|source| {
                    source.contains(&format!("fn {name}("))
                        || source.contains(&format!("Trial::needing(\"{name}\""))
                }),
                "test {name} of the row {row:?} not found in {files:?}"
            );
        }
    }
}
