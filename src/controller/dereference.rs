//! Dereference step (reads the Kubernetes API): every object a reconcile needs — the source
//! AwsKey (a replica's primary), the connection (granted to the namespace, with an allowed
//! endpoint), the namespace's settings, the policy template and the key material.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use zeroize::Zeroize;

use super::generated_secret;
use super::managed_key::{ManagedKey, Source};
use super::scheduled_rotation::{self, Schedule};
use super::{Context, Failure};
use crate::api::{
    AwsKeyPolicyTemplate, AwsKms, DEFAULT_CONNECTION, DEFAULT_DELETION_POLICY_ANNOTATION,
    KeyPolicy, KeySpec, LocalObjectRef, MaterialEncoding, SecretKeySelector,
};
use crate::kms::Connection;
use crate::material::{ImportableMaterial, KeyMaterial};
use crate::tenancy;

/// Everything a reconcile reads besides the object itself.
pub struct Dereferenced<'a> {
    /// The AwsKey that names connection and material (the object, or a replica's primary).
    pub source: Source<'a>,
    /// The AwsKms connection, granted to the object's namespace.
    pub connection: Connection,
    /// What the object's namespace says about its keys.
    pub namespace: NamespaceFacts,
    /// The policy template the object's policy names, when it exists.
    pub template: Option<AwsKeyPolicyTemplate>,
    /// The checked key material (zeroized on drop; never printed).
    pub material: Box<dyn ImportableMaterial>,
    /// Where the material was read, for its KeyMaterialDescription: `Secret <ns>/<name> rv
    /// <resourceVersion>` or `Pkcs11Token <token> label <label>` (never the material).
    pub material_source: String,
    /// The materials of the `keyMaterial.retained` Secrets, in order, then those of the Secrets
    /// a rotation schedule rotated away from, each with where it was read (as
    /// `material_source`).
    pub retained: Vec<(KeyMaterial, String)>,
    /// An AwsKey's rotation schedule: `status.generatedMaterial` and `status.nextRotationTime`.
    pub schedule: Schedule,
}

/// Reads the inputs of `obj` in a fixed order; the first missing or unusable one stops the
/// reconcile with its reason.
pub async fn dereference<'a, K: ManagedKey>(
    obj: &'a K,
    ctx: &'a Context,
) -> Result<Dereferenced<'a>, Failure> {
    let namespace = obj.meta().namespace.clone().unwrap_or_default();
    let source = obj.source(ctx).await?;
    let facts = namespace_facts(ctx, &namespace).await?;
    let connection = connection(ctx, source.spec().kms_ref.as_ref()).await?;
    tenancy::connection_grant(
        &connection.name,
        &connection.spec.allowed_namespaces,
        &namespace,
        &facts.labels,
    )
    .map_err(|r| Failure::reference(r.reason, r.message))?;
    tenancy::endpoint(
        &connection.name,
        connection.spec.endpoint_url.as_deref(),
        &ctx.settings.endpoints,
    )
    .map_err(|r| Failure::reference(r.reason, r.message))?;
    let template = policy_template(ctx, obj.policy()).await?;
    let spec = source.spec();
    // The one place that chooses where material lives: a Secret or a PKCS#11 token.
    let key_material = &spec.key_material;
    let mut schedule = Schedule::default();
    let (material, material_source): (Box<dyn ImportableMaterial>, String) =
        match (&key_material.pkcs11, &key_material.secret_ref) {
            (Some(key_ref), _) => (
                Box::new(
                    super::pkcs11::load_hsm_material(ctx, &namespace, key_ref, spec.key_spec)
                        .await?,
                ),
                format!(
                    "Pkcs11Token {} label {}",
                    key_ref.token_ref.name, key_ref.key_label
                ),
            ),
            (None, Some(secret_ref)) => {
                // A rotation schedule reads (and, when due, generates) the Secret of its latest
                // rotation; `keyMaterial.generate` creates a missing Secret.
                let current =
                    scheduled_rotation::material_secret(ctx, obj, &source, secret_ref, &namespace)
                        .await?;
                let secret_ref = SecretKeySelector {
                    name: current.name,
                    key: secret_ref.key.clone(),
                };
                generated_secret::create_if_missing(ctx, obj, &source, &namespace, &secret_ref)
                    .await?;
                schedule = current.schedule;
                let (material, source) = load_material(
                    &ctx.client,
                    &namespace,
                    &secret_ref,
                    key_material.encoding,
                    spec.key_spec,
                )
                .await?;
                (Box::new(material), source)
            }
            (None, None) => {
                return Err(Failure::blocked(
                    "MaterialSourceMissing",
                    super::Category::Spec,
                    "keyMaterial names neither secretRef nor pkcs11",
                ));
            }
        };
    let mut retained = Vec::with_capacity(key_material.retained.len());
    for r in &key_material.retained {
        let loaded = load_material(
            &ctx.client,
            &namespace,
            &r.secret_ref,
            r.encoding,
            spec.key_spec,
        );
        retained.push(loaded.await?);
    }
    // The Secrets a rotation schedule generated and rotated away from hold earlier materials of
    // this key just as listed ones do: they count as retained without being listed (their
    // expiry is renewed, a rotation does not wait for them to be listed). One deleted since is
    // skipped, not a failure: whoever deleted it let its material go.
    if let Some(secret_ref) = &key_material.secret_ref {
        for earlier in scheduled_rotation::generated_retained(&source, &schedule) {
            if key_material
                .retained
                .iter()
                .any(|r| r.secret_ref.name == earlier)
            {
                continue;
            }
            let selector = SecretKeySelector {
                name: earlier,
                key: secret_ref.key.clone(),
            };
            let loaded = load_material(
                &ctx.client,
                &namespace,
                &selector,
                key_material.encoding,
                spec.key_spec,
            );
            match loaded.await {
                Ok(loaded) => retained.push(loaded),
                Err(Failure::Blocked(b)) if b.reason == "SecretNotFound" => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Dereferenced {
        source,
        connection,
        namespace: facts,
        template,
        material,
        material_source,
        retained,
        schedule,
    })
}

/// The labels and annotations of a namespace that keyfleet reads.
#[derive(Clone, Debug, Default)]
pub struct NamespaceFacts {
    /// Matched against a connection's `allowedNamespaces`.
    pub labels: BTreeMap<String, String>,
    /// `keyfleet.dev/default-deletion-policy`, when set.
    pub default_deletion_policy: Option<String>,
}

/// Reads the namespace's metadata (a namespace that cannot be read has no labels: it is
/// admitted only by connections granted to all namespaces).
pub async fn namespace_facts(ctx: &Context, namespace: &str) -> Result<NamespaceFacts, Failure> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let Some(meta) = api
        .get_metadata_opt(namespace)
        .await
        .map_err(Failure::kube)?
    else {
        return Ok(NamespaceFacts::default());
    };
    let mut annotations = meta.metadata.annotations.unwrap_or_default();
    Ok(NamespaceFacts {
        labels: meta.metadata.labels.unwrap_or_default(),
        default_deletion_policy: annotations.remove(DEFAULT_DELETION_POLICY_ANNOTATION),
    })
}

/// The AwsKms named by `kms_ref`, or the one named `default`.
pub async fn connection(
    ctx: &Context,
    kms_ref: Option<&LocalObjectRef>,
) -> Result<Connection, Failure> {
    connection_named(ctx, kms_ref.map_or(DEFAULT_CONNECTION, |r| r.name.as_str())).await
}

/// The AwsKms `name`.
pub async fn connection_named(ctx: &Context, name: &str) -> Result<Connection, Failure> {
    let api: Api<AwsKms> = Api::all(ctx.client.clone());
    match api.get_opt(name).await.map_err(Failure::kube)? {
        Some(kms) => Ok(Connection::from_aws_kms(&kms)),
        None if name == DEFAULT_CONNECTION => Err(Failure::reference(
            "KmsConnectionNotFound",
            "the key names no spec.kmsRef and there is no AwsKms named default; create one (granted to this namespace) or set spec.kmsRef",
        )),
        None => Err(Failure::reference(
            "KmsConnectionNotFound",
            format!("AwsKms {name} does not exist; create it or change spec.kmsRef"),
        )),
    }
}

/// The `AwsKeyPolicyTemplate` a policy names; None when it names none or the template does
/// not exist (the desired step then reports `PolicyTemplateNotFound`).
async fn policy_template(
    ctx: &Context,
    policy: Option<&KeyPolicy>,
) -> Result<Option<AwsKeyPolicyTemplate>, Failure> {
    let Some(template_ref) = policy.and_then(|p| p.template_ref.as_ref()) else {
        return Ok(None);
    };
    let api: Api<AwsKeyPolicyTemplate> = Api::all(ctx.client.clone());
    api.get_opt(&template_ref.name).await.map_err(Failure::kube)
}

/// Reads and checks the material, and says where it came from (`Secret <ns>/<name> rv <n>`).
/// The Secret is fetched from `namespace` only — an object can never reach another
/// namespace's Secrets — and its data is zeroized once parsed.
async fn load_material(
    client: &kube::Client,
    namespace: &str,
    secret_ref: &SecretKeySelector,
    encoding: MaterialEncoding,
    spec: KeySpec,
) -> Result<(KeyMaterial, String), Failure> {
    let (name, key) = (&secret_ref.name, &secret_ref.key);
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(mut secret) = api.get_opt(name).await.map_err(Failure::kube)? else {
        return Err(Failure::reference(
            "SecretNotFound",
            format!(
                "Secret {namespace}/{name} does not exist; create it with the key material under key {key:?}"
            ),
        ));
    };
    let mut data = secret.data.take().unwrap_or_default();
    let result = match data.get(key) {
        None => {
            let keys: Vec<&str> = data.keys().map(String::as_str).collect();
            let has = if keys.is_empty() {
                "no keys".to_string()
            } else {
                keys.join(", ")
            };
            Err(Failure::reference(
                "SecretKeyMissing",
                format!(
                    "Secret {namespace}/{name} has no key {key:?} (it has: {has}); put the key material under that key"
                ),
            ))
        }
        Some(value) => KeyMaterial::from_secret_value(spec, encoding, &value.0).map_err(|e| {
            Failure::material(&e, format!("Secret {namespace}/{name} key {key:?}: {e}"))
        }),
    };
    for value in data.values_mut() {
        value.0.zeroize();
    }
    let version = secret.metadata.resource_version.unwrap_or_default();
    result.map(|m| (m, format!("Secret {namespace}/{name} rv {version}")))
}
