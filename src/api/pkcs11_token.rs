//! `Pkcs11Token` (cluster-scoped): a PKCS#11 token (an HSM partition) whose keys `AwsKey`s import — module, token, PIN, tenancy.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::allowed_namespaces::AllowedNamespaces;

keyfleet_kind! {
kube(
    kind = "Pkcs11Token",
    shortname = "p11",
    status = "Pkcs11TokenStatus",
    doc = "A PKCS#11 token (HSM) whose keys AwsKeys import without their plaintext leaving it.",
),
columns_before(
    printcolumn(name = "Token", type_ = "string", json_path = ".spec.tokenLabel"),
),
columns_between(),
columns_after(
    printcolumn(name = "Module", type_ = "string", json_path = ".spec.module", priority = 1),
),
/// A PKCS#11 token keyfleet logs in to, to export keys to KMS wrapped (`C_WrapKey`): key
/// material that never exists in plaintext outside the HSM.
#[x_kube(validation = Rule::new("has(self.tokenLabel) != has(self.slot)").message("set exactly one of tokenLabel and slot"))]
pub struct Pkcs11TokenSpec {
    /// Absolute path of the PKCS#11 library inside the operator's container, e.g.
    /// `/opt/cloudhsm/lib/libcloudhsm_pkcs11.so` (AWS CloudHSM) or
    /// `/usr/safenet/lunaclient/lib/libCryptoki2_64.so` (Luna). The image ships no vendor
    /// library: mount it (see the chart's `pkcs11` values).
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("module must be an absolute path inside the operator's container"))]
    pub module: String,

    /// Label of the token (the HSM partition), trailing blanks ignored. Exactly one of
    /// `tokenLabel` and `slot`.
    #[schemars(length(min = 1, max = 32))]
    pub token_label: Option<String>,

    /// Slot id of the token, when it has no usable label.
    #[schemars(range(min = 0))]
    pub slot: Option<i64>,

    /// The Secret key holding the token's user PIN (crypto user). Read on demand, held in a
    /// zeroized buffer only for `C_Login`; a trailing newline is ignored.
    pub pin_secret_ref: NamespacedSecretKeySelector,

    /// Namespaces whose AwsKeys may use this token's keys. Required: a token is shared by no
    /// namespace until it says so.
    pub allowed_namespaces: AllowedNamespaces,

    /// Most PKCS#11 sessions keyfleet keeps open with the token at once (default 4).
    #[serde(default = "default_max_sessions")]
    #[schemars(range(min = 1, max = 64))]
    pub max_sessions: u32,
}

/// What keyfleet found when it last logged in to the token.
pub struct Pkcs11TokenStatus {
    /// `Ready`: True after a successful login; False with reason `Pkcs11ModuleNotLoadable`,
    /// `TokenNotFound`, `LoginFailed`, `PinSecretNotFound` or `Pkcs11TokenUnavailable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation the conditions describe.
    pub observed_generation: Option<i64>,
    /// How keyfleet wraps keys of this token for KMS.
    pub wrapping: Option<TokenWrapping>,
}
}

fn default_max_sessions() -> u32 {
    4
}

/// A key inside a Secret in a stated namespace (for cluster-scoped resources).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NamespacedSecretKeySelector {
    /// Namespace of the Secret (usually the operator's own).
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's `data`.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The KMS wrapping algorithms keyfleet uses with this token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenWrapping {
    /// For symmetric and HMAC keys, e.g. `RSAES_OAEP_SHA_256`; or why none.
    pub secret_keys: String,
    /// For RSA and ECC private keys, e.g. `RSA_AES_KEY_WRAP_SHA_256`; or why none.
    pub private_keys: String,
    /// The token does RSA-OAEP only with SHA-1, so SHA-1 variants are used.
    #[serde(default)]
    pub sha1_only: bool,
}
