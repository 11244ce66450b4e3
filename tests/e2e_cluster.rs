//! End-to-end against a real cluster (kind, k3d, ...) reached through the current kubeconfig:
//! the same scenarios as the in-memory suite — CRDs applied, keys Ready with their material in
//! KMS (LocalStack), a policy rule enforced by the API server's CEL, a policy template edit
//! reaching KMS, deletion scheduled. Without a reachable cluster it prints why and skips.

mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keyfleet::api::{AwsKeyPolicyTemplate, KeySpec};
use keyfleet::controller::{self, Context};
use keyfleet_testkit::material::generate_secret_value;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::localstack::{DEFAULT_REGION, kms_client, unique};
use support::operator::*;

async fn reachable_cluster() -> Result<kube::Client, String> {
    let probe = async {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| e.to_string())?;
        client
            .apiserver_version()
            .await
            .map_err(|e| e.to_string())?;
        Ok(client)
    };
    tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_become_ready_and_are_deleted_on_a_real_cluster() {
    let client = match reachable_cluster().await {
        Ok(client) => client,
        Err(why) => {
            println!(
                "SKIPPED e2e_cluster: no Kubernetes cluster reachable through the current kubeconfig ({why}); start kind or k3d to run it"
            );
            return;
        }
    };
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in keyfleet::crds::all() {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply("keyfleet-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
    }
    // The API server serves a CRD's kind once it is Established.
    for crd in keyfleet::crds::all() {
        let name = crd.metadata.name.clone().unwrap();
        let established = kube::runtime::wait::await_condition(
            crds.clone(),
            &name,
            kube::runtime::wait::conditions::is_crd_established(),
        );
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .expect("the CRD is Established within 30 s")
            .unwrap();
    }

    let ns = unique("keyfleet-e2e");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();

    // A connection of the test's own, granted to the test namespace only (the cluster's own
    // `default` connection, if any, is left alone).
    let connection = unique("e2e");
    Api::<keyfleet::api::AwsKms>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": connection},
                "spec": {"allowedNamespaces": {"from": "Selector",
                    "selector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    let ctx = Arc::new(Context::new(
        client.clone(),
        localstack_clients().await,
        settings(),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller::run(ctx, async move {
        let _ = stopped.await;
    }));

    let kms = kms_client(DEFAULT_REGION).await;
    let api: Api<keyfleet::api::AwsKey> = Api::namespaced(client.clone(), &ns);
    let mut names = vec![];
    for (spec, extra) in [
        (
            KeySpec::SymmetricDefault,
            json!({"kmsRef": {"name": connection}}),
        ),
        (
            KeySpec::Rsa2048,
            json!({"keySpec": "RSA_2048", "keyUsage": "SIGN_VERIFY", "kmsRef": {"name": connection}}),
        ),
    ] {
        let name = unique("e2e");
        create_secret(
            &client,
            &ns,
            &name,
            "material",
            &generate_secret_value(spec),
        )
        .await;
        create_key(&api, &aws_key(&name, DEFAULT_REGION, &name, extra)).await;
        names.push(name);
    }
    // Key policies: the real API server enforces the exclusivity rule at admission, and a
    // template edit reaches the key in KMS.
    let refused = api
        .create(
            &PostParams::default(),
            &aws_key(
                &unique("e2e-two-forms"),
                DEFAULT_REGION,
                "unused",
                json!({"policy": {"document": "{}", "keyUsersRoles": ["app"]}}),
            ),
        )
        .await
        .expect_err("two policy forms must be refused at admission");
    assert!(
        refused.to_string().contains("policy takes exactly one of"),
        "{refused}"
    );
    let templates: Api<AwsKeyPolicyTemplate> = Api::all(client.clone());
    let template = unique("e2e-tpl");
    templates
        .create(
            &PostParams::default(),
            &AwsKeyPolicyTemplate::new(
                &template,
                serde_json::from_value(json!({"keyUsersRoles": ["app-v1"]})).unwrap(),
            ),
        )
        .await
        .unwrap();
    let templated = unique("e2e-tpl-key");
    create_material_secret(&client, &ns, &templated, KeySpec::SymmetricDefault).await;
    create_key(
        &api,
        &aws_key(
            &templated,
            DEFAULT_REGION,
            &templated,
            json!({"policy": {"templateRef": {"name": template}}, "kmsRef": {"name": connection}}),
        ),
    )
    .await;
    names.push(templated.clone());
    let templated_id = ready_key_id(&api, &templated).await;
    templates
        .patch(
            &template,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"keyUsersRoles": ["app-v2"]}})),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let policy = kms
            .get_key_policy()
            .key_id(&templated_id)
            .policy_name("default")
            .send()
            .await
            .unwrap();
        if policy.policy().is_some_and(|p| p.contains("role/app-v2")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the template edit never reached the key"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let mut key_ids = vec![];
    for name in &names {
        key_ids.push(ready_key_id(&api, name).await);
    }
    for name in &names {
        api.delete(name, &DeleteParams::default()).await.unwrap();
        wait_gone(&api, name).await;
    }
    for key_id in key_ids {
        let meta = describe(&kms, &key_id).await;
        assert_eq!(
            meta.key_state().map(|s| s.as_str()),
            Some("PendingDeletion")
        );
    }
    let _ = stop.send(());
    let _ = task.await;
    templates
        .delete(&template, &DeleteParams::default())
        .await
        .unwrap();
    Api::<keyfleet::api::AwsKms>::all(client.clone())
        .delete(&connection, &DeleteParams::default())
        .await
        .unwrap();
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
