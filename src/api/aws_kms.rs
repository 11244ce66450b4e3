//! `AwsKms` (cluster-scoped): an AWS KMS connection — credentials, allowed regions, endpoint.
// kube's `printcolumn(...)` arguments repeat `type_ = ...`, which this lint mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::allowed_namespaces::AllowedNamespaces;

/// An AWS KMS connection (CCKM `kms`): which credentials keyfleet uses, in which regions, and
/// which namespaces may use it.
///
/// An `AwsKey` that names no `AwsKms` uses the one named `default`, when it exists and admits
/// the key's namespace. Write access to an AwsKms is access to every key material imported
/// through it: grant it like a cluster-admin permission.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "kms.keyfleet.dev",
    version = "v1alpha1",
    kind = "AwsKms",
    plural = "awskmses",
    singular = "awskms",
    shortname = "akms",
    category = "keyfleet",
    doc = "An AWS KMS connection: the role keyfleet assumes and the regions keys may live in.",
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.roleArn"),
    printcolumn(
        name = "Namespaces",
        type_ = "string",
        json_path = ".spec.allowedNamespaces.from"
    ),
    printcolumn(name = "Regions", type_ = "string", json_path = ".spec.regions"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    cel
)]
#[serde(rename_all = "camelCase")]
pub struct AwsKmsSpec {
    /// The namespaces whose AwsKeys and AwsReplicaKeys may use this connection (required):
    /// `{from: All}` or `{from: Selector, selector: {matchLabels: ...}}`. A key in another
    /// namespace is refused with reason `KmsConnectionNotAllowed`, before any KMS call.
    pub allowed_namespaces: AllowedNamespaces,

    /// IAM role to assume for every KMS call made through this connection, e.g.
    /// `arn:aws:iam::111122223333:role/keyfleet`. Unset: the operator's own credentials (the
    /// default AWS chain: environment, IRSA, EKS Pod Identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$')").message("roleArn must be an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)"))]
    pub role_arn: Option<String>,

    /// External id passed to sts:AssumeRole, when the role's trust policy requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 1224))]
    pub external_id: Option<String>,

    /// Regions in which keys may be created through this connection, e.g. `[eu-west-1]`.
    /// Empty: any region. A key in another region is refused with reason `RegionNotAllowed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,

    /// Overrides the KMS endpoint URL (VPC and FIPS endpoints). Must be `https://` with a host
    /// the operator allows (`--kms-endpoint-hosts`, default the AWS KMS domains); anything else
    /// only when the operator runs with `--allow-custom-kms-endpoints`, else the key is refused
    /// with `KmsEndpointNotAllowed`. Unset: the standard AWS endpoint resolution, which honours
    /// the operator's `AWS_ENDPOINT_URL_KMS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("endpointUrl must be an http(s) URL"))]
    pub endpoint_url: Option<String>,

    /// Aliases of keys using this connection must start with this prefix; `{namespace}` is
    /// replaced by the key's namespace, e.g. `alias/{namespace}/`. An alias outside it is
    /// refused with `AliasNotAllowed`. Unset: any alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 7, max = 200))]
    #[x_kube(validation = Rule::new("self.startsWith('alias/') && !self.startsWith('alias/aws/')").message("aliasPrefix must start with alias/ (and not alias/aws/)"))]
    pub alias_prefix: Option<String>,

    /// Whether keys that keyfleet did not create may be adopted (`adoptKeyArn`) without the
    /// key's own consent tag `keyfleet.dev/adopt-by: <namespace>/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adoption: Option<AdoptionPolicy>,

    /// Limits on the key policies of keys using this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_policy: Option<KeyPolicyLimits>,
}

/// Adoption of KMS keys keyfleet did not create.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdoptionPolicy {
    /// Adopt keys without keyfleet's owner tags even when they carry no
    /// `keyfleet.dev/adopt-by` tag naming the adopting AwsKey. Default false.
    #[serde(default)]
    pub allow_unowned_keys: bool,
}

/// What a key policy rendered for a key of this connection may say.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyPolicyLimits {
    /// AWS accounts a policy may name as principals (12 digits each). Empty: any account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(a, a.matches('^[0-9]{12}$'))").message("allowedAccounts entries must be 12-digit AWS account ids"))]
    pub allowed_accounts: Vec<String>,
    /// Allow a `"*"` principal (anyone, subject to conditions). Default false.
    #[serde(default)]
    pub allow_wildcard_principal: bool,
    /// Allow keys to set `bypassPolicyLockoutSafetyCheck: true`. Default false.
    #[serde(default)]
    pub allow_bypass_policy_lockout_safety_check: bool,
}

/// The connection an AwsKey or AwsReplicaKey without `kmsRef` uses.
pub const DEFAULT_CONNECTION: &str = "default";

impl AwsKmsSpec {
    /// A connection with the operator's own credentials for the namespaces `allowed` admits.
    pub fn new(allowed_namespaces: AllowedNamespaces) -> AwsKmsSpec {
        AwsKmsSpec {
            allowed_namespaces,
            role_arn: None,
            external_id: None,
            regions: vec![],
            endpoint_url: None,
            alias_prefix: None,
            adoption: None,
            key_policy: None,
        }
    }

    /// Whether keys may be placed in `region` through this connection.
    pub fn allows_region(&self, region: &str) -> bool {
        self.regions.is_empty() || self.regions.iter().any(|r| r == region)
    }
}
