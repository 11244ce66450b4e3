//! Dereference step for `keyMaterial.generate` (writes the Kubernetes API): creates the missing
//! Secret of a key with fresh material, and never touches a Secret that exists.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource};
use zeroize::Zeroize;

use super::managed_key::{ManagedKey, Source};
use super::{Context, Failure};
use crate::api::generated_material::{GENERATED_FOR, MANAGED_BY, MANAGED_BY_LABEL};
use crate::api::{KeySpec, MaterialEncoding, SecretKeySelector};
use crate::material::{MaterialError, generate_secret_value};

/// Event reason of a Secret keyfleet created with generated material.
pub const MATERIAL_GENERATED: &str = "MaterialGenerated";

/// `keyMaterial.generate` of an AwsKey: creates the Secret `secret_ref` with fresh material
/// when it does not exist and the key holds no material yet. A lost Secret of a key in use is
/// not replaced (`SecretNotFound`: restore it from its backup); replicas never generate (they
/// wait for their primary, `PrimaryNotReady`, before reading).
pub async fn create_if_missing<K: ManagedKey>(
    ctx: &Context,
    obj: &K,
    source: &Source<'_>,
    namespace: &str,
    secret_ref: &SecretKeySelector,
) -> Result<(), Failure> {
    let spec = source.spec();
    if spec.key_material.generate.is_none() || !matches!(source, Source::Own(_)) {
        return Ok(());
    }
    let name = secret_ref.name.as_str();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    if api
        .get_metadata_opt(name)
        .await
        .map_err(Failure::kube)?
        .is_some()
    {
        return Ok(());
    }
    if let Some(fingerprint) = obj.status().and_then(|s| s.material_fingerprint.as_deref()) {
        return Err(Failure::reference(
            "SecretNotFound",
            format!(
                "Secret {namespace}/{name} does not exist; keyfleet generates material only for \
                 a key that holds none yet, and this key holds material {fingerprint}: restore \
                 the Secret from its backup"
            ),
        ));
    }
    let generation = Generation {
        namespace,
        secret: name,
        key: &secret_ref.key,
        spec: spec.key_spec,
        encoding: spec.key_material.encoding,
        for_key: obj.meta().name.as_deref().unwrap_or_default(),
    };
    create(ctx, obj, &generation).await
}

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

/// Creates the Secret with fresh material. When the Secret appeared meanwhile (`AlreadyExists`),
/// someone else made it: it is left as it is, to be read as any Secret. Without RBAC permission
/// to create it, `SecretCreateForbidden`.
pub async fn create<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    generation: &Generation<'_>,
) -> Result<(), Failure> {
    let Generation {
        namespace,
        secret: name,
        key,
        spec,
        encoding,
        for_key,
    } = *generation;
    // RSA key generation takes a while: off the async workers.
    let mut value = tokio::task::spawn_blocking(move || generate_secret_value(spec, encoding))
        .await
        .unwrap_or(Err(MaterialError::GenerationFailed {
            detail: "the generation task did not finish",
        }))
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
        Ok(_) => {
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
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
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
