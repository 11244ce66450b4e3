//! The Argo CD health check (deploy/argocd/health.lua) run by a real Lua interpreter
//! (`lua5.4`, Debian's package, installed by `scripts/test`) on the status keyfleet writes:
//! every reason docs/troubleshooting.md documents gets the health its table says, and Stalled,
//! Reconciling, a stale generation, a missing status and an object being deleted get theirs.
//! Argo CD itself embeds gopher-lua (Lua 5.1); the script uses nothing newer.
//!
//! Also: deploy/argocd/argocd-cm.yaml registers exactly this script for every keyfleet kind
//! (`KEYFLEET_BLESS=1` rewrites it from the script).
//!
//! lua5.4 comes from `KEYFLEET_LUA`, else PATH. Missing, the Lua tests are skipped on a
//! developer machine and fail under `CI=true`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use serde_json::{Value, json};

#[path = "support/tools.rs"]
mod tools;

#[path = "support/reason_table.rs"]
mod reason_table;

const SCRIPT: &str = "deploy/argocd/health.lua";
const SNIPPET: &str = "deploy/argocd/argocd-cm.yaml";
const GROUP: &str = "kms.keyfleet.dev";

/// A Lua expression for a JSON value (what Argo CD hands the script as `obj`).
fn lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("[{k:?}] = {}", lua(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

/// Runs the script on each object (one Lua process for all of them): (status, message) per
/// case name.
fn assess(cases: &[(String, Value)]) -> Option<BTreeMap<String, (String, String)>> {
    let bin = tools::find(
        "argocd_health",
        "KEYFLEET_LUA",
        &["lua5.4"],
        "install Debian's lua5.4 package (scripts/test does)",
    )?;
    let script = tools::root().join(SCRIPT);
    let mut driver = String::from("local cases = {\n");
    for (name, obj) in cases {
        writeln!(driver, "  {{ name = {name:?}, obj = {} }},", lua(obj)).unwrap();
    }
    writeln!(
        driver,
        r#"}}
for _, case in ipairs(cases) do
  -- As Argo CD does: the script's chunk runs with `obj` as a global and returns hs.
  local env = setmetatable({{ obj = case.obj }}, {{ __index = _G }})
  local chunk = assert(loadfile({script:?}, "t", env))
  local hs = chunk()
  assert(type(hs) == "table", case.name .. ": the script returned no table")
  io.write(case.name, "\t", tostring(hs.status), "\t", tostring(hs.message), "\n")
end"#,
        script = script.to_str().unwrap()
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("driver.lua");
    std::fs::write(&path, driver).unwrap();
    let out = tools::run_ok(Command::new(bin).arg(&path), "lua");
    let results: BTreeMap<String, (String, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, '\t');
            let name = parts.next().unwrap().to_string();
            let status = parts.next().unwrap().to_string();
            let message = parts.next().unwrap_or_default().to_string();
            (name, (status, message))
        })
        .collect();
    assert_eq!(results.len(), cases.len(), "one answer per case");
    Some(results)
}

fn condition(kind: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": kind, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2026-11-30T12:00:00Z", "observedGeneration": 3})
}

/// An AwsKey at generation 3 with the given conditions, its status written for generation 3.
fn key(conditions: Vec<Value>) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/v1alpha1"),
        "kind": "AwsKey",
        "metadata": {"name": "orders", "namespace": "payments", "generation": 3},
        "spec": {"region": "eu-west-1", "keySpec": "SYMMETRIC_DEFAULT"},
        "status": {"observedGeneration": 3, "keyState": "Enabled", "conditions": conditions}
    })
}

#[test]
fn every_documented_reason_gets_its_documented_health() {
    let reasons = reason_table::documented_reasons();
    assert!(reasons.len() > 40, "only {} reasons found", reasons.len());
    for must in [
        "KeyReady",
        "KeyDisabled",
        "RotationPending",
        "KeyNotReady",
        "SecretNotFound",
    ] {
        assert!(
            reasons.iter().any(|(r, _, _)| r == must),
            "{must} not documented"
        );
    }
    let cases: Vec<(String, Value)> = reasons
        .iter()
        .map(|(reason, status, _)| {
            let message = format!("what {reason} means here");
            (
                reason.clone(),
                key(vec![condition("Ready", status, reason, &message)]),
            )
        })
        .collect();
    let Some(results) = assess(&cases) else {
        return;
    };
    for (reason, _, health) in &reasons {
        assert_eq!(&results[reason].0, health, "{reason}");
    }
    for (reason, _, _) in &reasons {
        assert_eq!(
            results[reason].1,
            format!("{reason}: what {reason} means here")
        );
    }
    // The two the issue named: a rotation in progress is not a failure.
    assert_eq!(results["RotationPending"].0, "Progressing");
    assert_eq!(results["MaterialMismatch"].0, "Degraded");
}

/// A key whose failure needs a change: Ready=False and Stalled=True with the same reason.
fn stalled(reason: &str, message: &str) -> Value {
    key(vec![
        condition("Ready", "False", reason, message),
        condition("Stalled", "True", reason, message),
    ])
}

/// The kstatus condition `type_` (Stalled, Reconciling) of a Ready key: False, KeyReady.
fn settled(type_: &str) -> Value {
    condition(type_, "False", "KeyReady", "")
}

#[test]
fn stalled_reconciling_deletion_and_stale_status() {
    let ready_true = condition("Ready", "True", "KeyReady", "the key is Enabled");
    let mut deleting = key(vec![ready_true.clone()]);
    deleting["metadata"]["deletionTimestamp"] = json!("2026-11-30T12:05:00Z");
    deleting["metadata"]["finalizers"] = json!(["kms.keyfleet.dev/cleanup"]);
    let mut stale = key(vec![ready_true.clone()]);
    stale["metadata"]["generation"] = json!(4);
    let mut no_status = key(vec![]);
    no_status.as_object_mut().unwrap().remove("status");
    let mut no_conditions = key(vec![]);
    no_conditions["status"]
        .as_object_mut()
        .unwrap()
        .remove("conditions");
    let mut kms = key(vec![condition(
        "Ready",
        "False",
        "AssumeRoleFailed",
        "sts:AssumeRole was denied",
    )]);
    kms["kind"] = json!("AwsKms");
    kms["metadata"].as_object_mut().unwrap().remove("namespace");
    // A policy template: Healthy when it renders, Degraded (Stalled) when it does not.
    let template = |conditions: Vec<Value>| {
        let mut t = key(conditions);
        t["kind"] = json!("AwsKeyPolicyTemplate");
        t["metadata"].as_object_mut().unwrap().remove("namespace");
        t["spec"] = json!({"keyUsersRoles": ["app"]});
        t["status"] = json!({"observedGeneration": 3, "keys": 2,
                             "conditions": t["status"]["conditions"].clone()});
        t
    };
    let invalid = "spec.document: unknown placeholder ${KeyARN}";
    let template_ok = template(vec![
        condition("Ready", "True", "Rendered", "renders into a key policy"),
        condition("Stalled", "False", "Rendered", ""),
    ]);
    let template_invalid = template(vec![
        condition("Ready", "False", "PolicyTemplateInvalid", invalid),
        condition("Stalled", "True", "PolicyTemplateInvalid", invalid),
    ]);

    let cases: Vec<(String, Value)> = vec![
        // kstatus: Stalled=True carries the Ready reason of a failure that needs a change.
        (
            "stalled".into(),
            stalled("MaterialMismatch", "the Secret changed"),
        ),
        // Stalled wins even over a reason that would otherwise read as in progress.
        (
            "stalled-waiting".into(),
            stalled("PrimaryNotReady", "the primary is missing"),
        ),
        (
            "stalled-false".into(),
            key(vec![ready_true.clone(), settled("Stalled")]),
        ),
        (
            "reconciling".into(),
            key(vec![
                condition("Ready", "False", "AccessDenied", "an older failure"),
                condition("Reconciling", "True", "Importing", "importing key material"),
            ]),
        ),
        (
            "reconciling-false".into(),
            key(vec![ready_true.clone(), settled("Reconciling")]),
        ),
        ("deleting".into(), deleting),
        ("stale".into(), stale),
        ("no-status".into(), no_status),
        ("no-conditions".into(), no_conditions),
        (
            "only-other-conditions".into(),
            key(vec![condition(
                "MaterialVerified",
                "True",
                "KeyMaterialIdMatches",
                "",
            )]),
        ),
        (
            "ready-unknown".into(),
            key(vec![condition("Ready", "Unknown", "Reconciling", "")]),
        ),
        ("awskms".into(), kms),
        ("template-ok".into(), template_ok),
        ("template-invalid".into(), template_invalid),
        (
            "no-message".into(),
            key(vec![
                json!({"type": "Ready", "status": "True", "reason": "KeyReady"}),
            ]),
        ),
    ];
    let Some(r) = assess(&cases) else {
        return;
    };
    // Health of each case. Being deleted is Progressing, never Healthy, whatever Ready said
    // before.
    let health = [
        ("stalled", "Degraded"),
        ("stalled-waiting", "Degraded"),
        ("stalled-false", "Healthy"),
        ("reconciling", "Progressing"),
        ("reconciling-false", "Healthy"),
        ("deleting", "Progressing"),
        ("stale", "Progressing"),
        ("no-status", "Progressing"),
        ("no-conditions", "Progressing"),
        ("only-other-conditions", "Progressing"),
        ("ready-unknown", "Progressing"),
        ("awskms", "Degraded"),
        ("template-ok", "Healthy"),
        ("template-invalid", "Degraded"),
        ("no-message", "Healthy"),
    ];
    for (name, expected) in health {
        assert_eq!(r[name].0, expected, "{name}");
    }
    let message = |name: &str| r[name].1.as_str();
    assert_eq!(message("stalled"), "MaterialMismatch: the Secret changed");
    assert_eq!(message("reconciling"), "Importing: importing key material");
    assert!(
        message("deleting").contains("deletionPolicy"),
        "{:?}",
        r["deleting"]
    );
    assert_eq!(
        message("stale"),
        "keyfleet has not seen the latest spec yet"
    );
    assert_eq!(message("no-message"), "KeyReady");
    assert_eq!(
        message("template-ok"),
        "Rendered: renders into a key policy"
    );
    assert_eq!(
        message("template-invalid"),
        format!("PolicyTemplateInvalid: {invalid}")
    );
}

/// The `resource.customizations` snippet registers the script, verbatim, for every keyfleet
/// kind.
#[test]
fn argocd_cm_snippet_registers_the_script_for_every_kind() {
    let script = std::fs::read_to_string(tools::root().join(SCRIPT)).unwrap();
    let kinds: Vec<String> = keyfleet::crds::all()
        .iter()
        .map(|crd| crd.spec.names.kind.clone())
        .collect();
    let mut want = String::from(
        "# Argo CD health checks for keyfleet's kinds, generated from health.lua (beside this\n\
         # file) by tests/argocd_health.rs: KEYFLEET_BLESS=1 cargo test --test argocd_health.\n\
         # Merge the data keys into the argocd-cm ConfigMap (or into the argo-cd Helm chart's\n\
         # configs.cm values); docs/gitops.md shows both.\n\
         apiVersion: v1\n\
         kind: ConfigMap\n\
         metadata:\n  name: argocd-cm\n  namespace: argocd\n  labels:\n    \
         app.kubernetes.io/name: argocd-cm\n    app.kubernetes.io/part-of: argocd\n\
         data:\n",
    );
    for kind in &kinds {
        writeln!(want, "  resource.customizations.health.{GROUP}_{kind}: |").unwrap();
        for line in script.lines() {
            if line.is_empty() {
                want.push('\n');
            } else {
                writeln!(want, "    {line}").unwrap();
            }
        }
    }
    let path = tools::root().join(SNIPPET);
    if std::env::var_os("KEYFLEET_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{SNIPPET} differs from {SCRIPT}; regenerate: KEYFLEET_BLESS=1 cargo test --test argocd_health"
    );
    // And it is a ConfigMap whose values are the script.
    let cm: Value = serde_saphyr::from_str(&have).unwrap();
    for kind in &kinds {
        assert_eq!(
            cm["data"][format!("resource.customizations.health.{GROUP}_{kind}")],
            script.as_str()
        );
    }
}
