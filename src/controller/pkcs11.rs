//! Dereference step for material in an HSM (reads the Kubernetes API, calls the token): the
//! `Pkcs11Token` and its tenancy boundary, its PIN, one cached session pool per token, the key.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{Api, ResourceExt};
use zeroize::Zeroizing;

use super::{Category, Context, Error, Failure};
use crate::api::{KeySpec, NamespacesFrom, Pkcs11KeyRef, Pkcs11Token};
use crate::material::pkcs11::{
    HsmKey, Pkcs11Error, TokenConfig, TokenPool, TokenSelector, open_or_generate_async,
};

/// One logged-in session pool per `Pkcs11Token`, kept while the token's spec is unchanged and
/// the token answers; the PIN is read only to log in.
#[derive(Default)]
pub struct TokenPools {
    /// By token name: the generation the pool was opened for, and the pool.
    pools: Mutex<HashMap<String, CachedPool>>,
}

type CachedPool = (Option<i64>, Arc<TokenPool>);

impl TokenPools {
    fn cached(&self, token: &Pkcs11Token) -> Option<Arc<TokenPool>> {
        let pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools
            .get(&token.name_any())
            .filter(|(generation, pool)| {
                *generation == token.metadata.generation && !pool.is_broken()
            })
            .map(|(_, pool)| Arc::clone(pool))
    }

    fn insert(&self, token: &Pkcs11Token, pool: Arc<TokenPool>) {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools.insert(token.name_any(), (token.metadata.generation, pool));
    }

    /// Forgets the pool of a token (deleted, or its login failed).
    pub fn forget(&self, name: &str) {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools.remove(name);
    }
}

/// A PKCS#11 refusal as a reconcile failure: token problems are references to fix, key
/// problems are material problems, a token that went away or is busy is retried.
pub fn failure(e: Pkcs11Error) -> Failure {
    if e.is_transient() {
        return Failure::Transient(Error::Pkcs11(e));
    }
    let category = match e {
        Pkcs11Error::ModuleNotLoadable { .. }
        | Pkcs11Error::TokenNotFound { .. }
        | Pkcs11Error::LoginFailed { .. } => Category::Reference,
        _ => Category::Material,
    };
    Failure::blocked(e.reason(), category, e.to_string())
}

/// The token's connection settings.
fn token_config(token: &Pkcs11Token) -> TokenConfig {
    let spec = &token.spec;
    TokenConfig {
        module: spec.module.clone().into(),
        token: match (&spec.token_label, spec.slot) {
            (Some(label), _) => TokenSelector::Label(label.clone()),
            (None, Some(slot)) => TokenSelector::Slot(u64::try_from(slot).unwrap_or_default()),
            (None, None) => TokenSelector::Label(String::new()),
        },
        max_sessions: usize::try_from(spec.max_sessions).unwrap_or(1),
    }
}

/// Reads the PIN from the token's `pinSecretRef` into a zeroized buffer; the Secret's other
/// data is dropped zeroized too.
async fn read_pin(ctx: &Context, token: &Pkcs11Token) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let pin_ref = &token.spec.pin_secret_ref;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &pin_ref.namespace);
    let Some(mut secret) = api.get_opt(&pin_ref.name).await.map_err(Failure::kube)? else {
        return Err(Failure::reference(
            "PinSecretNotFound",
            format!(
                "Secret {}/{} (pinSecretRef of Pkcs11Token {}) does not exist",
                pin_ref.namespace,
                pin_ref.name,
                token.name_any()
            ),
        ));
    };
    let data = secret.data.take().unwrap_or_default();
    let mut pin = None;
    for (key, value) in data {
        let value = Zeroizing::new(value.0);
        if key == pin_ref.key {
            pin = Some(value);
        }
    }
    pin.ok_or_else(|| {
        Failure::reference(
            "PinSecretKeyMissing",
            format!(
                "Secret {}/{} has no key {:?} (pinSecretRef of Pkcs11Token {})",
                pin_ref.namespace,
                pin_ref.name,
                pin_ref.key,
                token.name_any()
            ),
        )
    })
}

/// The token's logged-in session pool: cached, or opened now (PIN read, `C_Login`).
pub async fn token_pool(ctx: &Context, token: &Pkcs11Token) -> Result<Arc<TokenPool>, Failure> {
    if let Some(pool) = ctx.pkcs11.cached(token) {
        return Ok(pool);
    }
    let pin = read_pin(ctx, token).await?;
    let pool = TokenPool::open_async(token_config(token), pin)
        .await
        .map_err(failure)?;
    ctx.pkcs11.insert(token, Arc::clone(&pool));
    Ok(pool)
}

/// Refuses a namespace the token's `allowedNamespaces` does not admit.
async fn check_tenancy(ctx: &Context, token: &Pkcs11Token, namespace: &str) -> Result<(), Failure> {
    let allowed = &token.spec.allowed_namespaces;
    let labels: BTreeMap<String, String> = if allowed.from == NamespacesFrom::All {
        BTreeMap::new()
    } else {
        let api: Api<Namespace> = Api::all(ctx.client.clone());
        api.get_opt(namespace)
            .await
            .map_err(Failure::kube)?
            .map(|ns| ns.labels().clone())
            .unwrap_or_default()
    };
    if allowed.allows(&labels) {
        Ok(())
    } else {
        Err(Failure::blocked(
            "NamespaceNotAllowed",
            Category::Spec,
            format!(
                "Pkcs11Token {} does not admit namespace {namespace} (allowedNamespaces); ask \
                 its owner to admit it, or use another token",
                token.name_any()
            ),
        ))
    }
}

/// The HSM key an AwsKey in `namespace` names, checked against `spec` (generated first when
/// `generate` is set and the label is free).
pub async fn load_hsm_material(
    ctx: &Context,
    namespace: &str,
    key_ref: &Pkcs11KeyRef,
    spec: KeySpec,
) -> Result<HsmKey, Failure> {
    let api: Api<Pkcs11Token> = Api::all(ctx.client.clone());
    let Some(token) = api
        .get_opt(&key_ref.token_ref.name)
        .await
        .map_err(Failure::kube)?
    else {
        return Err(Failure::reference(
            "Pkcs11TokenNotFound",
            format!(
                "Pkcs11Token {} does not exist; create it or fix keyMaterial.pkcs11.tokenRef",
                key_ref.token_ref.name
            ),
        ));
    };
    check_tenancy(ctx, &token, namespace).await?;
    let pool = token_pool(ctx, &token).await?;
    let label = key_ref.key_label.clone();
    let opened = if key_ref.generate.is_some() {
        open_or_generate_async(pool, spec, label)
            .await
            .map(|(key, _)| key)
    } else {
        HsmKey::open_async(pool, spec, label).await
    };
    opened.map_err(|e| {
        if matches!(e, Pkcs11Error::TokenUnavailable { .. }) {
            ctx.pkcs11.forget(&token.name_any());
        }
        failure(e)
    })
}
