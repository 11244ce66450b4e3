//! External programs some tests run (helm, promtool, a Lua interpreter): where to find them,
//! and what happens when one is missing — the test prints a SKIPPED line on a developer
//! machine, and fails under `CI=true`, where `scripts/test` installs every one of them.
//! Included with `#[path = "support/tools.rs"] mod tools;` so a test binary that needs only
//! this does not compile the operator harness.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Whether this run is CI's (`.ci/run` runs with `CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Finds a tool: the path in `env_var` when set (it must exist), else the first of
/// `candidates` that exists (a path relative to the repository root, or a bare name looked up
/// on PATH). None when there is none and this is not CI: the caller returns after the SKIPPED
/// line printed here. Under `CI=true` a missing tool fails the test.
pub fn find(test: &str, env_var: &str, candidates: &[&str], install: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        // Set but missing is a broken setup, not a reason to skip.
        assert!(
            path.is_file(),
            "{env_var}={} does not exist; {install}",
            path.display()
        );
        return Some(path);
    }
    let found = candidates.iter().find_map(|c| {
        if c.contains('/') {
            let path = root().join(c);
            path.is_file().then_some(path)
        } else {
            on_path(c)
        }
    });
    if found.is_none() {
        let why = format!("{env_var} is unset and none of {candidates:?} exists; {install}");
        assert!(!in_ci(), "{test}: CI=true, but {why}");
        eprintln!("SKIPPED {test}: {why}");
    }
    found
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Stdout then stderr of a finished program, as text.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `command` to its end; fails the test, with `what` and the program's output, unless it
/// exits with success.
pub fn run_ok(command: &mut Command, what: &str) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        output_text(&out)
    );
    out
}
