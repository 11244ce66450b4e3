//! The checked-in CRDs under `crds/` and the Helm chart's copies under
//! `charts/keyfleet/files/crds/` are exactly what the code generates, and `keyfleet crds`
//! prints the same documents. Regenerate both with
//! `KEYFLEET_UPDATE_CRDS=1 cargo test --test crds`.

use std::path::Path;
use std::process::Command;

/// Checks (or with `KEYFLEET_UPDATE_CRDS` set, rewrites) one directory that holds the
/// generated CRDs: one file per CRD, byte for byte, and nothing else.
fn check_crd_dir(relative: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let update = std::env::var_os("KEYFLEET_UPDATE_CRDS").is_some();
    let mut expected_files = vec![];
    for crd in keyfleet::crds::all() {
        let name = keyfleet::crds::file_name(&crd);
        let yaml = keyfleet::crds::to_yaml(&crd).unwrap();
        let path = dir.join(&name);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &yaml).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "{} is missing; run KEYFLEET_UPDATE_CRDS=1 cargo test --test crds",
                path.display()
            )
        });
        assert!(
            on_disk == yaml,
            "{} drifted from the code; run KEYFLEET_UPDATE_CRDS=1 cargo test --test crds",
            path.display()
        );
        expected_files.push(name);
    }
    if update {
        // A CRD that no longer exists leaves no stale file behind.
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !expected_files.contains(&name) {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(
        present, expected_files,
        "{relative}/ holds files no CRD generates"
    );
}

#[test]
fn checked_in_crds_match_the_code() {
    check_crd_dir("crds");
}

#[test]
fn helm_chart_crds_match_the_code() {
    // templates/crds.yaml renders these files (adding only the keep policy and labels);
    // tests/helm_chart.rs checks the rendered documents against the code as well.
    check_crd_dir("charts/keyfleet/files/crds");
}

#[test]
fn keyfleet_crds_prints_every_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_keyfleet"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, keyfleet::crds::all_yaml().unwrap());
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "awskmses.kms.keyfleet.dev",
            "awskeypolicytemplates.kms.keyfleet.dev",
            "awskeys.kms.keyfleet.dev",
            "awsreplicakeys.kms.keyfleet.dev",
            "pkcs11tokens.kms.keyfleet.dev"
        ]
    );
}
