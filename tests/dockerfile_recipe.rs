//! The Dockerfile's build, replayed outside Docker (there is no Docker engine in CI): the
//! builder stage's COPYs are copied into a scratch directory in the same layout, and its RUN
//! commands run there — `scripts/cargo-stubs`, then the stage's cargo invocation as
//! `cargo metadata --locked` plus `cargo check --locked` of the same package and binary (a check
//! instead of a release build, sharing this checkout's target directory, to stay fast). A
//! manifest change that would break the image build (a target file the stub layer lacks, a new
//! workspace member not copied, a stale Cargo.lock, sources outside `src/`) fails here.
//!
//! What it does not cover: pulling the base images, the release profile's codegen, the runtime
//! stage (only checked statically below: pinned digests, labels, the binary path, the uid).

// Only root() and run_ok() of the tool helpers are used here.
#[allow(dead_code)]
#[path = "support/tools.rs"]
mod tools;

use std::path::Path;
use std::process::Command;

use tools::{root, run_ok};

/// The exact cargo invocation the issue prescribes for the image.
const BUILD: &str = "cargo build --release --locked -p keyfleet --bin keyfleet";

/// One Dockerfile instruction: keyword and arguments (continuation lines joined, comments out).
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
    /// The comment lines right above it.
    comment: Vec<String>,
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = vec![];
    let mut comment = vec![];
    let mut pending: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_none() {
            if let Some(c) = trimmed.strip_prefix('#') {
                comment.push(c.trim().to_string());
                continue;
            }
            if trimmed.is_empty() {
                comment.clear();
                continue;
            }
        }
        let mut logical = pending.take().unwrap_or_default();
        if let Some(cont) = trimmed.strip_suffix('\\') {
            logical.push_str(cont.trim());
            logical.push(' ');
            pending = Some(logical);
            continue;
        }
        logical.push_str(trimmed);
        let (keyword, args) = logical.split_once(' ').unwrap_or((&logical, ""));
        out.push(Instruction {
            keyword: keyword.to_uppercase(),
            args: args.trim().to_string(),
            comment: std::mem::take(&mut comment),
        });
    }
    out
}

fn dockerfile() -> Vec<Instruction> {
    instructions(&std::fs::read_to_string(root().join("Dockerfile")).unwrap())
}

/// The stages: (FROM instruction, its instructions).
fn stages(all: &[Instruction]) -> Vec<(&Instruction, Vec<&Instruction>)> {
    let mut out: Vec<(&Instruction, Vec<&Instruction>)> = vec![];
    for i in all {
        if i.keyword == "FROM" {
            out.push((i, vec![]));
        } else if let Some(last) = out.last_mut() {
            last.1.push(i);
        }
    }
    out
}

fn copy_into(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_into(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("COPY {}: {e}", from.display()));
    }
}

fn cargo(dir: &Path, args: &[&str]) {
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(args)
        .current_dir(dir)
        // Shared with this checkout: dependencies are already built; only the copied crate
        // itself is checked again.
        .env("CARGO_TARGET_DIR", root().join("target"))
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("CARGO_PKG_NAME");
    run_ok(
        &mut cargo,
        &format!("cargo {args:?} in the replayed build context"),
    );
}

/// Runs `scripts/cargo-stubs` in the replayed build context, as the Dockerfile's RUN does.
fn cargo_stubs(context: &Path) {
    let mut stubs = Command::new("sh");
    stubs.arg("scripts/cargo-stubs").current_dir(context);
    run_ok(&mut stubs, "scripts/cargo-stubs");
}

#[test]
fn the_builder_stage_builds_from_exactly_what_it_copies() {
    let all = dockerfile();
    let stages = stages(&all);
    let (_, builder) = stages
        .iter()
        .find(|(from, _)| from.args.ends_with(" AS builder"))
        .expect("a builder stage");

    // A fixed scratch directory (inside target/, ignored by git) so the copied crate keeps one
    // fingerprint across runs instead of adding one per run to the shared target directory.
    let context = root().join("target/dockerfile-recipe/build");
    if context.exists() {
        std::fs::remove_dir_all(&context).unwrap();
    }
    std::fs::create_dir_all(&context).unwrap();

    let mut copied = vec![];
    let mut builds = 0;
    for step in builder {
        match step.keyword.as_str() {
            "WORKDIR" => assert_eq!(step.args, "/build"),
            "COPY" => {
                let parts: Vec<&str> = step.args.split_whitespace().collect();
                assert!(
                    !parts[0].starts_with("--"),
                    "unexpected COPY flags: {step:?}"
                );
                let (dest, sources) = parts.split_last().unwrap();
                for source in sources {
                    let target = if dest.ends_with('/') || sources.len() > 1 {
                        context
                            .join(dest)
                            .join(Path::new(source).file_name().unwrap())
                    } else {
                        context.join(dest)
                    };
                    copy_into(&root().join(source), &target);
                    copied.push(source.to_string());
                }
            }
            "RUN" => {
                for command in step.args.split("&&").map(str::trim) {
                    if command == BUILD {
                        builds += 1;
                        cargo(&context, &["metadata", "--locked", "--format-version", "1"]);
                        cargo(
                            &context,
                            &["check", "--locked", "-p", "keyfleet", "--bin", "keyfleet"],
                        );
                    } else if command == "cargo clean --release -p keyfleet"
                        || command.starts_with("install -D -m 0755 target/release/keyfleet ")
                    {
                        // Not replayed: they act on release artifacts a check does not make
                        // (and the shared target directory must keep its own).
                    } else if command == "scripts/cargo-stubs" {
                        cargo_stubs(&context);
                    } else {
                        panic!("the replay does not know this RUN command: {command:?}");
                    }
                }
            }
            other => panic!(
                "unexpected instruction in the builder stage: {other} {}",
                step.args
            ),
        }
    }
    assert_eq!(
        builds, 2,
        "the dependency layer and the real build, both `{BUILD}`"
    );

    // Every workspace member's manifest is copied (a new member missing from the Dockerfile
    // would break the dependency layer) and nothing but manifests, the stub script and src/.
    let metadata = Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--no-deps", "--format-version", "1"])
        .current_dir(root())
        .output()
        .unwrap();
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout).unwrap();
    for package in metadata["packages"].as_array().unwrap() {
        let manifest = Path::new(package["manifest_path"].as_str().unwrap());
        let relative = manifest.strip_prefix(root()).unwrap().to_str().unwrap();
        assert!(
            copied.iter().any(|c| c == relative),
            "the Dockerfile does not COPY {relative}"
        );
    }
    copied.sort();
    assert_eq!(
        copied
            .iter()
            .filter(|c| !c.ends_with("Cargo.toml"))
            .collect::<Vec<_>>(),
        ["Cargo.lock", "scripts/cargo-stubs", "src"]
    );
}

/// The stub layer alone: `cargo metadata --locked` resolves the workspace from the manifests and
/// stubs, before any source is copied (the case the issue found broken: a [[bench]] target).
#[test]
fn the_stub_layer_resolves_the_workspace_without_sources() {
    let context = root().join("target/dockerfile-recipe/stubs");
    if context.exists() {
        std::fs::remove_dir_all(&context).unwrap();
    }
    std::fs::create_dir_all(&context).unwrap();
    for file in ["Cargo.toml", "Cargo.lock", "scripts/cargo-stubs"] {
        copy_into(&root().join(file), &context.join(file));
    }
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let manifest = dir.join("Cargo.toml");
        if manifest.is_file() {
            let name = dir.file_name().unwrap();
            copy_into(
                &manifest,
                &context.join("crates").join(name).join("Cargo.toml"),
            );
        }
    }
    // Without stubs cargo cannot even read the workspace.
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--format-version", "1", "--no-deps"])
        .current_dir(&context)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the manifests alone should not resolve"
    );
    cargo_stubs(&context);
    for stub in [
        "src/main.rs",
        "src/lib.rs",
        "benches/fleet.rs",
        "benches/validate.rs",
    ] {
        assert!(context.join(stub).is_file(), "{stub} not stubbed");
    }
    cargo(&context, &["metadata", "--locked", "--format-version", "1"]);
}

/// The runtime stage and the metadata around the build, checked statically.
#[test]
fn base_images_are_pinned_and_the_image_is_labelled() {
    let all = dockerfile();
    let stages = stages(&all);
    let cargo_toml = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(
        cargo_toml.contains("[profile.release]\nstrip = true"),
        "release binaries are stripped"
    );
    let version = cargo_toml
        .lines()
        .skip_while(|l| *l != "[workspace.package]")
        .find_map(|l| l.strip_prefix("version = "))
        .unwrap()
        .trim_matches('"')
        .to_string();

    assert_eq!(stages.len(), 2);
    for (from, _) in &stages {
        // FROM <image>@sha256:<64 hex>, and the tag it stands for in the comment above.
        let image = from.args.split_whitespace().next().unwrap();
        let (name, digest) = image.split_once("@sha256:").expect("pinned by digest");
        assert!(
            digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
            "{image}"
        );
        // `FROM name:tag@sha256:...` keeps the tag for readers; Docker uses the digest alone.
        assert!(
            name.contains(':'),
            "FROM {image} names its tag before the digest"
        );
        assert_eq!(
            from.comment.first().map(String::as_str),
            Some(name),
            "the comment above FROM {name} repeats its tag"
        );
    }
    assert_eq!(
        stages[0].0.comment.first().unwrap(),
        "rust:1.95-bookworm",
        "the toolchain of rust-version"
    );
    assert_eq!(
        stages[1].0.comment.first().unwrap(),
        "gcr.io/distroless/cc-debian12:nonroot"
    );

    let runtime = &stages[1].1;
    let find = |keyword: &str| -> Vec<&str> {
        runtime
            .iter()
            .filter(|i| i.keyword == keyword)
            .map(|i| i.args.as_str())
            .collect()
    };
    assert_eq!(find("COPY"), ["--from=builder /out/keyfleet /keyfleet"]);
    assert_eq!(find("USER"), ["65532:65532"]);
    assert_eq!(find("ENTRYPOINT"), [r#"["/keyfleet"]"#]);
    assert_eq!(find("CMD"), [r#"["run"]"#]);
    assert_eq!(find("ARG"), [format!("VERSION={version}")]);
    let labels = find("LABEL").join(" ");
    for (key, value) in [
        (
            "org.opencontainers.image.source",
            "https://github.com/keyfleet/keyfleet",
        ),
        ("org.opencontainers.image.version", "${VERSION}"),
        ("org.opencontainers.image.licenses", "Apache-2.0"),
    ] {
        assert!(
            labels.contains(&format!("{key}=\"{value}\"")),
            "{key} missing: {labels}"
        );
    }
    assert!(cargo_toml.contains("license = \"Apache-2.0\""));
    // The chart deploys the same version by default.
    let chart = std::fs::read_to_string(root().join("charts/keyfleet/Chart.yaml")).unwrap();
    assert!(
        chart.contains(&format!("appVersion: \"{version}\"")),
        "{chart}"
    );
}
