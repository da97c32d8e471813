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

/// The `[dependencies]` table of a member's manifest, as dependency names.
fn dependencies(member: &str) -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join(member).join("Cargo.toml")).unwrap();
    let mut names = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
            names.push(name.trim().to_owned());
        }
    }
    names
}

fn member_sources(member: &str) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(&root().join(member).join("src"), &mut files);
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            (f, text)
        })
        .collect()
}

#[test]
fn the_domain_crates_hold_no_http_types() {
    // Cargo enforces the seam: without the dependency, no axum or hyper type can appear. The
    // domain decides what a webhook is and where it may go; putting it on the wire (hyper's
    // client, TLS) is api/http's, behind the domain's `WebhookTransport` trait — so neither
    // an HTTP server type nor an HTTP client type reaches the domain.
    for member in ["api/service", "api/analytics", "models", "stats", "ingest"] {
        let deps = dependencies(member);
        assert!(!deps.is_empty(), "{member} has a [dependencies] table");
        for http in [
            "axum",
            "hyper",
            "hyper-util",
            "http",
            "http-body",
            "http-body-util",
            "tower",
            "tower-http",
            "tower-service",
            "reqwest",
            "tokio-rustls",
            "rustls",
        ] {
            assert!(
                !deps.iter().any(|d| d == http),
                "{member} depends on {http}: HTTP belongs to api/http"
            );
        }
    }
}

#[test]
fn the_domain_crates_describe_their_types_without_http() {
    // `utoipa` (ToSchema on request and response types) is allowed in the domain: it
    // describes types and holds no HTTP ones, as long as its framework bindings stay off.
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let line = manifest
        .lines()
        .find(|l| l.starts_with("utoipa ="))
        .expect("utoipa in [workspace.dependencies]");
    for binding in ["axum_extras", "actix_extras", "rocket_extras"] {
        assert!(!line.contains(binding), "utoipa must not enable {binding}");
    }
    for member in ["api/service", "api/analytics"] {
        assert!(!dependencies(member).iter().any(|d| d == "utoipa-axum"));
    }
}

#[test]
fn scope_is_never_a_like_pattern() {
    // `LIKE` treats `_` and `%` in a provider id as wildcards and ignores ASCII case, so
    // `sp_1` once saw `sp-1`'s network. Subtrees are exact prefixes (`auth::within`).
    for member in ["api/service", "api/analytics"] {
        for (file, text) in member_sources(member) {
            if file.to_string_lossy().ends_with("tests.rs") {
                continue;
            }
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                assert!(
                    !line.to_ascii_uppercase().contains(" LIKE "),
                    "{}:{}: SQL LIKE; compare exact prefixes (auth::within)",
                    file.display(),
                    n + 1
                );
            }
        }
    }
}

#[test]
fn the_console_renders_and_leaves_storage_to_the_domain() {
    // The console turns domain answers into pages: no SQL, no Parquet, no telemetry layout
    // of its own, so it cannot bypass the principal-scoped domain functions.
    let deps = dependencies("api/console");
    assert!(deps.iter().any(|d| d == "prognos-service"));
    for storage in ["sqlx", "parquet", "prognos-ingest", "arrow-array"] {
        assert!(
            !deps.iter().any(|d| d == storage),
            "api/console depends on {storage}: pages call prognos-service / prognos-analytics"
        );
    }
    // Only the HTTP crates speak HTTP.
    for member in members() {
        if ["api/http", "api/console"].contains(&member.as_str()) {
            continue;
        }
        assert!(
            !dependencies(&member).iter().any(|d| d == "axum"),
            "{member} depends on axum: HTTP belongs to api/http and api/console"
        );
    }
}

#[test]
fn only_the_broker_embeds_rumqttd() {
    let mut members = members();
    members.push(".".into());
    for member in members {
        if member == "broker" {
            assert!(dependencies(&member).iter().any(|d| d == "rumqttd"));
            continue;
        }
        assert!(
            !dependencies(&member).iter().any(|d| d == "rumqttd"),
            "{member} depends on rumqttd: only broker/ embeds it"
        );
    }
}

#[test]
fn models_depend_on_no_io_crate() {
    // models and stats are pure: time comes in as data, no files, sockets, threads or runtimes.
    for (member, allowed) in [
        ("models", &["thiserror", "serde", "prognos-stats"][..]),
        ("stats", &["thiserror", "serde"][..]),
    ] {
        for dep in dependencies(member) {
            assert!(
                allowed.contains(&dep.as_str()),
                "{member} depends on {dep}; it may use only {allowed:?}"
            );
        }
        for (file, text) in member_sources(member) {
            for needle in [
                "std::fs",
                "std::net",
                "std::thread",
                "tokio",
                "SystemTime",
                "Instant::now",
            ] {
                assert!(!text.contains(needle), "{} uses {needle}", file.display());
            }
        }
    }
}

#[test]
fn only_ingest_lays_out_the_telemetry_data_set() {
    // Partition paths and data file names are made by `ingest::layout` for the writer in
    // `ingest::store`; every other crate only parses them through the same module.
    for member in members() {
        if member == "ingest" {
            continue;
        }
        for (file, text) in member_sources(&member) {
            if file.to_string_lossy().ends_with("tests.rs") {
                continue; // tests may plant junk files in a data set
            }
            for needle in [
                "partition_dir(",
                "DataFileName {",
                "\"date=",
                "\"part-",
                "\"compact-",
            ] {
                assert!(
                    !text.contains(needle),
                    "{} builds data set paths ({needle}); use prognos_ingest::layout / store",
                    file.display()
                );
            }
        }
    }
}

/// The module path of a source file: `src/a/b.rs` and `src/a/b/mod.rs` → `a::b`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("lib" | "main" | "mod")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// Modules a file names through `crate::…` or `super::…` paths (before its test module).
fn imported_modules(module: &str, text: &str, modules: &[String]) -> Vec<String> {
    let before_tests = text.split("#[cfg(test)]").next().unwrap_or_default();
    // Doc links and comments name modules without importing them.
    let code: String = before_tests
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let code = code.as_str();
    let parent = module.rsplit_once("::").map_or("", |(p, _)| p).to_owned();
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", String::new()), ("super::", parent)] {
        for (i, _) in code.match_indices(prefix) {
            if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                continue; // `super::super::`, `foo::crate::` …
            }
            let path: String = code[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut best = None;
            let mut candidate = base.clone();
            for seg in path.split("::").filter(|s| !s.is_empty()) {
                candidate = if candidate.is_empty() {
                    seg.to_owned()
                } else {
                    format!("{candidate}::{seg}")
                };
                if modules.contains(&candidate) {
                    best = Some(candidate.clone());
                } else {
                    break;
                }
            }
            if let Some(m) = best {
                // A module may use its ancestors (the crate root re-exports) freely.
                let ancestor = module == m || module.starts_with(&format!("{m}::"));
                if !ancestor && !out.contains(&m) {
                    out.push(m);
                }
            }
        }
    }
    out
}

#[test]
fn no_module_imports_in_a_circle() {
    let mut members = members();
    members.push(".".into());
    for member in members {
        let src = root().join(&member).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        files.retain(|f| !f.to_string_lossy().ends_with("tests.rs"));
        let modules: Vec<String> = files.iter().map(|f| module_of(&src, f)).collect();
        let edges: Vec<Vec<usize>> = files
            .iter()
            .zip(&modules)
            .map(|(f, m)| {
                let text = std::fs::read_to_string(f).unwrap();
                imported_modules(m, &text, &modules)
                    .iter()
                    .filter_map(|t| modules.iter().position(|x| x == t))
                    .collect()
            })
            .collect();
        // Depth-first search for a back edge.
        fn visit(
            n: usize,
            edges: &[Vec<usize>],
            state: &mut [u8],
            stack: &mut Vec<usize>,
        ) -> Option<Vec<usize>> {
            state[n] = 1;
            stack.push(n);
            for &m in &edges[n] {
                if state[m] == 1 {
                    let at = stack.iter().position(|&x| x == m).unwrap();
                    return Some(stack[at..].to_vec());
                }
                if state[m] == 0
                    && let Some(c) = visit(m, edges, state, stack)
                {
                    return Some(c);
                }
            }
            stack.pop();
            state[n] = 2;
            None
        }
        let mut state = vec![0u8; modules.len()];
        for n in 0..modules.len() {
            if state[n] == 0
                && let Some(cycle) = visit(n, &edges, &mut state, &mut Vec::new())
            {
                let names: Vec<&str> = cycle.iter().map(|&i| modules[i].as_str()).collect();
                panic!(
                    "{member}: modules import each other in a circle: {}",
                    names.join(" → ")
                );
            }
        }
    }
}

#[test]
fn handlers_never_decide_scope() {
    // Authorisation lives in one layer: every domain method that carries a policy takes the
    // caller's principal and decides itself. The HTTP crate only authenticates; the console
    // may ask the role matrix which links to show, never filter or check scope itself.
    for (file, text) in member_sources("api/console") {
        for needle in [".require(", ".scope()", ".sees(", "provider_path"] {
            assert!(
                !text.contains(needle),
                "{} decides authorisation ({needle}); do it in the domain from the principal",
                file.display()
            );
        }
    }
    for (file, text) in member_sources("api/http") {
        if file.to_string_lossy().ends_with("tests.rs") {
            continue;
        }
        for needle in [
            ".require(",
            ".scope()",
            ".sees(",
            "Role::Provider",
            ".role ",
        ] {
            assert!(
                !text.contains(needle),
                "{} decides authorisation ({needle}); do it in the domain from the principal",
                file.display()
            );
        }
    }
}
