//! RBAC of restricted clients: rules by verb, resource and namespace; 403 for the rest.

use super::*;
use crate::Rule;
use kube::Api;
use kube::api::{ListParams, PostParams};

#[tokio::test]
async fn a_restricted_client_does_only_what_its_rules_allow() {
    let kube = mem();
    let operator = kube
        .restricted(vec![
            Rule::cluster(&[""], &["secrets"], &["get", "list", "watch"]),
            Rule::in_namespace("team-a", &[""], &["secrets"], &["create"]),
        ])
        .client();
    let admin = kube.client();

    // Reads everywhere, creates only in team-a.
    let in_a: Api<Secret> = Api::namespaced(operator.clone(), "team-a");
    in_a.create(&PostParams::default(), &secret("s", "k", "v"))
        .await
        .expect("create in team-a");
    let in_b: Api<Secret> = Api::namespaced(operator.clone(), "team-b");
    let refused = api_error(
        in_b.create(&PostParams::default(), &secret("s", "k", "v"))
            .await
            .unwrap_err(),
    );
    assert_eq!((refused.code, refused.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        refused.message,
        "secrets is forbidden: User \"system:serviceaccount:memkube:restricted\" cannot create \
         resource \"secrets\" in API group \"\" in the namespace \"team-b\""
    );
    assert!(
        Api::<Secret>::all(operator.clone())
            .list(&ListParams::default())
            .await
            .is_ok()
    );
    assert!(in_b.get_opt("s").await.unwrap().is_none());

    // Nothing else: no deletes, no other resources.
    let refused = api_error(in_a.delete("s", &Default::default()).await.unwrap_err());
    assert_eq!(refused.code, 403);
    let maps: Api<ConfigMap> = Api::namespaced(operator, "team-a");
    assert_eq!(api_error(maps.get("x").await.unwrap_err()).code, 403);

    // The unrestricted handle is cluster-admin.
    Api::<Secret>::namespaced(admin, "team-b")
        .create(&PostParams::default(), &secret("s", "k", "v"))
        .await
        .expect("admin creates anywhere");
}

#[tokio::test]
async fn wildcards_and_subresources_follow_kubernetes() {
    let kube = mem();
    let client = kube
        .restricted(vec![Rule::cluster(&["memkube.test"], &["widgets"], &["*"])])
        .client();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .expect("any verb on widgets");
    // The status subresource is a resource of its own (`widgets/status`).
    let patch = serde_json::json!({"status": {"ready": true}});
    let refused = api_error(
        widgets
            .patch_status("w", &Default::default(), &kube::api::Patch::Merge(&patch))
            .await
            .unwrap_err(),
    );
    assert_eq!(refused.code, 403);
    assert!(
        refused.message.contains("\"widgets/status\""),
        "{}",
        refused.message
    );
}
