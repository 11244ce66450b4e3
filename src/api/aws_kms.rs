//! `AwsKms` (cluster-scoped): an AWS KMS connection — credentials, allowed regions, endpoint.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::allowed_namespaces::AllowedNamespaces;

/// The grammar of an AWS region name as a regular expression: a partition's area prefix, a
/// direction and a number, e.g. `eu-west-1`, `us-gov-west-1`, `cn-northwest-1`,
/// `eusc-de-east-1` (from [`REGION_PREFIXES`] and [`REGION_DIRECTIONS`], which
/// [`is_region_name`] reads too).
pub fn aws_region_pattern() -> String {
    format!(
        "^({})-({})-[1-9][0-9]?$",
        REGION_PREFIXES.join("|"),
        REGION_DIRECTIONS.join("|")
    )
}

/// The CEL rule that holds a `region` field to [`aws_region_pattern`].
pub(crate) fn region_rule() -> String {
    format!("self.matches('{}')", aws_region_pattern())
}

/// The message of [`region_rule`].
pub(crate) const REGION_RULE_MESSAGE: &str =
    "region must be an AWS region name, e.g. eu-west-1 or us-gov-west-1";

keyfleet_kind! {
kube(
    kind = "AwsKms",
    shortname = "akms",
    doc = "An AWS KMS connection: the role keyfleet assumes and the regions keys may live in.",
    status = "AwsKmsStatus",
),
columns_before(
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.roleArn"),
    printcolumn(name = "Namespaces", type_ = "string", json_path = ".spec.allowedNamespaces.from"),
    printcolumn(name = "Regions", type_ = "string", json_path = ".spec.regions"),
),
columns_between(
    printcolumn(name = "Account", type_ = "string", json_path = ".status.accountId"),
),
columns_after(),
/// An AWS KMS connection (CCKM `kms`): which credentials keyfleet uses, in which regions, and
/// which namespaces may use it.
///
/// An `AwsKey` that names no `AwsKms` uses the one named `default`, when it exists and admits
/// the key's namespace. Write access to an AwsKms is access to every key material imported
/// through it: grant it like a cluster-admin permission.
pub struct AwsKmsSpec {
    /// The namespaces whose AwsKeys and AwsReplicaKeys may use this connection (required):
    /// `{from: All}` or `{from: Selector, selector: {matchLabels: ...}}`. A key in another
    /// namespace is refused with reason `KmsConnectionNotAllowed`, before any KMS call.
    pub allowed_namespaces: AllowedNamespaces,

    /// IAM role to assume for every KMS call made through this connection, e.g.
    /// `arn:aws:iam::111122223333:role/keyfleet`. Unset: the operator's own credentials (the
    /// default AWS chain: environment, IRSA, EKS Pod Identity).
    #[x_kube(validation = Rule::new("self.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$')").message("roleArn must be an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)"))]
    pub role_arn: Option<String>,

    /// External id passed to sts:AssumeRole, when the role's trust policy requires one.
    #[schemars(length(min = 2, max = 1224))]
    pub external_id: Option<String>,

    /// Regions in which keys may be created through this connection, e.g. `[eu-west-1]`.
    /// Empty: any region. A key in another region is refused with reason `RegionNotAllowed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new(format!("self.all(r, r.matches('{}'))", aws_region_pattern())).message("regions entries must be AWS region names, e.g. eu-west-1 or us-gov-west-1"))]
    #[schemars(length(max = 64), inner(length(min = 1, max = 32)))]
    pub regions: Vec<String>,

    /// Overrides the KMS endpoint URL (VPC and FIPS endpoints). Must be `https://` with a host
    /// the operator allows (`--kms-endpoint-hosts`, default the AWS KMS domains); anything else
    /// only when the operator runs with `--allow-custom-kms-endpoints`, else the key is refused
    /// with `KmsEndpointNotAllowed`. Unset: the standard AWS endpoint resolution, which honours
    /// the operator's `AWS_ENDPOINT_URL_KMS`.
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("endpointUrl must be an http(s) URL"))]
    pub endpoint_url: Option<String>,

    /// Aliases of keys using this connection must start with this prefix; `{namespace}` is
    /// replaced by the key's namespace, e.g. `alias/{namespace}/`. An alias outside it is
    /// refused with `AliasNotAllowed`. Unset: any alias.
    #[schemars(length(min = 7, max = 200))]
    #[x_kube(validation = Rule::new("self.startsWith('alias/') && !self.startsWith('alias/aws/')").message("aliasPrefix must start with alias/ (and not alias/aws/)"))]
    pub alias_prefix: Option<String>,

    /// Whether keys that keyfleet did not create may be adopted (`adoptKeyArn`) without the
    /// key's own consent tag `keyfleet.dev/adopt-by: <namespace>/<name>`.
    pub adoption: Option<AdoptionPolicy>,

    /// Limits on the key policies of keys using this connection.
    pub key_policy: Option<KeyPolicyLimits>,
}

/// What keyfleet verified about a connection: that it can act through it (sts:GetCallerIdentity
/// through the role, well-formed regions), rechecked every resync.
pub struct AwsKmsStatus {
    /// The generation of the spec last checked.
    pub observed_generation: Option<i64>,
    /// The principal keyfleet acts as through this connection (sts:GetCallerIdentity).
    pub caller_arn: Option<String>,
    /// The AWS account of that principal: where keys created through this connection live.
    pub account_id: Option<String>,
    /// `Ready` is True once keyfleet verified it can act through the connection; otherwise its
    /// reason says why not (`AssumeRoleFailed`, `CredentialsUnavailable`, `RegionInvalid`,
    /// `StsUnavailable`). `Stalled` and `Reconciling` carry the same reason, as kstatus reads
    /// them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
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

/// The area prefixes of AWS region names: those of the partitions' `regionRegex` in the AWS
/// SDKs' `partitions.json` (aws, aws-cn, aws-us-gov, aws-iso, aws-iso-b, aws-iso-e, aws-iso-f,
/// aws-eusc).
const REGION_PREFIXES: [&str; 16] = [
    "af", "ap", "ca", "cn", "eu", "il", "me", "mx", "sa", "us", "us-gov", "us-iso", "us-isob",
    "us-isof", "eu-isoe", "eusc-de",
];

/// The directions AWS region names use, spelled out so that a typo such as `eu-wset-1` is
/// refused.
const REGION_DIRECTIONS: [&str; 9] = [
    "central",
    "north",
    "south",
    "east",
    "west",
    "northeast",
    "northwest",
    "southeast",
    "southwest",
];

/// Whether `region` is an AWS region name by [`aws_region_pattern`] (the admission rule), for
/// objects admitted before the rule existed: `<prefix>-<direction>-<1..99>`.
pub fn is_region_name(region: &str) -> bool {
    let Some((rest, number)) = region.rsplit_once('-') else {
        return false;
    };
    let Some((prefix, direction)) = rest.rsplit_once('-') else {
        return false;
    };
    let number_ok = matches!(
        number.as_bytes(),
        [b'1'..=b'9'] | [b'1'..=b'9', b'0'..=b'9']
    );
    number_ok && REGION_PREFIXES.contains(&prefix) && REGION_DIRECTIONS.contains(&direction)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGIONS: [(&str, bool); 22] = [
        ("eu-west-1", true),
        ("us-gov-west-1", true),
        ("ap-southeast-4", true),
        ("cn-north-1", true),
        ("us-isob-east-1", true),
        ("eusc-de-east-1", true),
        ("me-central-1", true),
        ("ap-northeast-12", true),
        ("", false),
        ("eu-west", false),
        ("EU-west-1", false),
        ("eu_west_1", false),
        ("eu-west-1a", false),
        ("europe-west-1", false),
        ("-west-1", false),
        ("eu--1", false),
        ("mars-1", false),
        ("eu-wset-1", false),
        ("eu-west-0", false),
        ("eu-west-100", false),
        ("xx-west-1", false),
        ("us-gov-west-01", false),
    ];

    #[test]
    fn region_names() {
        for (region, ok) in REGIONS {
            assert_eq!(is_region_name(region), ok, "{region:?}");
        }
    }

    /// The operator's check and the admission rule are one grammar.
    #[test]
    fn the_runtime_check_agrees_with_the_admission_rule() {
        for (region, ok) in REGIONS {
            let mut spec = AwsKmsSpec::new(AllowedNamespaces::all());
            spec.regions = vec![region.to_string()];
            let admitted = AwsKms::new("c", spec).validate_cel().is_ok();
            assert_eq!(admitted, ok, "admission of {region:?}");
        }
    }
}
