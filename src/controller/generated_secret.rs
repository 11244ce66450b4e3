//! Dereference step for `keyMaterial.generate` (writes the Kubernetes API): creates the missing
//! Secret of a key with fresh material, and never touches a Secret that exists.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource};
use zeroize::Zeroize;

use super::{Context, Error, Failure};
use crate::api::generated_material::{GENERATED_FOR, MANAGED_BY, MANAGED_BY_LABEL};
use crate::api::{KeySpec, MaterialEncoding};
use crate::material::generate_secret_value;

/// Event reason of a Secret keyfleet created with generated material.
pub const MATERIAL_GENERATED: &str = "MaterialGenerated";

/// What to generate, and where.
pub struct Generation<'a> {
    pub namespace: &'a str,
    /// The Secret to create and the key in it.
    pub secret: &'a str,
    pub key: &'a str,
    pub spec: KeySpec,
    pub encoding: MaterialEncoding,
    /// The AwsKey the material is for (labels, annotation and event).
    pub for_key: &'a str,
}

/// Creates the Secret with fresh material and returns it as the API server stored it. When the
/// Secret appeared meanwhile (`AlreadyExists`), someone else made it: it is returned as it is,
/// to be read as any Secret. Without RBAC permission to create it, `SecretCreateForbidden`.
pub async fn create<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    generation: &Generation<'_>,
) -> Result<Secret, Failure> {
    let Generation {
        namespace,
        secret: name,
        key,
        spec,
        encoding,
        for_key,
    } = *generation;
    let mut value = generate_secret_value(spec, encoding)
        .map_err(|e| Failure::material(&e, format!("Secret {namespace}/{name}: {e}")))?;
    let mut labels = BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())]);
    if for_key.len() <= 63 {
        labels.insert(GENERATED_FOR.to_string(), for_key.to_string());
    }
    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                GENERATED_FOR.to_string(),
                for_key.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(std::mem::take(&mut *value)),
        )])),
        ..Secret::default()
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let created = api.create(&PostParams::default(), &secret).await;
    for value in secret.data.iter_mut().flat_map(|d| d.values_mut()) {
        value.0.zeroize();
    }
    match created {
        Ok(secret) => {
            ctx.publish(
                obj,
                EventType::Normal,
                MATERIAL_GENERATED,
                format!(
                    "created Secret {namespace}/{name} with new {spec} material under key {key:?}"
                ),
                "GenerateMaterial",
            )
            .await;
            Ok(secret)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => match api.get_opt(name).await {
            Ok(Some(secret)) => Ok(secret),
            Ok(None) => Err(Failure::Transient(Error::Kube(kube::Error::Api(e)))),
            Err(e) => Err(Failure::kube(e)),
        },
        Err(kube::Error::Api(e)) if e.code == 403 => Err(Failure::reference(
            "SecretCreateForbidden",
            format!(
                "Secret {namespace}/{name} does not exist and keyfleet may not create it for \
                 keyMaterial.generate (RBAC: create on secrets in namespace {namespace}); \
                 install the chart with rbac.secretCreation.enabled=true (optionally limited \
                 to some namespaces), or create the Secret yourself"
            ),
        )),
        Err(e) => Err(Failure::kube(e)),
    }
}
