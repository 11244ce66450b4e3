//! `AwsKms` (cluster-scoped): an AWS KMS connection — credentials, allowed regions, endpoint.
// kube's `printcolumn(...)` arguments repeat `type_ = ...`, which this lint mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// An AWS KMS connection (CCKM `kms`): which credentials keyfleet uses and in which regions.
///
/// An `AwsKey` that names no `AwsKms` uses the operator's own credentials (the default AWS
/// chain: environment, IRSA, EKS Pod Identity) and any region.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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
    /// IAM role to assume for every KMS call made through this connection, e.g.
    /// `arn:aws:iam::111122223333:role/keyfleet`. Unset: the operator's own credentials.
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

    /// Overrides the KMS endpoint URL (VPC endpoints, FIPS endpoints, test doubles). Unset: the
    /// standard AWS endpoint resolution, which honours `AWS_ENDPOINT_URL_KMS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("endpointUrl must be an http(s) URL"))]
    pub endpoint_url: Option<String>,
}

impl AwsKmsSpec {
    /// Whether keys may be placed in `region` through this connection.
    pub fn allows_region(&self, region: &str) -> bool {
        self.regions.is_empty() || self.regions.iter().any(|r| r == region)
    }
}
