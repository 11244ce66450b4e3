//! The Helm chart (`charts/keyfleet`), checked with the real helm: `helm lint`, and
//! `helm template` output parsed as YAML and asserted on (RBAC, pod security, replicas and the
//! PodDisruptionBudget, watchNamespaces mode, IRSA, ServiceMonitor, CRDs, values schema).
//!
//! helm comes from `KEYFLEET_HELM` (set by `scripts/test`), else `.tools/bin/helm`
//! (`scripts/install-helm`). When neither exists the helm tests print a SKIPPED line and pass
//! on a developer machine, and fail under `CI=true`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

#[path = "support/tools.rs"]
mod tools;

const RELEASE: &str = "kf";
const NAMESPACE: &str = "keyfleet-system";
/// The release's full name (`<release>-<chart>`).
const FULLNAME: &str = "kf-keyfleet";
/// Cluster-scoped objects carry the release namespace too.
const CLUSTER_NAME: &str = "kf-keyfleet-keyfleet-system";
const GROUP: &str = "kms.keyfleet.dev";
const IRSA_ROLE: &str = "arn:aws:iam::111122223333:role/keyfleet";

/// Non-default values touching every key of values.yaml.
const CUSTOM_VALUES: &str = r#"
replicaCount: 3
image:
  repository: registry.example.com/platform/keyfleet
  tag: "1.2.3"
  digest: ""
  pullPolicy: Always
imagePullSecrets:
  - name: regcred
nameOverride: ""
fullnameOverride: ""
crds:
  install: true
clusterId: prod-eu-1
watchNamespaces: [team-a, team-b]
resyncSeconds: 120
driftSeconds: 1800
kmsQuotas:
  GetParametersForImport: 0.25
  CreateKey: 3
blockedRecheckSeconds: 60
kmsEndpointHosts: ["*.kms.eu-west-1.vpce.amazonaws.com", "kms.eu-west-1.amazonaws.com"]
concurrency: 4
materialRenewBeforeDays: 14
defaultDeletionPolicy: Retain
logFormat: text
logLevel: info,keyfleet=debug
leaderElection:
  enabled: true
  leaseName: keyfleet-leader
httpPort: 9090
aws:
  region: eu-west-1
serviceAccount:
  create: true
  name: keyfleet-operator
  annotations:
    eks.amazonaws.com/role-arn: arn:aws:iam::111122223333:role/keyfleet
rbac:
  create: true
  aggregateClusterRoles: false
extraEnv:
  - name: AWS_ENDPOINT_URL_KMS
    value: https://kms.eu-west-1.amazonaws.com
podAnnotations:
  example.com/team: platform
podLabels:
  example.com/cost-center: "42"
resources:
  requests:
    cpu: 100m
    memory: 128Mi
  limits:
    cpu: "1"
    memory: 512Mi
podDisruptionBudget:
  enabled: true
  maxUnavailable: 2
metrics:
  service:
    enabled: true
  serviceMonitor:
    enabled: true
    interval: 15s
    scrapeTimeout: 5s
    labels:
      release: prometheus
  podMonitor:
    enabled: false
    interval: 20s
    scrapeTimeout: 5s
    labels: {}
  prometheusRule:
    enabled: true
    labels:
      release: prometheus
    keyNotReadyFor: 30m
    kmsThrottledRatio: 0.2
    alertLabels:
      team: platform
  grafanaDashboard:
    enabled: true
    namespace: monitoring
    sidecarLabel: grafana_dashboard
    sidecarLabelValue: "keyfleet"
    annotations:
      grafana_folder: Security
networkPolicy:
  enabled: true
  metricsFrom:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: monitoring
  egressPorts: [443]
  extraEgress:
    - to:
        - ipBlock:
            cidr: 10.0.0.10/32
      ports:
        - port: 3128
          protocol: TCP
priorityClassName: system-cluster-critical
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: DoNotSchedule
defaultTopologySpread: true
nodeSelector:
  kubernetes.io/os: linux
tolerations:
  - key: dedicated
    operator: Equal
    value: platform
    effect: NoSchedule
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              app.kubernetes.io/name: keyfleet
"#;

fn root() -> &'static Path {
    tools::root()
}

fn chart_dir() -> PathBuf {
    root().join("charts/keyfleet")
}

struct Helm {
    bin: PathBuf,
}

/// The helm binary, or None (after printing why the test, named after the current thread, is
/// skipped; under CI=true a missing helm fails the test instead).
fn helm() -> Option<Helm> {
    let thread = std::thread::current();
    let bin = tools::find(
        thread.name().unwrap_or("helm_chart"),
        "KEYFLEET_HELM",
        &[".tools/bin/helm"],
        "run scripts/install-helm",
    )?;
    Some(Helm { bin })
}

/// A values file that lives as long as the returned handle.
fn values_file(yaml: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(yaml.as_bytes()).unwrap();
    file.flush().unwrap();
    file
}

/// `helm template` output: the raw text and its YAML documents.
struct Rendered {
    text: String,
    docs: Vec<Value>,
}

impl Helm {
    fn run(&self, args: &[&str]) -> std::process::Output {
        let home = tempfile::tempdir().unwrap();
        Command::new(&self.bin)
            .args(args)
            // No user or machine helm configuration leaks in.
            .env("HELM_CACHE_HOME", home.path().join("cache"))
            .env("HELM_CONFIG_HOME", home.path().join("config"))
            .env("HELM_DATA_HOME", home.path().join("data"))
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()))
    }

    /// `helm template` with `extra` arguments (`--set`, `-f`); Err(stderr) when helm fails.
    fn try_template(&self, extra: &[&str]) -> Result<Rendered, String> {
        let chart = chart_dir();
        let mut args = vec![
            "template",
            RELEASE,
            chart.to_str().unwrap(),
            "--namespace",
            NAMESPACE,
        ];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let text = String::from_utf8(out.stdout).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        let docs = docs.into_iter().filter(|v| !v.is_null()).collect();
        Ok(Rendered { text, docs })
    }

    /// `helm template` with `extra` arguments, which helm must refuse; its error.
    fn refused(&self, extra: &[&str]) -> String {
        self.try_template(extra)
            .err()
            .unwrap_or_else(|| panic!("helm template {extra:?} must fail"))
    }

    /// Asserts that helm refuses `helm template` with `extra` arguments, naming `needle`.
    fn assert_refused(&self, extra: &[&str], needle: &str) {
        let err = self.refused(extra);
        assert!(err.contains(needle), "{extra:?}: {err}");
    }

    fn template(&self, extra: &[&str]) -> Rendered {
        self.try_template(extra)
            .unwrap_or_else(|e| panic!("helm template {extra:?} failed:\n{e}"))
    }

    fn template_custom(&self, extra: &[&str]) -> Rendered {
        let file = values_file(CUSTOM_VALUES);
        let mut args = vec!["-f", file.path().to_str().unwrap()];
        args.extend_from_slice(extra);
        self.template(&args)
    }
}

impl Rendered {
    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let all = self.of_kind(kind);
        assert_eq!(all.len(), 1, "expected one {kind}, got {}", all.len());
        all[0]
    }

    fn named(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<&Value> {
        self.of_kind(kind).into_iter().find(|d| {
            d["metadata"]["name"] == name && d["metadata"]["namespace"].as_str() == namespace
        })
    }

    /// The ClusterRole the operator's ClusterRoleBinding grants.
    fn operator_cluster_role(&self) -> &Value {
        self.named("ClusterRole", None, CLUSTER_NAME)
            .expect("the operator's ClusterRole")
    }

    fn deployment(&self) -> &Value {
        self.one("Deployment")
    }

    fn container(&self) -> &Value {
        let containers = self.deployment()["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1);
        &containers[0]
    }

    /// The container's env: name → value (or `<valueFrom>` for downward-API variables).
    fn env(&self) -> BTreeMap<String, String> {
        self.container()["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let name = e["name"].as_str().unwrap().to_string();
                let value = match e["value"].as_str() {
                    Some(v) => v.to_string(),
                    None => {
                        assert!(e["valueFrom"].is_object(), "{name} has no value");
                        "<valueFrom>".to_string()
                    }
                };
                (name, value)
            })
            .collect()
    }
}

fn strs(v: &Value) -> Vec<String> {
    match v.as_array() {
        Some(seq) => seq
            .iter()
            .map(|s| s.as_str().expect("a string").to_string())
            .collect(),
        None => {
            assert!(v.is_null(), "expected a list of strings, got {v:?}");
            vec![]
        }
    }
}

fn as_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.to_string(), v.as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// One RBAC rule, order-insensitive.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    api_groups: BTreeSet<String>,
    resources: BTreeSet<String>,
    resource_names: BTreeSet<String>,
    verbs: BTreeSet<String>,
}

fn rule(groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]) -> Rule {
    let set = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
    Rule {
        api_groups: set(groups),
        resources: set(resources),
        resource_names: set(names),
        verbs: set(verbs),
    }
}

fn rules_of(role: &Value) -> Vec<Rule> {
    let mut rules: Vec<Rule> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let keys: BTreeSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
            assert!(
                keys.is_subset(&BTreeSet::from([
                    "apiGroups",
                    "resources",
                    "resourceNames",
                    "verbs"
                ])),
                "unexpected rule fields {keys:?}"
            );
            let to_set = |v: &Value| -> BTreeSet<String> {
                let list = strs(v);
                let set: BTreeSet<String> = list.iter().cloned().collect();
                assert_eq!(set.len(), list.len(), "duplicates in {list:?}");
                set
            };
            Rule {
                api_groups: to_set(&r["apiGroups"]),
                resources: to_set(&r["resources"]),
                resource_names: to_set(&r["resourceNames"]),
                verbs: to_set(&r["verbs"]),
            }
        })
        .collect();
    rules.sort();
    rules
}

fn sorted(mut rules: Vec<Rule>) -> Vec<Rule> {
    rules.sort();
    rules
}

/// AwsKeys, Secrets, events: in the ClusterRole, or in each watched namespace's Role.
fn namespaced_rules() -> Vec<Rule> {
    vec![
        rule(
            &[GROUP],
            &["awskeys", "awsreplicakeys"],
            &[],
            &["get", "list", "watch", "patch"],
        ),
        rule(
            &[GROUP],
            &["awskeys/status", "awsreplicakeys/status"],
            &[],
            &["patch"],
        ),
        rule(
            &[GROUP],
            &["awskeys/finalizers", "awsreplicakeys/finalizers"],
            &[],
            &["update"],
        ),
        rule(&[""], &["secrets"], &[], &["get", "list", "watch"]),
        rule(&["events.k8s.io"], &["events"], &[], &["create", "patch"]),
    ]
}

/// AwsKms, AwsKeyPolicyTemplates and Pkcs11Tokens, and namespace metadata, in every mode.
fn cluster_rules() -> Vec<Rule> {
    let rules = vec![
        rule(
            &[GROUP],
            &["awskmses", "awskeypolicytemplates"],
            &[],
            &["get", "list", "watch"],
        ),
        rule(
            &[GROUP],
            &["awskmses/status", "awskeypolicytemplates/status"],
            &[],
            &["patch"],
        ),
        rule(&[GROUP], &["pkcs11tokens"], &[], &["get", "list", "watch"]),
        rule(&[GROUP], &["pkcs11tokens/status"], &[], &["patch"]),
        // Namespaces (metadata): their labels grant connections and tokens; kube-system's uid
        // is the default cluster id.
        rule(&[""], &["namespaces"], &[], &["get", "list", "watch"]),
    ];
    rules
}

/// rbac.secretCreation: create on Secrets, and nothing else.
fn secret_creation_rule() -> Rule {
    rule(&[""], &["secrets"], &[], &["create"])
}

fn lease_rules(lease: &str) -> Vec<Rule> {
    vec![
        rule(&["coordination.k8s.io"], &["leases"], &[], &["create"]),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &[lease],
            &["get", "list", "watch", "update", "patch"],
        ),
    ]
}

/// Every (Cluster)Role: no wildcard anywhere, no write verb on Secrets, and a comment on the
/// line before every rule in the rendered text.
fn check_rbac_hygiene(r: &Rendered) {
    let roles: Vec<&Value> = r
        .of_kind("ClusterRole")
        .into_iter()
        .chain(r.of_kind("Role"))
        .collect();
    assert!(!roles.is_empty());
    for role in &roles {
        for rule in rules_of(role) {
            for field in [
                &rule.api_groups,
                &rule.resources,
                &rule.resource_names,
                &rule.verbs,
            ] {
                assert!(
                    !field.iter().any(|s| s.contains('*')),
                    "wildcard in {rule:?}"
                );
            }
            if rule.resources.contains("secrets") {
                // Reads, or (rbac.secretCreation) create alone in a rule of its own: never
                // update, patch or delete.
                let read: BTreeSet<String> = ["get", "list", "watch"].map(String::from).into();
                assert!(
                    rule.verbs.is_subset(&read) || rule == secret_creation_rule(),
                    "Secrets write verb in {rule:?}"
                );
            }
        }
    }
    let lines: Vec<&str> = r.text.lines().collect();
    let mut rule_count = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("- apiGroups:") {
            rule_count += 1;
            assert!(
                i > 0 && lines[i - 1].trim_start().starts_with('#'),
                "RBAC rule without a comment above it: {line:?} (line {})",
                i + 1
            );
        }
    }
    let total: usize = roles.iter().map(|r| rules_of(r).len()).sum();
    assert_eq!(rule_count, total, "every rule is written as `- apiGroups:`");
}

fn check_binding(binding: &Value, role_kind: &str, role_name: &str, sa: &str) {
    assert_eq!(binding["roleRef"]["kind"], role_kind);
    assert_eq!(binding["roleRef"]["name"], role_name);
    assert_eq!(binding["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
    let subjects = binding["subjects"].as_array().unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0]["kind"], "ServiceAccount");
    assert_eq!(subjects[0]["name"], sa);
    assert_eq!(subjects[0]["namespace"], NAMESPACE);
}

#[test]
fn lint_is_clean_with_default_and_custom_values() {
    let Some(helm) = helm() else {
        return;
    };
    let file = values_file(CUSTOM_VALUES);
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    for extra in [vec![], vec!["-f", file.path().to_str().unwrap()]] {
        let mut args = vec!["lint", "--strict", chart];
        args.extend(extra.iter().copied());
        let out = helm.run(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "helm {args:?} failed:\n{text}");
        assert!(
            text.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{text}"
        );
        assert!(
            !text.contains("[WARNING]") && !text.contains("[ERROR]"),
            "helm {args:?} is not clean:\n{text}"
        );
    }
}

#[test]
fn default_rbac_is_exactly_the_intended_rules() {
    let Some(helm) = helm() else {
        return;
    };
    let r = helm.template(&[]);
    check_rbac_hygiene(&r);

    // Every namespace: one ClusterRole with every rule (besides the two aggregated into the
    // user-facing roles, which no binding of the operator uses).
    let cluster_roles = r.of_kind("ClusterRole");
    assert_eq!(cluster_roles.len(), 3);
    let mut want = cluster_rules();
    want.extend(namespaced_rules());
    assert_eq!(rules_of(r.operator_cluster_role()), sorted(want));
    check_binding(
        r.one("ClusterRoleBinding"),
        "ClusterRole",
        CLUSTER_NAME,
        FULLNAME,
    );

    // The only Role: leader election, in the release namespace, for this release's Lease.
    let roles = r.of_kind("Role");
    assert_eq!(roles.len(), 1);
    let lease_role = format!("{FULLNAME}-leader-election");
    assert_eq!(roles[0]["metadata"]["name"], lease_role.as_str());
    assert_eq!(roles[0]["metadata"]["namespace"], NAMESPACE);
    assert_eq!(rules_of(roles[0]), sorted(lease_rules(FULLNAME)));
    check_binding(r.one("RoleBinding"), "Role", &lease_role, FULLNAME);
    assert_eq!(r.one("ServiceAccount")["metadata"]["name"], FULLNAME);
}

#[test]
fn cluster_id_is_passed_to_the_operator() {
    let Some(helm) = helm() else {
        return;
    };
    let r = helm.template(&["--set", "clusterId=prod-eu-1"]);
    check_rbac_hygiene(&r);
    let mut want = cluster_rules();
    want.extend(namespaced_rules());
    assert_eq!(rules_of(r.operator_cluster_role()), sorted(want));
    assert_eq!(r.env()["KEYFLEET_CLUSTER_ID"], "prod-eu-1");
    assert!(!helm.template(&[]).env().contains_key("KEYFLEET_CLUSTER_ID"));
}

#[test]
fn watch_namespaces_uses_roles_in_each_listed_namespace() {
    let Some(helm) = helm() else {
        return;
    };
    for extra in [
        vec!["--set", "watchNamespaces={team-a,team-b}"],
        vec![
            "--set",
            "watchNamespaces={team-a,team-b}",
            "--set",
            "clusterId=c1",
        ],
    ] {
        let r = helm.template(&extra);
        check_rbac_hygiene(&r);

        // Cluster-wide: only the cluster-scoped AwsKms, templates, tokens and namespace
        // metadata, never Secrets.
        let cluster_role = r.operator_cluster_role();
        assert_eq!(rules_of(cluster_role), sorted(cluster_rules()));
        for rule in rules_of(cluster_role) {
            assert!(
                !rule.resources.contains("secrets") && !rule.resources.contains("awskeys"),
                "cluster-wide {rule:?} in namespaced mode"
            );
        }
        check_binding(
            r.one("ClusterRoleBinding"),
            "ClusterRole",
            CLUSTER_NAME,
            FULLNAME,
        );

        // Each watched namespace: a Role with the namespaced rules and its RoleBinding.
        for ns in ["team-a", "team-b"] {
            let role = r
                .named("Role", Some(ns), FULLNAME)
                .unwrap_or_else(|| panic!("no Role in {ns}"));
            assert_eq!(rules_of(role), sorted(namespaced_rules()));
            let binding = r
                .named("RoleBinding", Some(ns), FULLNAME)
                .unwrap_or_else(|| panic!("no RoleBinding in {ns}"));
            check_binding(binding, "Role", FULLNAME, FULLNAME);
        }
        // And nowhere else (the lease Role is the release namespace's only one).
        let role_namespaces: BTreeSet<&str> = r
            .of_kind("Role")
            .iter()
            .map(|d| d["metadata"]["namespace"].as_str().unwrap())
            .collect();
        assert_eq!(
            role_namespaces,
            BTreeSet::from(["team-a", "team-b", NAMESPACE])
        );
        assert_eq!(r.of_kind("Role").len(), 3);
        assert_eq!(r.of_kind("RoleBinding").len(), 3);
        assert_eq!(r.env()["KEYFLEET_WATCH_NAMESPACES"], "team-a,team-b");
    }
    assert!(
        !helm
            .template(&[])
            .env()
            .contains_key("KEYFLEET_WATCH_NAMESPACES")
    );
}

/// rbac.secretCreation adds create on Secrets where keyfleet watches (the ClusterRole, or each
/// watched namespace's Role), or only in the listed namespaces (a Role of its own in each);
/// without it no rule lets keyfleet create a Secret.
#[test]
fn secret_creation_is_opt_in_cluster_wide_or_in_chosen_namespaces() {
    let Some(helm) = helm() else {
        return;
    };
    let creation_role = format!("{FULLNAME}-secret-creation");
    let creates_secrets = |role: &Value| rules_of(role).contains(&secret_creation_rule());
    let with_creation = |rules: Vec<Rule>| {
        let mut rules = rules;
        rules.push(secret_creation_rule());
        sorted(rules)
    };

    // Off (the default), in both shapes: no role creates Secrets.
    for extra in [vec![], vec!["--set", "watchNamespaces={team-a,team-b}"]] {
        let r = helm.template(&extra);
        assert!(
            r.of_kind("ClusterRole")
                .into_iter()
                .chain(r.of_kind("Role"))
                .all(|role| !creates_secrets(role)),
            "{extra:?}: create on Secrets without rbac.secretCreation"
        );
    }

    // Cluster-wide install: the ClusterRole.
    let r = helm.template(&["--set", "rbac.secretCreation.enabled=true"]);
    check_rbac_hygiene(&r);
    let mut everything = cluster_rules();
    everything.extend(namespaced_rules());
    assert_eq!(
        rules_of(r.operator_cluster_role()),
        with_creation(everything.clone())
    );
    assert!(r.named("Role", Some("team-a"), &creation_role).is_none());

    // watchNamespaces: each watched namespace's Role, never the ClusterRole.
    let r = helm.template(&[
        "--set",
        "rbac.secretCreation.enabled=true",
        "--set",
        "watchNamespaces={team-a,team-b}",
    ]);
    check_rbac_hygiene(&r);
    assert_eq!(rules_of(r.operator_cluster_role()), sorted(cluster_rules()));
    for ns in ["team-a", "team-b"] {
        let role = r.named("Role", Some(ns), FULLNAME).unwrap();
        assert_eq!(rules_of(role), with_creation(namespaced_rules()), "{ns}");
    }

    // Listed namespaces only, in either shape: a Role (create alone) and its binding there,
    // and no create anywhere else.
    for extra in [vec![], vec!["--set", "watchNamespaces={team-a,team-b}"]] {
        let mut args = vec![
            "--set",
            "rbac.secretCreation.enabled=true",
            "--set",
            "rbac.secretCreation.namespaces={team-b}",
        ];
        args.extend(extra.iter().copied());
        let r = helm.template(&args);
        check_rbac_hygiene(&r);
        let role = r
            .named("Role", Some("team-b"), &creation_role)
            .unwrap_or_else(|| panic!("{extra:?}: no Secret creation Role in team-b"));
        assert_eq!(rules_of(role), vec![secret_creation_rule()]);
        let binding = r
            .named("RoleBinding", Some("team-b"), &creation_role)
            .unwrap();
        check_binding(binding, "Role", &creation_role, FULLNAME);
        let creating: Vec<String> = r
            .of_kind("ClusterRole")
            .into_iter()
            .chain(r.of_kind("Role"))
            .filter(|role| creates_secrets(role))
            .map(|role| {
                format!(
                    "{}/{}",
                    role["metadata"]["namespace"].as_str().unwrap_or("-"),
                    role["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(creating, [format!("team-b/{creation_role}")], "{extra:?}");
    }

    // Listed namespaces without `enabled`: nothing.
    let r = helm.template(&["--set", "rbac.secretCreation.namespaces={team-b}"]);
    assert!(r.named("Role", Some("team-b"), &creation_role).is_none());
}

#[test]
fn leader_election_rbac_follows_the_setting() {
    let Some(helm) = helm() else {
        return;
    };
    let r = helm.template(&["--set", "leaderElection.leaseName=my-lease"]);
    let role = r
        .named(
            "Role",
            Some(NAMESPACE),
            &format!("{FULLNAME}-leader-election"),
        )
        .unwrap();
    assert_eq!(rules_of(role), sorted(lease_rules("my-lease")));
    assert_eq!(r.env()["KEYFLEET_LEADER_ELECTION_LEASE_NAME"], "my-lease");

    let r = helm.template(&[
        "--set",
        "replicaCount=1",
        "--set",
        "leaderElection.enabled=false",
    ]);
    assert!(r.of_kind("Role").is_empty());
    assert!(r.of_kind("RoleBinding").is_empty());
    assert!(!r.text.contains("coordination.k8s.io"));
    let env = r.env();
    assert_eq!(env["KEYFLEET_LEADER_ELECTION"], "false");
    assert!(!env.contains_key("KEYFLEET_LEADER_ELECTION_NAMESPACE"));

    // Two replicas without a leader would both reconcile: refused.
    helm.assert_refused(
        &["--set", "leaderElection.enabled=false"],
        "leaderElection.enabled",
    );
}

#[test]
fn pod_security_context_is_restricted() {
    let Some(helm) = helm() else {
        return;
    };
    for r in [helm.template(&[]), helm.template_custom(&[])] {
        let pod = &r.deployment()["spec"]["template"]["spec"];
        let psc = &pod["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true);
        assert_eq!(psc["runAsUser"], 65532);
        assert_eq!(psc["runAsGroup"], 65532);
        assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(pod["automountServiceAccountToken"], true);
        assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null());
        assert!(pod["volumes"].is_null(), "no volumes expected");

        let c = r.container();
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["runAsUser"], 65532);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["privileged"], false);
        assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
        assert!(sc["capabilities"]["add"].is_null());
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");

        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    c["resources"][kind][resource].is_string(),
                    "resources.{kind}.{resource} missing"
                );
            }
        }
    }
    let custom = helm.template_custom(&[]);
    assert_eq!(custom.container()["resources"]["limits"]["memory"], "512Mi");
    assert_eq!(custom.container()["resources"]["requests"]["cpu"], "100m");
}

#[test]
fn deployment_maps_values_to_run_settings() {
    let Some(helm) = helm() else {
        return;
    };
    let r = helm.template(&[]);
    let c = r.container();
    assert_eq!(c["image"], "ghcr.io/keyfleet/keyfleet:0.1.0");
    assert_eq!(strs(&c["args"]), ["run"]);
    let want: BTreeMap<String, String> = [
        ("POD_NAME", "<valueFrom>"),
        ("POD_NAMESPACE", "<valueFrom>"),
        ("KEYFLEET_HTTP_ADDR", "0.0.0.0:8080"),
        ("KEYFLEET_RESYNC_SECONDS", "300"),
        ("KEYFLEET_DRIFT_SECONDS", "600"),
        ("KEYFLEET_BLOCKED_RECHECK_SECONDS", "600"),
        ("KEYFLEET_CONCURRENCY", "8"),
        ("KEYFLEET_MATERIAL_RENEW_BEFORE_DAYS", "30"),
        ("KEYFLEET_DEFAULT_DELETION_POLICY", "Delete"),
        ("KEYFLEET_LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
        ("KEYFLEET_LEADER_ELECTION", "true"),
        ("KEYFLEET_LEADER_ELECTION_NAMESPACE", NAMESPACE),
        ("KEYFLEET_LEADER_ELECTION_LEASE_NAME", FULLNAME),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(r.env(), want);
    let env = c["env"].as_array().unwrap();
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env.iter().find(|e| e["name"] == name).unwrap();
        assert_eq!(var["valueFrom"]["fieldRef"]["fieldPath"], path);
    }
    let ports = c["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["name"], "http");
    assert_eq!(ports[0]["containerPort"], 8080);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "http");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "http");

    let r = helm.template_custom(&[]);
    let c = r.container();
    assert_eq!(c["image"], "registry.example.com/platform/keyfleet:1.2.3");
    assert_eq!(c["imagePullPolicy"], "Always");
    let env = r.env();
    for (k, v) in [
        ("KEYFLEET_HTTP_ADDR", "0.0.0.0:9090"),
        ("KEYFLEET_RESYNC_SECONDS", "120"),
        ("KEYFLEET_DRIFT_SECONDS", "1800"),
        (
            "KEYFLEET_KMS_QUOTAS",
            "CreateKey=3,GetParametersForImport=0.25",
        ),
        ("KEYFLEET_BLOCKED_RECHECK_SECONDS", "60"),
        (
            "KEYFLEET_KMS_ENDPOINT_HOSTS",
            "*.kms.eu-west-1.vpce.amazonaws.com,kms.eu-west-1.amazonaws.com",
        ),
        ("KEYFLEET_CONCURRENCY", "4"),
        ("KEYFLEET_MATERIAL_RENEW_BEFORE_DAYS", "14"),
        ("KEYFLEET_DEFAULT_DELETION_POLICY", "Retain"),
        ("KEYFLEET_LOG_FORMAT", "text"),
        ("RUST_LOG", "info,keyfleet=debug"),
        ("KEYFLEET_CLUSTER_ID", "prod-eu-1"),
        ("KEYFLEET_WATCH_NAMESPACES", "team-a,team-b"),
        ("KEYFLEET_LEADER_ELECTION_LEASE_NAME", "keyfleet-leader"),
        ("AWS_REGION", "eu-west-1"),
        (
            "AWS_ENDPOINT_URL_KMS",
            "https://kms.eu-west-1.amazonaws.com",
        ),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(c["ports"][0]["containerPort"], 9090);
    let pod = &r.deployment()["spec"]["template"];
    assert_eq!(
        pod["metadata"]["annotations"]["example.com/team"],
        "platform"
    );
    assert_eq!(pod["metadata"]["labels"]["example.com/cost-center"], "42");
    assert_eq!(pod["spec"]["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["spec"]["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["spec"]["tolerations"][0]["key"], "dedicated");
    assert!(pod["spec"]["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(pod["spec"]["imagePullSecrets"][0]["name"], "regcred");

    let digest = format!("sha256:{}", "a".repeat(64));
    let r = helm.template(&["--set", &format!("image.digest={digest}")]);
    assert_eq!(
        r.container()["image"],
        format!("ghcr.io/keyfleet/keyfleet@{digest}").as_str()
    );
}

#[test]
fn replicas_and_disruption_budget() {
    let Some(helm) = helm() else {
        return;
    };
    let r = helm.template(&[]);
    assert_eq!(r.deployment()["spec"]["replicas"], 2);
    let pdb = r.one("PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let pod_labels = as_map(&r.deployment()["spec"]["template"]["metadata"]["labels"]);
    let selector = as_map(&pdb["spec"]["selector"]["matchLabels"]);
    assert!(!selector.is_empty());
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    assert_eq!(
        selector,
        as_map(&r.deployment()["spec"]["selector"]["matchLabels"])
    );

    let r = helm.template(&["--set", "replicaCount=1"]);
    assert_eq!(r.deployment()["spec"]["replicas"], 1);
    assert!(r.of_kind("PodDisruptionBudget").is_empty());

    let r = helm.template_custom(&[]);
    assert_eq!(r.deployment()["spec"]["replicas"], 3);
    assert_eq!(r.one("PodDisruptionBudget")["spec"]["maxUnavailable"], 2);

    let r = helm.template(&["--set", "podDisruptionBudget.enabled=false"]);
    assert!(r.of_kind("PodDisruptionBudget").is_empty());
}

#[test]
fn irsa_annotation_lands_on_the_service_account() {
    let Some(helm) = helm() else {
        return;
    };
    let r = helm.template(&[]);
    assert!(r.one("ServiceAccount")["metadata"]["annotations"].is_null());

    let r = helm.template_custom(&[]);
    let sa = r.one("ServiceAccount");
    assert_eq!(sa["metadata"]["name"], "keyfleet-operator");
    assert_eq!(sa["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        as_map(&sa["metadata"]["annotations"]),
        BTreeMap::from([(
            "eks.amazonaws.com/role-arn".to_string(),
            IRSA_ROLE.to_string()
        )])
    );
    assert_eq!(
        r.deployment()["spec"]["template"]["spec"]["serviceAccountName"],
        "keyfleet-operator"
    );
    for binding in r
        .of_kind("ClusterRoleBinding")
        .into_iter()
        .chain(r.of_kind("RoleBinding"))
    {
        assert_eq!(binding["subjects"][0]["name"], "keyfleet-operator");
    }

    // An existing ServiceAccount: none rendered, the pods use the named one.
    let r = helm.template(&[
        "--set",
        "serviceAccount.create=false",
        "--set",
        "serviceAccount.name=byo",
    ]);
    assert!(r.of_kind("ServiceAccount").is_empty());
    assert_eq!(
        r.deployment()["spec"]["template"]["spec"]["serviceAccountName"],
        "byo"
    );
    // An existing ServiceAccount needs a name.
    helm.assert_refused(
        &["--set", "serviceAccount.create=false"],
        "serviceAccount.name",
    );
}

#[test]
fn metrics_service_and_service_monitor_toggle() {
    let Some(helm) = helm() else {
        return;
    };
    let r = helm.template(&[]);
    assert!(r.of_kind("ServiceMonitor").is_empty(), "off by default");
    let svc = r.one("Service");
    assert_eq!(
        svc["metadata"]["name"],
        format!("{FULLNAME}-metrics").as_str()
    );
    assert_eq!(svc["spec"]["ports"][0]["name"], "http");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    let pod_labels = as_map(&r.deployment()["spec"]["template"]["metadata"]["labels"]);
    let selector = as_map(&svc["spec"]["selector"]);
    assert!(!selector.is_empty());
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));

    let r = helm.template_custom(&[]);
    let sm = r.one("ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    let endpoint = &sm["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "http");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "15s");
    let svc = r.one("Service");
    assert_eq!(svc["spec"]["ports"][0]["port"], 9090);
    let svc_labels = as_map(&svc["metadata"]["labels"]);
    for (k, v) in as_map(&sm["spec"]["selector"]["matchLabels"]) {
        assert_eq!(
            svc_labels.get(&k),
            Some(&v),
            "ServiceMonitor selects {k}={v}"
        );
    }
    assert_eq!(
        strs(&sm["spec"]["namespaceSelector"]["matchNames"]),
        [NAMESPACE]
    );

    let r = helm.template(&["--set", "metrics.service.enabled=false"]);
    assert!(r.of_kind("Service").is_empty());
}

#[test]
fn crds_are_rendered_as_generated_with_the_keep_policy() {
    let Some(helm) = helm() else {
        return;
    };
    let r = helm.template(&[]);
    let rendered = r.of_kind("CustomResourceDefinition");
    let generated = keyfleet::crds::all();
    assert_eq!(rendered.len(), generated.len());
    for crd in &generated {
        let name = crd.metadata.name.as_deref().unwrap();
        let doc = r
            .named("CustomResourceDefinition", None, name)
            .unwrap_or_else(|| panic!("CRD {name} not rendered"));
        assert_eq!(
            as_map(&doc["metadata"]["annotations"]),
            BTreeMap::from([("helm.sh/resource-policy".to_string(), "keep".to_string())])
        );
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/part-of"],
            "keyfleet"
        );
        // Apart from the chart's annotations and labels, exactly what the code generates.
        let mut doc = doc.clone();
        let meta = doc["metadata"].as_object_mut().unwrap();
        meta.remove("annotations");
        meta.remove("labels");
        let want: Value = serde_saphyr::from_str(&keyfleet::crds::to_yaml(crd).unwrap()).unwrap();
        assert!(doc == want, "rendered CRD {name} differs from the code");
    }

    let r = helm.template(&["--set", "crds.install=false"]);
    assert!(r.of_kind("CustomResourceDefinition").is_empty());
    assert!(!r.of_kind("Deployment").is_empty());
}

#[test]
fn schema_rejects_unknown_keys_and_bad_types() {
    let Some(helm) = helm() else {
        return;
    };
    // A `--set` of a misspelt key or a bad value: the error names the key (its last part).
    let bad_sets = [
        "replicaCont=3",
        "metrics.serviceMonitor.enabeld=true",
        "resources.limits.memroy=1Gi",
        "logFormat=xml",
        "crds.install=maybe",
        "watchNamespaces={Team_A}",
        "httpPort=70000",
        "materialRenewBeforeDays=0",
        "defaultDeletionPolicy=DeleteMaterial",
        "rbac.aggregateClusterRoles=yes",
        "networkPolicy.egressPorts={}",
        "networkPolicy.egressPorts={0}",
        "networkPolicy.enabel=true",
        "metrics.podMonitor.interval=soon",
        "metrics.prometheusRule.keyNotReadyFor=15",
        "metrics.prometheusRule.kmsThrottledRatio=2",
        "metrics.grafanaDashboard.namespace=Mon",
        "defaultTopologySpread=no",
    ];
    let named_key = |set: &'static str| {
        let key = set.split('=').next().unwrap().rsplit('.').next().unwrap();
        (vec!["--set", set], key)
    };
    // The others name another part.
    let others = [
        (vec!["--set", "serviceAccount.anotations.x=y"], "anotations"),
        (vec!["--set-string", "concurrency=eight"], "concurrency"),
        (
            vec!["--set", "topologySpreadConstraints[0].maxSkew=1"],
            "topologyKey",
        ),
        (
            vec![
                "--set",
                "topologySpreadConstraints[0].maxSkew=1",
                "--set",
                "topologySpreadConstraints[0].topologyKey=zone",
                "--set",
                "topologySpreadConstraints[0].whenUnsatisfiable=Never",
            ],
            "whenUnsatisfiable",
        ),
    ];
    let cases = bad_sets.into_iter().map(named_key).chain(others);
    for (args, key) in cases {
        let err = helm.refused(&args);
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(key),
            "{args:?}: error does not name {key:?}: {err}"
        );
    }
    // A typo in a values file too.
    let file = values_file("leaderElection:\n  leaseNmae: x\n");
    helm.assert_refused(&["-f", file.path().to_str().unwrap()], "leaseNmae");
}

/// Every object in values.schema.json is closed (`additionalProperties: false`, or a schema
/// for map values), except Kubernetes types passed through as they are.
#[test]
fn pkcs11_values_mount_a_module_and_its_configuration() {
    let Some(helm) = helm() else {
        return;
    };
    let r = helm.template(&[]);
    let pod = &r.deployment()["spec"]["template"]["spec"];
    assert!(pod["volumes"].is_null(), "no volumes by default");
    assert!(pod["containers"][0]["volumeMounts"].is_null());

    let values = values_file(
        "pkcs11:\n  volumes:\n    - name: luna\n      hostPath: {path: /usr/safenet/lunaclient, \
         type: Directory}\n  volumeMounts:\n    - name: luna\n      mountPath: \
         /usr/safenet/lunaclient\n      readOnly: true\n  env:\n    - name: \
         ChrystokiConfigurationPath\n      value: /usr/safenet/lunaclient\n",
    );
    let path = values.path().to_str().expect("UTF-8 path");
    let r = helm.template(&["-f", path]);
    let pod = &r.deployment()["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["name"], "luna");
    assert_eq!(
        pod["volumes"][0]["hostPath"]["path"],
        "/usr/safenet/lunaclient"
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["volumeMounts"][0]["mountPath"],
        "/usr/safenet/lunaclient"
    );
    assert!(
        strs(&Value::Array(
            container["env"]
                .as_array()
                .expect("env")
                .iter()
                .map(|e| e["name"].clone())
                .collect()
        ))
        .contains(&"ChrystokiConfigurationPath".to_string())
    );
}

#[test]
fn values_schema_closes_every_object() {
    let text = std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut open = vec![];
    let mut closed = 0;
    walk_schema(&schema, "", &mut open, &mut closed);
    open.sort();
    assert_eq!(
        open,
        [
            "/affinity/nodeAffinity",
            "/affinity/podAffinity",
            "/affinity/podAntiAffinity",
            "/extraEnv[]/valueFrom/configMapKeyRef",
            "/extraEnv[]/valueFrom/fieldRef",
            "/extraEnv[]/valueFrom/resourceFieldRef",
            "/extraEnv[]/valueFrom/secretKeyRef",
            "/global",
            "/networkPolicy/extraEgress[]",
            "/networkPolicy/metricsFrom[]",
            "/pkcs11/env[]/valueFrom/configMapKeyRef",
            "/pkcs11/env[]/valueFrom/fieldRef",
            "/pkcs11/env[]/valueFrom/resourceFieldRef",
            "/pkcs11/env[]/valueFrom/secretKeyRef",
            // Any Kubernetes volume source (hostPath, image, configMap, csi, ...).
            "/pkcs11/volumes[]",
            "/topologySpreadConstraints[]/labelSelector",
        ],
        "objects without additionalProperties"
    );
    assert!(closed > 15, "only {closed} closed objects found");

    // Every key of values.yaml is declared.
    let values: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    check_declared(&values, &schema, "");
}

fn walk_schema(node: &serde_json::Value, path: &str, open: &mut Vec<String>, closed: &mut usize) {
    let is_object = match &node["type"] {
        serde_json::Value::String(t) => t == "object",
        serde_json::Value::Array(ts) => ts.iter().any(|t| t == "object"),
        _ => false,
    };
    if is_object {
        match &node["additionalProperties"] {
            serde_json::Value::Bool(false) | serde_json::Value::Object(_) => *closed += 1,
            _ => open.push(path.to_string()),
        }
    }
    if let Some(props) = node["properties"].as_object() {
        for (key, sub) in props {
            walk_schema(sub, &format!("{path}/{key}"), open, closed);
        }
    }
    if node["items"].is_object() {
        walk_schema(&node["items"], &format!("{path}[]"), open, closed);
    }
}

fn check_declared(values: &serde_json::Value, schema: &serde_json::Value, path: &str) {
    if let (Some(map), Some(props)) = (values.as_object(), schema["properties"].as_object()) {
        for (key, value) in map {
            let sub = props
                .get(key)
                .unwrap_or_else(|| panic!("values.yaml key {path}/{key} is not in the schema"));
            check_declared(value, sub, &format!("{path}/{key}"));
        }
    }
}

/// The image (Dockerfile) and the chart agree: the image runs `/keyfleet run` as the uid the
/// pod securityContext pins, and the build context leaves out local state.
#[test]
fn dockerfile_matches_the_chart() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .copied()
        .collect();
    // Pinned by digest (tests/dockerfile_recipe.rs checks the digests and replays the build).
    let images: Vec<&str> = froms.iter().map(|f| f.split('@').next().unwrap()).collect();
    assert_eq!(
        images,
        [
            "FROM rust:1.95-bookworm",
            "FROM gcr.io/distroless/cc-debian12:nonroot"
        ]
    );
    assert!(froms[0].ends_with(" AS builder"));
    let runtime = lines
        .iter()
        .position(|l| l.starts_with("FROM gcr.io/distroless"))
        .unwrap();
    let runtime = &lines[runtime..];
    assert!(runtime.contains(&"USER 65532:65532"), "{runtime:?}");
    assert_eq!(runtime.last(), Some(&r#"CMD ["run"]"#));
    assert!(runtime.contains(&r#"ENTRYPOINT ["/keyfleet"]"#));
    assert_eq!(
        dockerfile
            .matches("cargo build --release --locked -p keyfleet --bin keyfleet")
            .count(),
        2,
        "dependency layer and real build"
    );

    let deployment =
        std::fs::read_to_string(chart_dir().join("templates/deployment.yaml")).unwrap();
    assert_eq!(deployment.matches("runAsUser: 65532").count(), 2);
    assert!(deployment.contains(r#"args: ["run"]"#));

    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    let ignored: BTreeSet<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for entry in [
        "target/",
        ".venv-localstack/",
        ".tools/",
        ".localstack/",
        ".git",
    ] {
        assert!(ignored.contains(entry), ".dockerignore lacks {entry}");
    }
}

/// The pods' labels, which every selector of the chart must match.
fn pod_selector(r: &Rendered) -> BTreeMap<String, String> {
    as_map(&r.deployment()["spec"]["selector"]["matchLabels"])
}

#[test]
fn topology_spread_is_soft_by_default_and_follows_the_values() {
    let Some(helm) = helm() else {
        return;
    };
    // Default: one soft constraint, one pod per node when the cluster has the nodes.
    let r = helm.template(&[]);
    let spread = r.deployment()["spec"]["template"]["spec"]["topologySpreadConstraints"]
        .as_array()
        .expect("a default topologySpreadConstraints");
    assert_eq!(spread.len(), 1);
    assert_eq!(spread[0]["maxSkew"], 1);
    assert_eq!(spread[0]["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(spread[0]["whenUnsatisfiable"], "ScheduleAnyway");
    assert_eq!(
        as_map(&spread[0]["labelSelector"]["matchLabels"]),
        pod_selector(&r)
    );

    // Custom constraints replace the default and get the pods' selector when they have none.
    let r = helm.template_custom(&[]);
    let spread = r.deployment()["spec"]["template"]["spec"]["topologySpreadConstraints"]
        .as_array()
        .unwrap();
    assert_eq!(spread.len(), 1);
    assert_eq!(spread[0]["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(spread[0]["whenUnsatisfiable"], "DoNotSchedule");
    assert_eq!(
        as_map(&spread[0]["labelSelector"]["matchLabels"]),
        pod_selector(&r)
    );
    // A constraint's own selector is kept.
    let r = helm.template(&[
        "--set",
        "topologySpreadConstraints[0].maxSkew=2",
        "--set",
        "topologySpreadConstraints[0].topologyKey=zone",
        "--set",
        "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        "--set",
        "topologySpreadConstraints[0].labelSelector.matchLabels.app=x",
    ]);
    let spread = &r.deployment()["spec"]["template"]["spec"]["topologySpreadConstraints"];
    assert_eq!(spread[0]["maxSkew"], 2);
    assert_eq!(
        as_map(&spread[0]["labelSelector"]["matchLabels"]),
        BTreeMap::from([("app".to_string(), "x".to_string())])
    );

    // Opting out: no constraint at all.
    let r = helm.template(&["--set", "defaultTopologySpread=false"]);
    assert!(r.deployment()["spec"]["template"]["spec"]["topologySpreadConstraints"].is_null());
}

#[test]
fn network_policy_is_opt_in_and_opens_only_what_keyfleet_uses() {
    let Some(helm) = helm() else {
        return;
    };
    assert!(
        helm.template(&[]).of_kind("NetworkPolicy").is_empty(),
        "off by default"
    );

    let r = helm.template(&["--set", "networkPolicy.enabled=true"]);
    let np = r.one("NetworkPolicy");
    assert_eq!(np["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(np["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        as_map(&np["spec"]["podSelector"]["matchLabels"]),
        pod_selector(&r)
    );
    assert_eq!(strs(&np["spec"]["policyTypes"]), ["Ingress", "Egress"]);
    // In: the http port only, from anywhere by default.
    let ingress = np["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1);
    assert_eq!(ingress[0]["ports"][0]["port"], "http");
    assert!(ingress[0]["from"].is_null());
    // Out: DNS, then HTTPS and the usual API server port.
    let egress = np["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 2);
    let ports = |rule: &Value| -> Vec<(String, String)> {
        rule["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let port = match &p["port"] {
                    Value::Number(n) => n.to_string(),
                    other => other.as_str().unwrap().to_string(),
                };
                (port, p["protocol"].as_str().unwrap().to_string())
            })
            .collect()
    };
    let pair = |p: &str, proto: &str| (p.to_string(), proto.to_string());
    assert_eq!(ports(&egress[0]), [pair("53", "UDP"), pair("53", "TCP")]);
    assert_eq!(ports(&egress[1]), [pair("443", "TCP"), pair("6443", "TCP")]);
    for rule in egress {
        assert!(
            rule["to"].is_null(),
            "any destination: AWS endpoints have no fixed CIDR"
        );
    }

    let r = helm.template_custom(&[]);
    let np = r.one("NetworkPolicy");
    let from = &np["spec"]["ingress"][0]["from"][0];
    assert_eq!(
        from["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    let egress = np["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 3);
    assert_eq!(ports(&egress[1]), [pair("443", "TCP")]);
    assert_eq!(egress[2]["to"][0]["ipBlock"]["cidr"], "10.0.0.10/32");
    assert_eq!(ports(&egress[2]), [pair("3128", "TCP")]);
}

#[test]
fn aggregated_cluster_roles_extend_view_and_edit() {
    let Some(helm) = helm() else {
        return;
    };
    let r = helm.template(&[]);
    check_rbac_hygiene(&r);
    let label = |role: &Value, name: &str| {
        role["metadata"]["labels"]
            [format!("rbac.authorization.k8s.io/aggregate-to-{name}").as_str()]
        .as_str()
        .map(str::to_string)
    };
    let view = r
        .named("ClusterRole", None, &format!("{CLUSTER_NAME}-view"))
        .expect("the view ClusterRole");
    for to in ["view", "edit", "admin"] {
        assert_eq!(
            label(view, to).as_deref(),
            Some("true"),
            "view aggregates to {to}"
        );
    }
    assert_eq!(
        rules_of(view),
        [rule(
            &[GROUP],
            &[
                "awskeypolicytemplates",
                "awskeys",
                "awskmses",
                "awsreplicakeys",
                "pkcs11tokens"
            ],
            &[],
            &["get", "list", "watch"],
        )]
    );
    // Every kind keyfleet defines is readable through view.
    let kinds: BTreeSet<String> = keyfleet::crds::all()
        .iter()
        .map(|crd| crd.spec.names.plural.clone())
        .collect();
    assert_eq!(rules_of(view)[0].resources, kinds);

    let edit = r
        .named("ClusterRole", None, &format!("{CLUSTER_NAME}-edit"))
        .expect("the edit ClusterRole");
    assert_eq!(label(edit, "view"), None, "view must not gain write verbs");
    for to in ["edit", "admin"] {
        assert_eq!(
            label(edit, to).as_deref(),
            Some("true"),
            "edit aggregates to {to}"
        );
    }
    assert_eq!(
        rules_of(edit),
        [rule(
            &[GROUP],
            &["awskeys", "awsreplicakeys"],
            &[],
            &["create", "delete", "deletecollection", "patch", "update"],
        )]
    );
    // Connections and templates decide where material goes and what every key allows: never
    // writable through the aggregated roles; nor is status, which is keyfleet's.
    for role in [view, edit] {
        for rule in rules_of(role) {
            let writes = rule
                .verbs
                .iter()
                .any(|v| !["get", "list", "watch"].contains(&v.as_str()));
            if writes {
                assert!(!rule.resources.contains("awskmses"), "{rule:?}");
                assert!(
                    !rule.resources.contains("awskeypolicytemplates"),
                    "{rule:?}"
                );
                assert!(!rule.resources.contains("pkcs11tokens"), "{rule:?}");
                assert!(!rule.resources.iter().any(|r| r.contains('/')), "{rule:?}");
            }
        }
    }
    // Nothing binds them: Kubernetes folds them into view/edit/admin.
    for binding in r.of_kind("ClusterRoleBinding") {
        assert_eq!(binding["roleRef"]["name"], CLUSTER_NAME);
    }

    let r = helm.template(&["--set", "rbac.aggregateClusterRoles=false"]);
    assert_eq!(r.of_kind("ClusterRole").len(), 1);
    let r = helm.template(&["--set", "rbac.create=false"]);
    assert!(r.of_kind("ClusterRole").is_empty());
}

#[test]
fn pod_monitor_scrapes_every_replica_and_excludes_the_service_monitor() {
    let Some(helm) = helm() else {
        return;
    };
    assert!(
        helm.template(&[]).of_kind("PodMonitor").is_empty(),
        "off by default"
    );
    let r = helm.template(&[
        "--set",
        "metrics.podMonitor.enabled=true",
        "--set",
        "metrics.podMonitor.labels.release=prometheus",
        "--set",
        "metrics.podMonitor.interval=20s",
    ]);
    let pm = r.one("PodMonitor");
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pm["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        as_map(&pm["spec"]["selector"]["matchLabels"]),
        pod_selector(&r)
    );
    assert_eq!(
        strs(&pm["spec"]["namespaceSelector"]["matchNames"]),
        [NAMESPACE]
    );
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "http");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "20s");
    assert_eq!(endpoint["scrapeTimeout"], "10s");
    // The per-key series' own namespace label wins over the target's.
    assert_eq!(endpoint["honorLabels"], true);
    assert_eq!(
        helm.template_custom(&[]).one("ServiceMonitor")["spec"]["endpoints"][0]["honorLabels"],
        true
    );
    // The container port it names exists.
    assert_eq!(r.container()["ports"][0]["name"], "http");

    // Both monitors would scrape every pod twice.
    helm.assert_refused(
        &[
            "--set",
            "metrics.podMonitor.enabled=true",
            "--set",
            "metrics.serviceMonitor.enabled=true",
        ],
        "enable one",
    );
}

#[test]
fn prometheus_rule_is_optional_and_follows_the_values() {
    let Some(helm) = helm() else {
        return;
    };
    assert!(
        helm.template(&[]).of_kind("PrometheusRule").is_empty(),
        "off by default"
    );

    let alert = |r: &Rendered, name: &str| -> Value {
        r.one("PrometheusRule")["spec"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|rule| rule["alert"] == name)
            .unwrap_or_else(|| panic!("no alert {name}"))
            .clone()
    };
    let r = helm.template(&["--set", "metrics.prometheusRule.enabled=true"]);
    let rule = r.one("PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], NAMESPACE);
    let names: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "KeyfleetKeyNotReady",
            "KeyfleetMaterialExpiringWithoutRenewal",
            "KeyfleetKmsThrottled",
            "KeyfleetReconcileErrors",
            "KeyfleetNoLeader"
        ]
    );
    assert_eq!(alert(&r, "KeyfleetKeyNotReady")["for"], "15m");
    assert_eq!(
        alert(&r, "KeyfleetKeyNotReady")["labels"]["severity"],
        "warning"
    );
    // Prometheus's own template syntax reaches the rule untouched by Helm.
    let summary = alert(&r, "KeyfleetKeyNotReady")["annotations"]["summary"].clone();
    assert_eq!(
        summary,
        "{{ $labels.kind }} {{ $labels.namespace }}/{{ $labels.name }} is not Ready"
    );
    // The renewal window is the operator's (materialRenewBeforeDays, 30 days).
    let expiring = alert(&r, "KeyfleetMaterialExpiringWithoutRenewal")["expr"].clone();
    assert!(
        expiring.as_str().unwrap().contains("< 2592000)"),
        "{expiring:?}"
    );

    let r = helm.template_custom(&[]);
    let rule = r.one("PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let not_ready = alert(&r, "KeyfleetKeyNotReady");
    assert_eq!(not_ready["for"], "30m");
    assert_eq!(not_ready["labels"]["team"], "platform");
    assert_eq!(not_ready["labels"]["severity"], "warning");
    assert!(
        not_ready["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("has not been Ready for 30m")
    );
    let throttled = alert(&r, "KeyfleetKmsThrottled")["expr"].clone();
    assert!(
        throttled.as_str().unwrap().trim_end().ends_with("> 0.2"),
        "{throttled:?}"
    );
    let expiring = alert(&r, "KeyfleetMaterialExpiringWithoutRenewal")["expr"].clone();
    assert!(
        expiring
            .as_str()
            .unwrap()
            .contains(&format!("< {})", 14 * 86400))
    );
    // A severity of the user's wins over the default.
    let r = helm.template(&[
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.prometheusRule.alertLabels.severity=critical",
    ]);
    assert_eq!(
        alert(&r, "KeyfleetNoLeader")["labels"]["severity"],
        "critical"
    );
}

#[test]
fn grafana_dashboard_ships_in_a_sidecar_config_map() {
    let Some(helm) = helm() else {
        return;
    };
    assert!(
        helm.template(&[]).of_kind("ConfigMap").is_empty(),
        "off by default"
    );
    let file = std::fs::read_to_string(chart_dir().join("files/grafana/keyfleet.json")).unwrap();

    let r = helm.template(&["--set", "metrics.grafanaDashboard.enabled=true"]);
    let cm = r.one("ConfigMap");
    assert_eq!(cm["metadata"]["namespace"], NAMESPACE);
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = cm["data"]["keyfleet.json"].as_str().unwrap();
    assert_eq!(
        json.trim_end(),
        file.trim_end(),
        "the dashboard file, verbatim"
    );
    let dashboard: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(dashboard["uid"], "keyfleet-overview");

    let r = helm.template_custom(&[]);
    let cm = r.one("ConfigMap");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "keyfleet");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Security");
}

/// Chart.yaml carries what Artifact Hub and `helm show chart` readers need, and its CRD list
/// and examples match the CRDs keyfleet generates.
#[test]
fn chart_metadata_lists_sources_maintainers_and_the_crds() {
    let text = std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap();
    let chart: Value = serde_saphyr::from_str(&text).unwrap();
    assert!(!strs(&chart["sources"]).is_empty());
    assert!(chart["home"].is_string());
    let maintainers = chart["maintainers"].as_array().unwrap();
    assert!(!maintainers.is_empty() && maintainers.iter().all(|m| m["name"].is_string()));
    let ann = &chart["annotations"];
    assert_eq!(ann["artifacthub.io/license"], "Apache-2.0");
    assert_eq!(ann["artifacthub.io/operator"], "true");

    let listed: Vec<Value> =
        serde_saphyr::from_str(ann["artifacthub.io/crds"].as_str().unwrap()).unwrap();
    let listed: BTreeSet<(String, String, String)> = listed
        .iter()
        .map(|c| {
            assert!(c["displayName"].is_string() && c["description"].is_string());
            (
                c["kind"].as_str().unwrap().to_string(),
                c["version"].as_str().unwrap().to_string(),
                c["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let generated: BTreeSet<(String, String, String)> = keyfleet::crds::all()
        .iter()
        .map(|crd| {
            (
                crd.spec.names.kind.clone(),
                crd.spec.versions[0].name.clone(),
                crd.metadata.name.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, generated);

    // The examples are valid keyfleet objects: `keyfleet validate` finds nothing in them.
    let examples = ann["artifacthub.io/crdsExamples"].as_str().unwrap();
    let parsed: Vec<Value> = serde_saphyr::from_str(examples).unwrap();
    let kinds: BTreeSet<String> = parsed
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        generated
            .iter()
            .map(|(k, _, _)| k.clone())
            .collect::<BTreeSet<_>>(),
        "one example per kind"
    );
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    for example in &parsed {
        writeln!(file, "---\n{}", serde_saphyr::to_string(example).unwrap()).unwrap();
    }
    file.flush().unwrap();
    let mut validate = Command::new(env!("CARGO_BIN_EXE_keyfleet"));
    validate.args(["validate", "-f", file.path().to_str().unwrap()]);
    tools::run_ok(
        &mut validate,
        "keyfleet validate on the Artifact Hub examples",
    );
}

/// NOTES.txt tells the next step: how to check the operator, give it AWS credentials, create a
/// first key and wait for it, and how to turn on metrics.
#[test]
fn install_notes_tell_the_next_step() {
    let Some(helm) = helm() else {
        return;
    };
    let chart = chart_dir();
    let notes = |extra: &[&str]| -> String {
        let mut args = vec![
            "install",
            RELEASE,
            chart.to_str().unwrap(),
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
        ];
        args.extend_from_slice(extra);
        let out = helm.run(&args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text[text.find("NOTES:").expect("NOTES printed")..].to_string()
    };
    let text = notes(&[]);
    for want in [
        format!("kubectl -n {NAMESPACE} rollout status deployment/{FULLNAME}"),
        format!("--namespace {NAMESPACE} --service-account {FULLNAME}"),
        "kubectl -n payments wait --for=condition=Ready awskey/orders".to_string(),
        "metrics.podMonitor.enabled=true".to_string(),
        "docs/troubleshooting.md".to_string(),
    ] {
        assert!(text.contains(&want), "NOTES lack {want:?}:\n{text}");
    }
    let text = notes(&[
        "--set",
        &format!("serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn={IRSA_ROLE}"),
        "--set",
        "metrics.podMonitor.enabled=true",
    ]);
    assert!(text.contains(&format!("IRSA role {IRSA_ROLE}")), "{text}");
    assert!(!text.contains("create-pod-identity-association"), "{text}");
    assert!(!text.contains("Metrics are not scraped"), "{text}");
}
