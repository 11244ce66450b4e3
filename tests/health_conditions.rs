//! kstatus-complete health, as Flux's kstatus and the Argo CD health check read it: next to
//! `Ready`, `Stalled=True` (with the same reason) when a change to the spec, the Secret or AWS
//! is needed, `Reconciling=True` while keyfleet waits for something that clears on its own, both
//! False once Ready; the CRDs declare `status.conditions` a list-type map keyed by `type` and show
//! the Ready reason as a `kubectl get` column. Real controller, in-memory API, LocalStack.

mod support;

use keyfleet::api::{AwsReplicaKey, KeySpec};
use memkube::MemKube;
use serde_json::json;
use support::localstack::{DEFAULT_REGION, unique};
use support::operator::*;
use support::replicas::{self, replica};

const NS: &str = "team-a";
const REPLICA_REGION: &str = "eu-central-1";

type Conditions = [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition];

fn state(conditions: &Conditions, type_: &str) -> (String, String) {
    condition_of(conditions, type_).unwrap_or_else(|| panic!("no {type_} in {conditions:#?}"))
}

fn pair(status: &str, reason: &str) -> (String, String) {
    (status.to_string(), reason.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_and_reconciling_follow_the_ready_verdict() {
    let op = Operator::start(MemKube::new()).await;
    let keys = op.keys(NS);
    let name = unique("health");
    let replica_name = format!("{name}-r");

    // No Secret yet: someone must create it. Stalled, not reconciling.
    let spec = json!({"multiRegion": true, "alias": format!("alias/{name}")});
    create_key(&keys, &aws_key(&name, DEFAULT_REGION, &name, spec)).await;
    let key = wait_reason(&keys, &name, "SecretNotFound").await;
    let conditions = &key.status.unwrap().key.conditions;
    assert_eq!(state(conditions, "Stalled"), pair("True", "SecretNotFound"));
    assert_eq!(
        state(conditions, "Reconciling"),
        pair("False", "SecretNotFound")
    );
    let stalled = conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert!(stalled.message.contains(&name), "{stalled:?}");

    // A replica of it waits for the primary to be created: that clears on its own.
    replicas::create_replica(
        &op.client,
        NS,
        &replica(&replica_name, &name, REPLICA_REGION, json!({})),
    )
    .await;
    let r = replicas::wait_replica_reason(&op.client, NS, &replica_name, "PrimaryNotReady").await;
    let conditions = &r.status.unwrap().key.conditions;
    assert_eq!(
        state(conditions, "Reconciling"),
        pair("True", "PrimaryNotReady")
    );
    assert_eq!(
        state(conditions, "Stalled"),
        pair("False", "PrimaryNotReady")
    );

    // The Secret appears: everything becomes Ready, neither stalled nor reconciling.
    create_material_secret(&op.client, NS, &name, KeySpec::SymmetricDefault).await;
    let key = wait_ready(&keys, &name).await;
    let conditions = &key.status.unwrap().key.conditions;
    assert_eq!(state(conditions, "Stalled"), pair("False", "KeyReady"));
    assert_eq!(state(conditions, "Reconciling"), pair("False", "KeyReady"));
    let r: AwsReplicaKey = replicas::wait_replica_ready(&op.client, NS, &replica_name).await;
    let conditions = &r.status.unwrap().key.conditions;
    assert_eq!(state(conditions, "Stalled"), pair("False", "KeyReady"));
    assert_eq!(state(conditions, "Reconciling"), pair("False", "KeyReady"));
    // One condition per type (the list is a map keyed by type).
    let mut types: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
    let n = types.len();
    types.sort();
    types.dedup();
    assert_eq!(types.len(), n, "{types:?}");
}

#[test]
fn crds_declare_conditions_a_map_and_show_the_reason() {
    for crd in keyfleet::crds::all() {
        let kind = crd.spec.names.kind.clone();
        if kind != "AwsKey" && kind != "AwsReplicaKey" {
            continue;
        }
        let version = &crd.spec.versions[0];
        let schema = serde_json::to_value(&version.schema).unwrap();
        let conditions =
            &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{kind}");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            json!(["type"]),
            "{kind}"
        );
        assert!(
            conditions["items"]["required"]
                .as_array()
                .unwrap()
                .contains(&json!("type")),
            "{kind}: a map key must be required"
        );
        let columns = version.additional_printer_columns.as_ref().unwrap();
        let reason = columns
            .iter()
            .find(|c| c.name == "Reason")
            .unwrap_or_else(|| panic!("{kind} has no Reason column"));
        assert_eq!(
            reason.json_path,
            ".status.conditions[?(@.type==\"Ready\")].reason"
        );
    }
}
