//! The `keyfleet` binary: parses the command line and runs the chosen command.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Namespace;
use keyfleet::cli::args::{Cli, Command, LogFormat, RunArgs};
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
        Command::ProbeCluster => probe_cluster().await,
        Command::Validate(args) => return keyfleet::cli::validate::run(&args),
        Command::RenderPolicy(args) => keyfleet::cli::render_policy::run(&args),
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
    settings.endpoints = args.endpoint_policy();
    settings.default_deletion_policy = args.default_deletion_policy;
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
        .with_rate_limits(RateLimits::observed(
            quotas,
            KMS_QUOTA_MAX_WAIT,
            metrics.kms_requests_waiting.clone(),
        ));
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
