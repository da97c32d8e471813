//! Tidy tests: cheap checks that keep the repository honest (in the spirit of
//! rust-analyzer's). They read files; they start nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn members() -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("workspace members");
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_crate_uses_the_workspace_lints() {
    for member in members() {
        let manifest = std::fs::read_to_string(root().join(&member).join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains("[lints]\nworkspace = true"),
            "{member}/Cargo.toml must inherit [workspace.lints]"
        );
    }
}

#[test]
fn architecture_md_maps_every_crate() {
    let map = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    for member in members() {
        assert!(
            map.contains(&format!("`{member}/`")),
            "ARCHITECTURE.md does not map {member}/"
        );
    }
}

#[test]
fn libraries_do_not_print() {
    // Libraries report through tracing and return values; only the binary talks to the
    // terminal.
    for member in members() {
        let mut files = Vec::new();
        rust_files(&root().join(&member).join("src"), &mut files);
        // Test modules (`tests.rs`, `*_tests.rs`) may print.
        files.retain(|f| !f.to_string_lossy().ends_with("tests.rs"));
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for needle in ["println!", "eprintln!", "dbg!("] {
                assert!(!code.contains(needle), "{} uses {needle}", file.display());
            }
        }
    }
}

#[test]
fn the_readme_names_only_commands_that_exist() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_prognos"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let mut named = 0;
    for word in readme
        .split(|c: char| c.is_whitespace() || c == '`')
        .collect::<Vec<_>>()
        .windows(2)
    {
        if word[0] == "prognos"
            && word[1].chars().all(|c| c.is_ascii_lowercase())
            && !word[1].is_empty()
        {
            named += 1;
            assert!(
                help.contains(&format!("\n  {} ", word[1])),
                "README uses `prognos {}`, which `prognos --help` does not list",
                word[1]
            );
        }
    }
    assert!(named >= 5, "the README should show the commands");
}
