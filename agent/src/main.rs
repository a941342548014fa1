//! `driftwatch-agent --config FILE`, or the flag-only quick start of
//! DESIGN.md for one model.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use driftwatch_agent::config::{Config, Model, Protocol};
use driftwatch_agent::run::{run, shutdown_signal, Listeners};

#[derive(Parser, Debug)]
#[command(
    name = "driftwatch-agent",
    version,
    about = "Per-node driftwatch agent: proxies a model server, scores a shadow model, ships events to the collector"
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
    /// The champion's gRPC endpoint (KServe v2, http://host:port): gRPC
    /// calls on the traffic listener go there.
    #[arg(long)]
    grpc_upstream: Option<String>,
    /// Collector URL.
    #[arg(long)]
    collector: Option<String>,
    /// Traffic listener (default 0.0.0.0:8081).
    #[arg(long)]
    listen: Option<String>,
    /// Admin listener for /metrics, /healthz, /readyz (default 0.0.0.0:8082).
    #[arg(long)]
    admin_listen: Option<String>,
    #[arg(long, value_enum, default_value = "kserve-v2")]
    protocol: Protocol,
    /// ONNX shadow model.
    #[arg(long)]
    shadow_model: Option<std::path::PathBuf>,
    /// The shadow model's input columns, in order (comma-separated feature names).
    #[arg(long, value_delimiter = ',')]
    shadow_inputs: Option<Vec<String>>,
    /// Export request spans and metrics over OTLP/HTTP to this base URL
    /// (e.g. http://otel-collector:4318; replaces the config's `otlp.endpoint`).
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// Log lines as `text` or `json` (replaces the config's `log.format`);
    /// the level filter is `DRIFTWATCH_LOG` or `log.level`.
    #[arg(long)]
    log_format: Option<driftwatch_telemetry::log::LogFormat>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match (&cli.config, &cli.model, &cli.upstream, &cli.collector) {
        (Some(path), _, _, _) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        (None, Some(model), Some(upstream), Some(collector)) => {
            let mut m = Model::quick(model, upstream, cli.protocol, cli.shadow_model.clone());
            if let (Some(s), Some(inputs)) = (&mut m.shadow, &cli.shadow_inputs) {
                s.inputs = Some(inputs.clone());
            }
            m.grpc_upstream = cli.grpc_upstream.clone();
            let c = Config::from_flags(m, collector, "0.0.0.0:8081");
            if let Err(e) = c.check() {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            c
        }
        _ => {
            eprintln!("error: give --config FILE, or --model, --upstream and --collector");
            return ExitCode::from(2);
        }
    };
    if let Some(l) = cli.listen {
        config.listen = l;
    }
    if let Some(l) = cli.admin_listen {
        config.admin_listen = l;
    }
    if let Some(url) = &cli.otlp_endpoint {
        config.otlp = Some(driftwatch_telemetry::OtlpConfig::with_endpoint(
            config.otlp.take(),
            url,
        ));
    }
    if let Some(format) = cli.log_format {
        config.log.format = format;
    }
    config.otlp = driftwatch_telemetry::OtlpConfig::resolve(config.otlp.take());
    if let Some(problems) = config
        .otlp
        .as_ref()
        .map(|o| o.check())
        .filter(|p| !p.is_empty())
    {
        eprintln!("error: {}", problems.join("; "));
        return ExitCode::from(2);
    }
    if let Err(e) = driftwatch_telemetry::log::init(&config.log) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    // This thread accepts connections and deals them to the traffic
    // threads (`run`); parsing, event building, shipping and the admin
    // endpoints run on a thread of their own at a lower priority, so that
    // none of it stands in a request's way.
    let scheduling = config.background_scheduling;
    let runtimes = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|main| {
            let background = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("driftwatch-background")
                .on_thread_start(move || scheduling.apply())
                .enable_all()
                .build()?;
            Ok((main, background))
        });
    let (runtime, background) = match runtimes {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let listeners = match bind(&config) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(
        config,
        listeners,
        shutdown_signal(),
        background.handle().clone(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// The traffic and admin listeners of the configuration.
fn bind(config: &Config) -> Result<Listeners, String> {
    let listen = |addr: &str| {
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    Ok(Listeners {
        traffic: listen(&config.listen)?,
        admin: listen(&config.admin_listen)?,
    })
}
