//! The `keyfleet` binary: parses the command line and runs the chosen command.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Namespace;
use keyfleet::cli::{
    Cli, Command, LogFormat, OutputFormat, PlaygroundArgs, RenderPolicyArgs, RunArgs, ValidateArgs,
};
use keyfleet::controller::{Context, Settings};
use keyfleet::http::Readiness;
use keyfleet::kms::{KmsClients, KmsQuotas, RateLimits};
use keyfleet::leader::LeaderElection;
use keyfleet::metrics::Metrics;
use tracing_subscriber::EnvFilter;

/// Longest wait of one KMS request for its rate-limit slot (a signed request must reach AWS
/// within 5 minutes); a longer queue fails the attempt, which is retried.
const KMS_QUOTA_MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds => print_crds(),
        Command::Run(args) => run(args).await,
        Command::Playground(args) => playground(args).await,
        Command::ProbeCluster => probe_cluster().await,
        Command::Validate(args) => return validate(&args),
        Command::RenderPolicy(args) => render_policy(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyfleet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_crds() -> anyhow::Result<()> {
    print!("{}", keyfleet::crds::all_yaml().context("rendering CRDs")?);
    Ok(())
}

/// `keyfleet render-policy`: reads manifests and prints each key's rendered policy and hash.
fn render_policy(args: &RenderPolicyArgs) -> anyhow::Result<()> {
    use keyfleet::policy::preview::{self, Target};
    let target = match (&args.key_arn, &args.account_id) {
        (Some(arn), _) => Target::Key(keyfleet::policy::KeyIdentity::from_arn(arn).with_context(
            || format!("{arn} is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)"),
        )?),
        (None, Some(account_id)) => Target::NewKey {
            account_id: account_id.clone(),
        },
        (None, None) => anyhow::bail!("give --account-id or --key-arn"),
    };
    let (sources, errors) = keyfleet::lint::read_inputs(&args.files);
    if let Some(e) = errors.first() {
        anyhow::bail!("{e}");
    }
    let mut objects = Vec::new();
    for source in &sources {
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&source.text)
            .with_context(|| format!("{}: not YAML", source.name))?;
        objects.extend(docs.into_iter().filter(|value| !value.is_null()));
    }
    let rendered = preview::render(&objects, &target, &args.namespace);
    if rendered.is_empty() {
        anyhow::bail!("no AwsKey or AwsReplicaKey in the input");
    }
    use std::fmt::Write as _;
    let mut text = String::new();
    match args.output {
        OutputFormat::Json => writeln!(text, "{}", serde_json::to_string_pretty(&rendered)?)?,
        OutputFormat::Text => {
            for r in &rendered {
                write!(text, "# {} {}/{}", r.kind, r.namespace, r.name)?;
                if let Some(t) = &r.template {
                    write!(text, " (AwsKeyPolicyTemplate {t})")?;
                }
                match (&r.policy_hash, &r.policy, &r.note) {
                    (Some(hash), Some(policy), _) => {
                        writeln!(text, "\n# policyHash: {hash}")?;
                        writeln!(text, "{}", serde_json::to_string_pretty(policy)?)?;
                    }
                    (_, _, note) => writeln!(text, "\n# {}", note.as_deref().unwrap_or(""))?,
                }
            }
        }
    }
    // A closed pipe (`| head`) is not an error.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `keyfleet validate`: reads the inputs, runs the checks of `keyfleet::lint`, prints the report.
fn validate(args: &ValidateArgs) -> ExitCode {
    let options = keyfleet::lint::Options {
        default_namespace: args.namespace.clone(),
        require_refs: args.require_refs,
        now: jiff::Timestamp::now(),
    };
    let linter = match keyfleet::lint::Linter::new(options) {
        Ok(linter) => linter,
        Err(e) => {
            eprintln!("keyfleet validate: internal error: {e}");
            return ExitCode::from(3);
        }
    };
    let (sources, input_errors) = keyfleet::lint::read_inputs(&args.files);
    let report = linter.run_inputs(&sources, input_errors);
    match args.output {
        OutputFormat::Json => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let written = serde_json::to_writer_pretty(&mut out, &report)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out));
            // A closed pipe (`| head`) is not worth a panic; the exit code still tells.
            if let Err(e) = written
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                eprintln!("keyfleet validate: writing the report: {e}");
            }
        }
        OutputFormat::Text => print_text(&report),
    }
    ExitCode::from(report.exit_code())
}

fn print_text(report: &keyfleet::lint::Report) {
    if !report.input_errors.is_empty() {
        for e in &report.input_errors {
            eprintln!("{e}");
        }
        eprintln!(
            "keyfleet validate: {} unusable input{}; nothing was checked",
            report.input_errors.len(),
            if report.input_errors.len() == 1 {
                ""
            } else {
                "s"
            }
        );
        return;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for finding in &report.findings {
        if writeln!(out, "{finding}").is_err() {
            return;
        }
    }
    let _ = writeln!(out, "keyfleet validate: {}", report.summary);
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format, "info");
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (kubeconfig or in-cluster config)")?;
    let cluster_id = match &args.cluster_id {
        Some(id) => id.clone(),
        None => kube::Api::<Namespace>::all(client.clone())
            .get("kube-system")
            .await
            .context(
                "reading the kube-system namespace uid as cluster id (set --cluster-id to skip)",
            )?
            .metadata
            .uid
            .context("kube-system namespace has no uid; set --cluster-id")?,
    };
    if args.install_crds {
        install_crds(&client).await?;
    }
    let mut settings = Settings::new(cluster_id);
    settings.resync_interval = args.resync_interval();
    settings.drift_interval = args.drift_interval();
    settings.blocked_recheck_interval = args.blocked_recheck_interval();
    settings.concurrency = args.concurrency;
    settings.material_renew_before = args.material_renew_before();
    settings.watch_namespaces = args
        .watch_namespaces
        .iter()
        .filter(|n| !n.is_empty())
        .cloned()
        .collect();
    let metrics = Metrics::shared();
    let readiness = Arc::new(Readiness::default());
    let quotas = KmsQuotas::aws_defaults().with_overrides(&args.kms_quotas);
    let kms = KmsClients::from_env()
        .await
        .with_metrics(metrics.clone())
        .with_rate_limits(RateLimits::new(quotas, KMS_QUOTA_MAX_WAIT));
    let ctx = Arc::new(
        Context::new(client, kms, settings).with_telemetry(metrics.clone(), readiness.clone()),
    );
    tracing::info!(cluster_id = %ctx.settings.cluster_id, "keyfleet starting");

    let shutdown = shutdown_signal().shared();
    let http = tokio::spawn(keyfleet::http::serve(
        args.http_addr,
        metrics,
        readiness,
        shutdown.clone(),
    ));
    let election = args.leader_election.then(|| {
        LeaderElection::new(
            args.leader_election_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "default".into()),
            args.leader_election_lease_name.clone(),
            args.leader_election_identity
                .clone()
                .or_else(|| std::env::var("POD_NAME").ok())
                .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id())),
        )
    });
    keyfleet::leader::run(ctx, election, shutdown).await?;
    match http.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            Err(anyhow::anyhow!(e).context(format!("serving HTTP on {}", args.http_addr)))
        }
        Err(e) => Err(anyhow::anyhow!(e).context("HTTP server task")),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "keyfleet".into())
}

async fn install_crds(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    for crd in keyfleet::crds::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("keyfleet").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying CRD {name}"))?;
        tracing::info!(crd = %name, "CRD applied");
    }
    // Give the API server a moment to serve the new types before the watches start.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    Ok(())
}

async fn playground(args: PlaygroundArgs) -> anyhow::Result<()> {
    init_logging(LogFormat::Text, "warn");
    let mut settings = Settings::new("playground");
    settings.resync_interval = std::time::Duration::from_secs(30);
    let all_ready = keyfleet::playground::run(
        &args.manifests,
        std::time::Duration::from_secs(args.timeout_seconds),
        settings,
    )
    .await?;
    if !all_ready {
        anyhow::bail!("not every AwsKey is Ready (see the reasons above)");
    }
    Ok(())
}

async fn probe_cluster() -> anyhow::Result<()> {
    let probe = async {
        let client = kube::Client::try_default().await?;
        client.apiserver_version().await?;
        anyhow::Ok(())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), probe).await {
        Ok(result) => result.context("no Kubernetes cluster reachable"),
        Err(_) => anyhow::bail!("no Kubernetes cluster reachable: timed out"),
    }
}

/// Completes on SIGTERM or Ctrl-C. In-flight reconciles finish before the controller stops.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
