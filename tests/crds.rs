//! The checked-in CRDs under `crds/` are exactly what the code generates, and `keyfleet crds`
//! prints the same documents. Regenerate with `KEYFLEET_UPDATE_CRDS=1 cargo test --test crds`.

use std::path::Path;
use std::process::Command;

#[test]
fn checked_in_crds_match_the_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
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
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(
        present, expected_files,
        "crds/ holds files no CRD generates"
    );
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
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "awskmses.kms.keyfleet.dev",
            "awskeys.kms.keyfleet.dev",
            "awsreplicakeys.kms.keyfleet.dev"
        ]
    );
}
