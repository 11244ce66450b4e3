//! `keyfleet-playground`: try keyfleet without a cluster. Runs the real controller against the
//! in-memory Kubernetes API (memkube) and the KMS of the standard AWS environment
//! (`AWS_ENDPOINT_URL_KMS` for LocalStack, as `scripts/run` sets it), applies manifests, and
//! prints the resulting statuses. A binary of its own so that the operator's binary (what the
//! image ships) contains no in-memory API server.

mod playground;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use keyfleet::controller::Settings;
use tracing_subscriber::EnvFilter;

/// Try keyfleet without a cluster: the real controller against an embedded in-memory
/// Kubernetes API and the KMS of the standard AWS environment (`AWS_ENDPOINT_URL_KMS` for
/// LocalStack); applies manifests and prints the resulting statuses.
#[derive(Debug, Parser)]
#[command(name = "keyfleet-playground", version, about)]
struct Args {
    /// Manifests to apply: a file or a directory (searched recursively for *.yaml / *.yml).
    #[arg(long, short = 'f', default_value = "examples")]
    manifests: PathBuf,
    /// How long to wait for every AwsKey to settle.
    #[arg(long, default_value_t = 90)]
    timeout_seconds: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let mut settings = Settings::new("playground");
    settings.resync_interval = Duration::from_secs(30);
    let timeout = Duration::from_secs(args.timeout_seconds);
    match playground::run(&args.manifests, timeout, settings).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("keyfleet-playground: not every AwsKey is Ready (see the reasons above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("keyfleet-playground: {e:#}");
            ExitCode::FAILURE
        }
    }
}
