//! Dereference step: reads key material from a Secret in the AwsKey's own namespace.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use zeroize::Zeroize;

use super::Failure;
use crate::api::{KeyMaterialSource, KeySpec};
use crate::material::KeyMaterial;

/// Reads and checks the material. The Secret is fetched from `namespace` only — an AwsKey can
/// never reach another namespace's Secrets — and its data is zeroized once parsed.
pub async fn load_material(
    client: &kube::Client,
    namespace: &str,
    source: &KeyMaterialSource,
    spec: KeySpec,
) -> Result<KeyMaterial, Failure> {
    let name = &source.secret_ref.name;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api.get_opt(name).await.map_err(Failure::kube)?;
    let Some(mut secret) = secret else {
        return Err(Failure::permanent(
            "SecretNotFound",
            format!(
                "Secret {namespace}/{name} does not exist; create it with the key material under key {:?}",
                source.secret_ref.key
            ),
        ));
    };
    let mut data = secret.data.take().unwrap_or_default();
    let result = match data.get(&source.secret_ref.key) {
        None => {
            let keys: Vec<&str> = data.keys().map(String::as_str).collect();
            Err(Failure::permanent(
                "SecretKeyMissing",
                format!(
                    "Secret {namespace}/{name} has no key {:?} (it has: {}); put the key material under that key",
                    source.secret_ref.key,
                    if keys.is_empty() {
                        "no keys".to_string()
                    } else {
                        keys.join(", ")
                    }
                ),
            ))
        }
        Some(value) => {
            KeyMaterial::from_secret_value(spec, source.encoding, &value.0).map_err(|e| {
                Failure::permanent(
                    e.reason(),
                    format!(
                        "Secret {namespace}/{name} key {:?}: {e}",
                        source.secret_ref.key
                    ),
                )
            })
        }
    };
    for value in data.values_mut() {
        value.0.zeroize();
    }
    result
}
