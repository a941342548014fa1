//! `driftwatch-agent`: the per-node agent. This is the skeleton of the
//! command line fixed in DESIGN.md; proxying, shadow scoring and shipping
//! arrive with the agent issue, so for now it validates its flags and says
//! plainly that it does not serve traffic yet.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Protocol {
    #[value(name = "kserve-v2")]
    KserveV2,
    Tfserving,
    Generic,
}

#[derive(Parser, Debug)]
#[command(
    name = "driftwatch-agent",
    version,
    about = "Per-node driftwatch agent (skeleton)"
)]
struct Cli {
    /// YAML configuration file (many models); flags override it.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Model name for the flag-only quick start.
    #[arg(long)]
    model: Option<String>,
    /// Champion model server URL.
    #[arg(long)]
    upstream: Option<String>,
    /// Collector URL.
    #[arg(long)]
    collector: Option<String>,
    #[arg(long, default_value = "0.0.0.0:8081")]
    listen: String,
    #[arg(long, value_enum, default_value = "generic")]
    protocol: Protocol,
    /// ONNX shadow model.
    #[arg(long)]
    shadow_model: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.config.is_none()
        && (cli.model.is_none() || cli.upstream.is_none() || cli.collector.is_none())
    {
        eprintln!("error: give --config FILE, or --model, --upstream and --collector");
        return ExitCode::from(2);
    }
    eprintln!("error: the agent does not serve traffic yet (skeleton); see the README's roadmap");
    ExitCode::from(1)
}
