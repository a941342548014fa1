//! `driftwatch`: the collector's command line. Subcommands parse flags and
//! call the library; nothing here computes statistics.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use driftwatch::report::{self, html, load, profile::Profile, Overrides};
use driftwatch::stats;

/// mimalloc instead of glibc's malloc (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "driftwatch",
    version,
    about = "ML model monitoring and drift detection"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compare a current dataset with a reference offline (Parquet, CSV or a profile).
    Report(ReportArgs),
    /// Store a reference profile that `report --reference` (and the collector) can load.
    Profile(ProfileArgs),
    /// Estimate a model's performance per chunk before labels arrive (NannyML's CBPE).
    Performance(report::performance::Args),
    /// Run the collector: ingest events, keep windows, export drift metrics.
    Serve(ServeArgs),
    /// Check alerting rule files, or run their unit tests.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Silence alerts of a running collector (add, list, expire).
    #[command(subcommand)]
    Silence(SilenceCommand),
}

#[derive(clap::Args)]
struct Collector {
    /// The collector's address.
    #[arg(long, env = "DRIFTWATCH_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Bearer token, when the collector requires one.
    #[arg(long, env = "DRIFTWATCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum SilenceCommand {
    /// Silence the alerts matching every MATCHER (name=value, name!=value, name=~regex, name!~regex).
    Add {
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long, e.g. 30m, 2h, 1d.
        #[arg(long, default_value = "2h")]
        duration: String,
        /// Why (required).
        #[arg(long)]
        comment: String,
        /// Who (required).
        #[arg(long, env = "USER")]
        author: String,
        #[command(flatten)]
        collector: Collector,
    },
    /// List silences (active, pending, expired).
    List {
        #[command(flatten)]
        collector: Collector,
    },
    /// End a silence now.
    Expire {
        id: String,
        #[command(flatten)]
        collector: Collector,
    },
}

fn run_silence(command: SilenceCommand) -> anyhow::Result<ExitCode> {
    let (method, path, body, collector) = match command {
        SilenceCommand::Add {
            matchers,
            duration,
            comment,
            author,
            collector,
        } => (
            reqwest::Method::POST,
            "/v1/silences".to_string(),
            Some(serde_json::json!({
                "matchers": matchers, "duration": duration, "comment": comment, "created_by": author,
            })),
            collector,
        ),
        SilenceCommand::List { collector } => (
            reqwest::Method::GET,
            "/v1/silences".to_string(),
            None,
            collector,
        ),
        SilenceCommand::Expire { id, collector } => (
            reqwest::Method::DELETE,
            format!("/v1/silences/{id}"),
            None,
            collector,
        ),
    };
    let url = format!("{}{path}", collector.url.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, reply): (reqwest::StatusCode, serde_json::Value) = runtime.block_on(async {
        let mut req = reqwest::Client::new().request(method, &url);
        if let Some(t) = &collector.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the collector at {url}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::Ok((
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::json!({ "error": text })),
        ))
    })?;
    if !status.is_success() {
        eprintln!("error: {status}: {}", reply["error"].as_str().unwrap_or(""));
        return Ok(ExitCode::from(1));
    }
    if let Some(list) = reply["silences"].as_array() {
        for s in list {
            let matchers: Vec<String> = s["matchers"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .map(|m| {
                            let op = match (m["is_equal"] == true, m["is_regex"] == true) {
                                (true, false) => "=",
                                (false, false) => "!=",
                                (true, true) => "=~",
                                (false, true) => "!~",
                            };
                            format!(
                                "{}{op}{}",
                                m["name"].as_str().unwrap_or(""),
                                m["value"].as_str().unwrap_or("")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            println!(
                "{}  {:8}  until {}  {}  by {}: {}",
                s["id"].as_str().unwrap_or(""),
                s["state"].as_str().unwrap_or(""),
                s["ends_at"].as_str().unwrap_or(""),
                matchers.join(","),
                s["created_by"].as_str().unwrap_or(""),
                s["comment"].as_str().unwrap_or("")
            );
        }
    } else if let Some(id) = reply["id"].as_str() {
        println!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate rule files: every problem with file:line:column; exit 1 if any.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run rule unit tests (input series over time, expected alerts); exit 1 on failure.
    Test {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn run_rules(command: RulesCommand) -> anyhow::Result<ExitCode> {
    use driftwatch::rules;
    match command {
        RulesCommand::Check { files } => match rules::load_files(&files) {
            Ok(set) => {
                let n: usize = set.groups.iter().map(|g| g.rules.len()).sum();
                println!(
                    "{} file(s) OK: {} group(s), {n} rule(s), {} receiver(s)",
                    files.len(),
                    set.groups.len(),
                    set.routing.receivers.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{} problem(s) found", errors.0.len());
                Ok(ExitCode::from(1))
            }
        },
        RulesCommand::Test { files } => {
            let (mut passed, mut failed) = (0, 0);
            for file in &files {
                match rules::unit::run_file(file) {
                    Ok(outcome) => {
                        passed += outcome.passed;
                        failed += outcome.failures.len();
                        for f in outcome.failures {
                            eprintln!("FAILED {f}");
                        }
                    }
                    Err(errors) => {
                        eprintln!("{errors}");
                        failed += errors.0.len();
                    }
                }
            }
            println!("{passed} check(s) passed, {failed} failed");
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

#[derive(Parser)]
struct ServeArgs {
    /// YAML configuration file; the flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model name (flag-only quick start, with --reference).
    #[arg(long)]
    model: Option<String>,
    /// Reference data for --model: .csv, .parquet or a profile .json.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long)]
    listen: Option<String>,
    /// For --model: the reference column holding the model's own outputs
    /// (score, label or value), for prediction drift.
    #[arg(long)]
    prediction_column: Option<String>,
    /// Window length for --model (repeatable), e.g. 5m, 1h, 1d.
    #[arg(long)]
    window: Vec<String>,
    /// How often live windows are re-evaluated, e.g. 15s.
    #[arg(long)]
    eval_interval: Option<String>,
    /// SQLite database file (default driftwatch.db).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Alerting rule files (replace the config's `rules:`).
    #[arg(long, num_args = 1..)]
    rules: Vec<PathBuf>,
    /// Export traces and metrics over OTLP/HTTP to this base URL (e.g.
    /// http://otel-collector:4318; replaces the config's `otlp.endpoint`).
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// Log lines as `text` or `json` (replaces the config's `log.format`);
    /// the level filter is `DRIFTWATCH_LOG` or `log.level`.
    #[arg(long)]
    log_format: Option<driftwatch_telemetry::log::LogFormat>,
    /// Live verdict test for every feature (NAME) or one (FEATURE=NAME), as
    /// `report --test` takes it; repeatable (replaces each model's `drift.tests`).
    #[arg(long)]
    test: Vec<String>,
    /// Live threshold (NAME=VALUE or FEATURE:NAME=VALUE), as `report
    /// --threshold` takes it; repeatable (replaces each model's `drift.thresholds`).
    #[arg(long)]
    threshold: Vec<String>,
    /// Join (or create) a cluster of collectors on these NATS servers,
    /// nats://HOST:4222[,nats://...] (replaces the config's `cluster.urls`;
    /// other settings default).
    #[arg(long)]
    cluster: Option<String>,
    /// This collector's name in the cluster (default: host name and port).
    #[arg(long)]
    node: Option<String>,
    /// How the other collectors reach this one's API, http(s)://HOST:PORT
    /// (replaces `cluster.advertise_url`; in Kubernetes, the pod's IP).
    #[arg(long)]
    advertise_url: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Html,
}

#[derive(Parser)]
struct ReportArgs {
    /// Reference dataset: .csv, .parquet or a profile .json from `driftwatch profile`.
    #[arg(long)]
    reference: PathBuf,
    /// Current dataset: .csv or .parquet.
    #[arg(long)]
    current: PathBuf,
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Write the report here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Compare only these columns (comma separated).
    #[arg(long, value_delimiter = ',')]
    columns: Option<Vec<String>>,
    /// Leave these columns out (comma separated).
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
    /// Treat these columns as categorical.
    #[arg(long, value_delimiter = ',')]
    categorical: Vec<String>,
    /// Treat these columns as numeric.
    #[arg(long, value_delimiter = ',')]
    numeric: Vec<String>,
    /// Verdict test for all columns (NAME) or one column (COLUMN=NAME); repeatable.
    #[arg(long)]
    test: Vec<String>,
    /// Threshold for a test (NAME=VALUE) or for one column's test (COLUMN:NAME=VALUE); repeatable.
    #[arg(long)]
    threshold: Vec<String>,
    /// Also multivariate drift by data reconstruction (NannyML's PCA
    /// method) over the compared columns: the reference in 10 chunks, the
    /// current data as one.
    #[arg(long)]
    multivariate: bool,
    /// Also drift per segment of these columns (comma separated): the
    /// reference's most frequent values each a segment, the rest pooled
    /// as `__other__`; verdicts on Benjamini-Hochberg q-values over every
    /// segment and column.
    #[arg(long, value_delimiter = ',')]
    segment: Vec<String>,
    /// Segments per segment column (the rest pooled as `__other__`).
    #[arg(long, default_value_t = report::segments::DEFAULT_TOP)]
    segment_top: usize,
}

#[derive(Parser)]
struct ProfileArgs {
    /// Reference dataset (.csv or .parquet).
    #[arg(long)]
    reference: PathBuf,
    /// Where to write the profile (.json).
    #[arg(long)]
    out: PathBuf,
    /// Most values kept per numeric column; above it a seeded uniform sample is kept.
    #[arg(long, default_value_t = report::profile::DEFAULT_MAX_SAMPLES)]
    max_samples: usize,
}

fn run_report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let overrides = Overrides::parse(&args.test, &args.threshold).map_err(anyhow::Error::msg)?;
    let (reference, current) =
        rayon::join(|| load::read(&args.reference), || load::read(&args.current));
    let (reference, current) = (reference?, current?);
    let selection = load::Selection {
        columns: args.columns.clone(),
        exclude: args.exclude.iter().cloned().collect(),
        categorical: args.categorical.iter().cloned().collect::<HashSet<_>>(),
        numeric: args.numeric.iter().cloned().collect(),
    };
    let inputs = load::columns(&reference, &current, &selection);
    let bar = if std::io::stderr().is_terminal() && inputs.len() > 1 {
        let bar = indicatif::ProgressBar::new(inputs.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} columns {pos}/{len} [{bar:30}] {elapsed} (eta {eta})",
            )
            .expect("a valid progress template")
            .progress_chars("=> "),
        );
        Some(bar)
    } else {
        None
    };
    let tick = || {
        if let Some(b) = &bar {
            b.inc(1);
        }
    };
    let histograms = matches!(args.format, Format::Html);
    let mut report = report::build(
        reference.rows(),
        current.rows(),
        inputs,
        &overrides,
        histograms,
        &tick,
    );
    if args.multivariate {
        let columns: Vec<(String, stats::ColumnType)> = report
            .columns
            .iter()
            .filter(|c| c.untestable.is_none())
            .filter_map(|c| Some((c.name.clone(), c.column_type?)))
            .collect();
        let value = report::multivariate::report(&reference, &current, &columns)
            .map_err(anyhow::Error::msg)?;
        report.multivariate = Some(value);
    }
    if !args.segment.is_empty() {
        let segments = report::segments::segments(
            &reference,
            &current,
            &args.segment,
            args.segment_top,
            &selection,
            &overrides,
            &report,
        )
        .map_err(anyhow::Error::msg)?;
        report.segments = Some(report::segments::json(&segments));
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    for c in report.columns.iter().filter(|c| c.untestable.is_some()) {
        eprintln!(
            "warning: column {:?} not compared: {}",
            c.name,
            c.untestable.as_deref().unwrap_or("")
        );
    }
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Html => html::render(
            &report,
            &args.reference.display().to_string(),
            &args.current.display().to_string(),
        ),
    };
    match &args.out {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("{}: cannot write the report", path.display()))?,
        None => print!("{text}"),
    }
    if report.columns.iter().all(|c| c.untestable.is_some()) {
        eprintln!("error: no column could be compared");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn run_profile(args: ProfileArgs) -> anyhow::Result<ExitCode> {
    if args.max_samples == 0 {
        bail!("--max-samples must be at least 1");
    }
    let data = load::read(&args.reference)?;
    let (profile, skipped): (Profile, _) = data.profile(args.max_samples);
    for (name, why) in &skipped {
        eprintln!("warning: column {name:?} not profiled: {why}");
    }
    profile
        .write(&args.out)
        .with_context(|| format!("{}: cannot write the profile", args.out.display()))?;
    eprintln!(
        "wrote {} ({} rows, {} columns)",
        args.out.display(),
        profile.rows,
        profile.columns.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    use driftwatch::config::{self, RawConfig, Span};
    let windows = args
        .window
        .iter()
        .map(|w| Span::parse(w).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (mut raw, origin) = match (&args.config, &args.model, &args.reference) {
        (Some(path), None, None) => (RawConfig::from_file(path)?, path.clone()),
        (None, Some(model), Some(reference)) => (
            config::from_flags(
                model.clone(),
                reference.clone(),
                windows.clone(),
                args.prediction_column.clone(),
            ),
            PathBuf::from("flags"),
        ),
        (Some(_), _, _) => bail!("give either --config or --model with --reference, not both"),
        _ => bail!("give --config FILE, or --model NAME with --reference FILE"),
    };
    if let Some(listen) = &args.listen {
        raw.listen = listen.clone();
    }
    if let Some(db) = &args.db {
        raw.db = db.clone();
    }
    if let Some(every) = &args.eval_interval {
        raw.eval_interval = Span::parse(every).map_err(anyhow::Error::msg)?;
    }
    if !args.rules.is_empty() {
        raw.rules = args.rules.clone();
    }
    if let Some(url) = &args.otlp_endpoint {
        raw.otlp = Some(driftwatch_telemetry::OtlpConfig::with_endpoint(
            raw.otlp.take(),
            url,
        ));
    }
    if let Some(format) = args.log_format {
        raw.log.format = format;
    }
    if let Some(urls) = &args.cluster {
        let block = raw
            .cluster
            .take()
            .unwrap_or_else(|| config::cluster::RawCluster::from_urls(urls));
        raw.cluster = Some(config::cluster::RawCluster {
            urls: config::cluster::RawCluster::from_urls(urls).urls,
            ..block
        });
    }
    for (flag, value) in [
        ("--node", &args.node),
        ("--advertise-url", &args.advertise_url),
    ] {
        let Some(value) = value else { continue };
        let Some(c) = raw.cluster.as_mut() else {
            bail!(
                "{flag} is for a collector in a cluster: give --cluster too, or a cluster: block"
            );
        };
        match flag {
            "--node" => c.node = Some(value.clone()),
            _ => c.advertise_url = Some(value.clone()),
        }
    }
    for m in raw.models.iter_mut() {
        if args.config.is_some() && !windows.is_empty() {
            m.windows = windows.clone();
        }
        if !args.test.is_empty() {
            m.drift.tests = args.test.clone();
        }
        if !args.threshold.is_empty() {
            m.drift.thresholds = args.threshold.clone();
        }
    }
    let config = raw.validate(&origin, &|name| std::env::var(name).ok())?;
    driftwatch_telemetry::log::init(&config.log).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let collector = driftwatch::service::Collector::build(&config)?;
        if collector.restored > 0 {
            tracing::info!(
                restored = collector.restored,
                "restored {} events from {}",
                collector.restored,
                config.db.display()
            );
        }
        // Tests and scripts read this line for the address: stdout carries
        // nothing else.
        println!("driftwatch listening on {addr}");
        tracing::info!(listen = %addr, "driftwatch listening on {addr}");
        collector.run(listener, shutdown_signal()).await?;
        tracing::info!("driftwatch stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Report(a) => run_report(a),
        Command::Performance(a) => report::performance::run(a)
            .map(|text| {
                print!("{}", text.unwrap_or_default());
                ExitCode::SUCCESS
            })
            .map_err(anyhow::Error::msg),
        Command::Profile(a) => run_profile(a),
        Command::Serve(a) => run_serve(a),
        Command::Rules(c) => run_rules(c),
        Command::Silence(c) => run_silence(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
