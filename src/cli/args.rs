//! Command-line interface: `keyfleet run | crds | validate | render-policy`, flags with environment fallbacks.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// keyfleet: bring-your-own-key material in AWS KMS, managed as Kubernetes resources.
#[derive(Debug, Parser)]
#[command(name = "keyfleet", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator against the current kubeconfig context (or in-cluster config).
    Run(RunArgs),
    /// Print every CustomResourceDefinition as multi-document YAML.
    Crds,
    /// Exit 0 when the current kubeconfig context (or in-cluster config) answers, else 1.
    #[command(hide = true)]
    ProbeCluster,
    /// Check manifests offline (no cluster, no AWS credentials): CRD schema, CEL rules,
    /// keyfleet's own validation, key material in referenced Secrets, and references between
    /// objects. Exit code: 0 clean, 1 findings, 2 unusable input.
    Validate(ValidateArgs),
    /// Print the key policy keyfleet would apply to each AwsKey and AwsReplicaKey of the given
    /// manifests (templates and shortcuts rendered, placeholders filled in) with its
    /// `sha256:` hash, the value `status.policyHash` shows once it is applied.
    RenderPolicy(RenderPolicyArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["account_id", "key_arn"])))]
pub struct RenderPolicyArgs {
    /// Manifests: files, directories or `-`; AwsKeyPolicyTemplates among them are used.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub files: Vec<PathBuf>,
    /// Render for a new key in this AWS account (12 digits).
    #[arg(long, value_parser = parse_account_id)]
    pub account_id: Option<String>,
    /// Render for this existing key (its account, region and id): the hash then equals the
    /// key's `status.policyHash`.
    #[arg(long)]
    pub key_arn: Option<String>,
    /// Output format: text (a header and the policy per key) or json.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Namespace of objects that set none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

fn parse_account_id(s: &str) -> Result<String, String> {
    if crate::policy::principal::is_account_id(s) {
        Ok(s.to_string())
    } else {
        Err("an AWS account id has 12 digits".into())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One line per finding (`file:line: Kind/namespace/name: field: message`) and a summary.
    Text,
    /// One JSON document: findings, input errors and summary.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// A manifest file, a directory (searched recursively for *.yaml and *.yml), or `-` for
    /// standard input (e.g. `kustomize build . | keyfleet validate -f -`). Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        visible_alias = "file",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Also report a `kmsRef` or `secretRef` naming an object that is not in the input (by
    /// default only references to objects in the input are checked, since connections and
    /// Secrets are often managed elsewhere).
    #[arg(long)]
    pub require_refs: bool,
    /// Namespace of objects that set none, as `kubectl apply -n` would apply them.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Seconds between re-reads of a Ready key from KMS (drift repair).
    #[arg(long, env = "KEYFLEET_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,
    /// Seconds between deep drift reads of a Ready key (tags, aliases, policy); a resync in
    /// between costs one DescribeKey. A spec change always triggers a deep read.
    #[arg(long, env = "KEYFLEET_DRIFT_SECONDS", default_value_t = 600)]
    pub drift_seconds: u64,
    /// Client-side KMS request quota of an operation, per account and region, as
    /// `Operation=requests-per-second` (repeatable or comma-separated), e.g.
    /// `GetParametersForImport=0.25`. Defaults: the AWS KMS default quotas. Set it to the quota
    /// your account has, minus what other KMS clients of the account use.
    #[arg(
        long = "kms-quota",
        env = "KEYFLEET_KMS_QUOTAS",
        value_delimiter = ',',
        value_name = "OPERATION=RATE"
    )]
    pub kms_quotas: Vec<crate::kms::quota::QuotaOverride>,
    /// Seconds a key that waits for a change (bad spec, missing Secret) waits before a recheck.
    #[arg(long, env = "KEYFLEET_BLOCKED_RECHECK_SECONDS", default_value_t = 600)]
    pub blocked_recheck_seconds: u64,
    /// Maximum number of AwsKeys reconciled in parallel.
    #[arg(long, env = "KEYFLEET_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,
    /// Log format: json (default, for log pipelines) or text (for people).
    #[arg(long, env = "KEYFLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Identifies this cluster in the ownership tags of the keys it creates. Default: the uid of
    /// the kube-system namespace.
    #[arg(long, env = "KEYFLEET_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Apply (server-side) the CRDs at startup. For development; the Helm chart installs them.
    #[arg(long, env = "KEYFLEET_INSTALL_CRDS")]
    pub install_crds: bool,
    /// Address of the /healthz, /readyz and /metrics endpoints.
    #[arg(long, env = "KEYFLEET_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: std::net::SocketAddr,
    /// Elect a leader through a Lease so that only one replica reconciles.
    #[arg(long, env = "KEYFLEET_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Namespace of the leader-election Lease. Default: the pod's namespace (POD_NAMESPACE).
    #[arg(long, env = "KEYFLEET_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "KEYFLEET_LEADER_ELECTION_LEASE_NAME",
        default_value = "keyfleet"
    )]
    pub leader_election_lease_name: String,
    /// Identity in the Lease. Default: the pod name (POD_NAME), else host name and pid.
    #[arg(long, env = "KEYFLEET_LEADER_ELECTION_IDENTITY")]
    pub leader_election_identity: Option<String>,
    /// Watch only these namespaces (comma-separated); default: all namespaces.
    #[arg(long, env = "KEYFLEET_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Days of validity left at which rolling-validity material is imported again (capped at a
    /// third of the key's rollingValidity).
    #[arg(
        long,
        env = "KEYFLEET_MATERIAL_RENEW_BEFORE_DAYS",
        default_value_t = 30
    )]
    pub material_renew_before_days: u32,
    /// Hosts an AwsKms `endpointUrl` may name (comma-separated patterns; `*` is one DNS
    /// label). Default: the AWS KMS endpoints (regional, FIPS, dual-stack, China, VPC).
    #[arg(long, env = "KEYFLEET_KMS_ENDPOINT_HOSTS", value_delimiter = ',')]
    pub kms_endpoint_hosts: Vec<String>,
    /// Let AwsKms `endpointUrl` name any URL, `http://` included (tests, playgrounds). Anyone
    /// who can edit an AwsKms can then send key material to a server of their choice.
    #[arg(long, env = "KEYFLEET_ALLOW_CUSTOM_KMS_ENDPOINTS")]
    pub allow_custom_kms_endpoints: bool,
    /// Deletion policy of keys whose spec sets none, when their namespace has no
    /// `keyfleet.dev/default-deletion-policy` annotation (adopted keys: Retain).
    #[arg(long, env = "KEYFLEET_DEFAULT_DELETION_POLICY", default_value = "Delete", value_parser = parse_deletion_policy)]
    pub default_deletion_policy: crate::api::DeletionPolicy,
}

fn parse_deletion_policy(s: &str) -> Result<crate::api::DeletionPolicy, String> {
    s.parse()
}

impl RunArgs {
    pub fn resync_interval(&self) -> Duration {
        Duration::from_secs(self.resync_seconds.max(10))
    }

    pub fn drift_interval(&self) -> Duration {
        Duration::from_secs(self.drift_seconds.max(10))
    }

    pub fn blocked_recheck_interval(&self) -> Duration {
        Duration::from_secs(self.blocked_recheck_seconds.max(10))
    }

    /// The endpoint policy these flags describe.
    pub fn endpoint_policy(&self) -> crate::tenancy::EndpointPolicy {
        let mut policy = crate::tenancy::EndpointPolicy::default();
        if !self.kms_endpoint_hosts.is_empty() {
            policy.allowed_hosts = self.kms_endpoint_hosts.clone();
        }
        policy.allow_custom = self.allow_custom_kms_endpoints;
        policy
    }

    pub fn material_renew_before(&self) -> Duration {
        Duration::from_secs(u64::from(self.material_renew_before_days.max(1)) * 24 * 3600)
    }
}
