//! Dereference step (reads the Kubernetes API): every object a reconcile needs — the source
//! AwsKey (a replica's primary), the connection, the policy template and the key material.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use zeroize::Zeroize;

use super::managed_key::{ManagedKey, Source};
use super::{Context, Failure};
use crate::api::{
    AwsKeyPolicyTemplate, AwsKms, KeyMaterialSource, KeyPolicy, KeySpec, LocalObjectRef,
};
use crate::kms::Connection;
use crate::material::{ImportableMaterial, KeyMaterial};

/// Everything a reconcile reads besides the object itself.
pub struct Dereferenced<'a> {
    /// The AwsKey that names connection and material (the object, or a replica's primary).
    pub source: Source<'a>,
    /// The AwsKms connection (or the operator's own credentials).
    pub connection: Connection,
    /// The policy template the object's policy names, when it exists.
    pub template: Option<AwsKeyPolicyTemplate>,
    /// The checked key material (zeroized on drop; never printed).
    pub material: Box<dyn ImportableMaterial>,
}

/// Reads the inputs of `obj` in a fixed order; the first missing or unusable one stops the
/// reconcile with its reason.
pub async fn dereference<'a, K: ManagedKey>(
    obj: &'a K,
    ctx: &'a Context,
) -> Result<Dereferenced<'a>, Failure> {
    let namespace = obj.meta().namespace.clone().unwrap_or_default();
    let source = obj.source(ctx).await?;
    let connection = connection(ctx, source.spec().kms_ref.as_ref()).await?;
    let template = policy_template(ctx, obj.policy()).await?;
    let spec = source.spec();
    let material =
        load_material(&ctx.client, &namespace, &spec.key_material, spec.key_spec).await?;
    Ok(Dereferenced {
        source,
        connection,
        template,
        material: Box::new(material),
    })
}

/// The AwsKms named by `kms_ref`, or the operator's own credentials.
pub async fn connection(
    ctx: &Context,
    kms_ref: Option<&LocalObjectRef>,
) -> Result<Connection, Failure> {
    let Some(kms_ref) = kms_ref else {
        return Ok(Connection::operator_default());
    };
    let api: Api<AwsKms> = Api::all(ctx.client.clone());
    match api.get_opt(&kms_ref.name).await.map_err(Failure::kube)? {
        Some(kms) => Ok(Connection::from_aws_kms(&kms)),
        None => Err(Failure::reference(
            "KmsConnectionNotFound",
            format!(
                "AwsKms {} does not exist; create it or remove spec.kmsRef",
                kms_ref.name
            ),
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

/// Reads and checks the material. The Secret is fetched from `namespace` only — an object can
/// never reach another namespace's Secrets — and its data is zeroized once parsed.
async fn load_material(
    client: &kube::Client,
    namespace: &str,
    source: &KeyMaterialSource,
    spec: KeySpec,
) -> Result<KeyMaterial, Failure> {
    let name = &source.secret_ref.name;
    let key = &source.secret_ref.key;
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
        Some(value) => {
            KeyMaterial::from_secret_value(spec, source.encoding, &value.0).map_err(|e| {
                Failure::material(&e, format!("Secret {namespace}/{name} key {key:?}: {e}"))
            })
        }
    };
    for value in data.values_mut() {
        value.0.zeroize();
    }
    result
}
