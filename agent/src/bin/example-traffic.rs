//! `driftwatch-example-traffic`: the demo's traffic generator. It sends
//! loan applications (rows of the example reference data) as KServe v2
//! requests through the agent at a fixed rate, switches to the drifted
//! rows for a while, posts each request's ground-truth label to the
//! collector after a delay, receives the retraining webhook (checking its
//! signature), and prints what the collector sees.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(
    name = "driftwatch-example-traffic",
    version,
    about = "The demo's traffic: loan applications through the agent, drift, delayed labels"
)]
struct Cli {
    /// Where requests go: the agent (or the champion itself).
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    agent: String,
    /// The collector: labels are posted there and its state is shown.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    collector: String,
    #[arg(long, default_value = "credit")]
    model: String,
    /// Rows sent before and after the drift.
    #[arg(long, default_value = "examples/credit/reference.csv")]
    reference: PathBuf,
    /// Rows sent during the drift.
    #[arg(long, default_value = "examples/credit/current.csv")]
    drifted: PathBuf,
    /// Loan amounts of the drifted rows are multiplied by this (2: loans
    /// twice as large for the income, so the champion grows unsure and
    /// defaults rise).
    #[arg(long, default_value_t = 1.0)]
    drift_loan_factor: f64,
    /// Requests per second (one application each).
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// How long traffic follows the reference before the drift starts.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    drift_after: Duration,
    /// How long the drift lasts; then traffic follows the reference again.
    #[arg(long, default_value = "4m", value_parser = humantime::parse_duration)]
    drift_for: Duration,
    /// How long after its request each label is posted.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    label_delay: Duration,
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Print the collector's view this often (0s: never).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    status_every: Duration,
    /// The window length shown in the status.
    #[arg(long, default_value = "1m")]
    window: String,
    /// The window whose realized accuracy the status shows beside the
    /// estimate (default: `--window`): a window longer than the label
    /// delay, so that its labels arrive while it is kept.
    #[arg(long)]
    realized_window: Option<String>,
    /// Receive the retraining webhook here (the collector's action URL).
    #[arg(long)]
    webhook_listen: Option<String>,
    /// Environment variable with the webhook's HMAC secret.
    #[arg(long, default_value = "DEMO_HMAC")]
    hmac_env: String,
    /// Bearer token for the collector's /v1/feedback.
    #[arg(long, env = "DRIFTWATCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// splitmix64: small, seeded, good enough to pick rows and draw labels.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One loan application as the example CSVs hold it.
#[derive(Clone, Debug)]
struct Application {
    age: f64,
    income: f64,
    loan_amount: f64,
    bureau_score: Option<f64>,
    country: String,
    has_card: bool,
    employment: String,
    dependents: f64,
}

fn read_rows(path: &Path) -> Result<Vec<Application>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("{}: no column {name}", path.display()))
    };
    let idx = [
        col("age")?,
        col("income")?,
        col("loan_amount")?,
        col("bureau_score")?,
        col("country")?,
        col("has_card")?,
        col("employment")?,
        col("dependents")?,
    ];
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || format!("{}: line {}: not a loan application", path.display(), n + 2);
        let get = |i: usize| f.get(idx[i]).copied().ok_or_else(bad);
        let num = |i: usize| get(i)?.parse::<f64>().map_err(|_| bad());
        rows.push(Application {
            age: num(0)?,
            income: num(1)?,
            loan_amount: num(2)?,
            bureau_score: get(3)?.parse::<f64>().ok(),
            country: get(4)?.to_string(),
            has_card: get(5)? == "true",
            employment: get(6)?.to_string(),
            dependents: num(7)?,
        });
    }
    if rows.is_empty() {
        return Err(format!("{}: no rows", path.display()));
    }
    Ok(rows)
}

/// The ground truth the example models learnt (examples/credit/train_models.py):
/// heavy loans for the income, low bureau scores, dependents and youth
/// raise the risk of default.
fn default_label(a: &Application, rng: &mut Rng) -> u8 {
    let bureau = a.bureau_score.unwrap_or(620.0);
    let z = -2.2 + 2.5 * a.loan_amount / a.income - 0.012 * (bureau - 620.0) + 0.25 * a.dependents
        - 0.3 * f64::from(u8::from(a.has_card))
        + 0.6 * f64::from(u8::from(a.age < 25.0));
    u8::from(rng.unit() < 1.0 / (1.0 + (-z).exp()))
}

fn kserve_body(a: &Application) -> Vec<u8> {
    let fp = |name: &str, v: Option<f64>| json!({"name": name, "shape": [1], "datatype": "FP64", "data": [v]});
    json!({"inputs": [
        fp("age", Some(a.age)),
        fp("income", Some(a.income)),
        fp("loan_amount", Some(a.loan_amount)),
        fp("bureau_score", a.bureau_score),
        fp("dependents", Some(a.dependents)),
        {"name": "has_card", "shape": [1], "datatype": "BOOL", "data": [a.has_card]},
        {"name": "country", "shape": [1], "datatype": "BYTES", "data": [a.country]},
        {"name": "employment", "shape": [1], "datatype": "BYTES", "data": [a.employment]},
    ]})
    .to_string()
    .into_bytes()
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    labels_posted: AtomicU64,
    labels_failed: AtomicU64,
    webhooks: AtomicU64,
    /// The generator is stopping: a label post it cuts off is no failure.
    stopping: std::sync::atomic::AtomicBool,
}

struct Shared {
    cli: Cli,
    client: reqwest::Client,
    counters: Counters,
    /// Labels waiting for their delay: (due, request id, label).
    pending_labels: Mutex<VecDeque<(Instant, String, u8)>>,
}

impl Shared {
    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.cli.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }
}

fn phase(elapsed: Duration, cli: &Cli) -> &'static str {
    if elapsed < cli.drift_after {
        "normal"
    } else if elapsed < cli.drift_after + cli.drift_for {
        "DRIFT"
    } else {
        "recovered"
    }
}

async fn send_loop(s: Arc<Shared>, reference: Vec<Application>, drifted: Vec<Application>) {
    let mut rng = Rng(s.cli.seed);
    let url = format!(
        "{}/v2/models/{}/infer",
        s.cli.agent.trim_end_matches('/'),
        s.cli.model
    );
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / s.cli.rate.max(0.01)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        tick.tick().await;
        let rows = if phase(start.elapsed(), &s.cli) == "DRIFT" {
            &drifted
        } else {
            &reference
        };
        let app = &rows[rng.below(rows.len())];
        let label = default_label(app, &mut rng);
        let id = format!("demo-{}-{n}", s.cli.seed);
        let body = kserve_body(app);
        let s = s.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let sent = s
                .client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-request-id", &id)
                .body(body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    s.counters.sent.fetch_add(1, Ordering::Relaxed);
                    let due = Instant::now() + s.cli.label_delay;
                    lock(&s.pending_labels).push_back((due, id, label));
                }
                Ok(r) => {
                    s.counters.failed.fetch_add(1, Ordering::Relaxed);
                    if s.counters.failed.load(Ordering::Relaxed) == 1 {
                        eprintln!("request refused: {} from {url}", r.status());
                    }
                }
                Err(e) => {
                    s.counters.failed.fetch_add(1, Ordering::Relaxed);
                    if s.counters.failed.load(Ordering::Relaxed) == 1 {
                        eprintln!("request failed: {e}");
                    }
                }
            }
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Posts the labels whose delay has passed, once a second.
async fn label_loop(s: Arc<Shared>) {
    let url = format!("{}/v1/feedback", s.cli.collector.trim_end_matches('/'));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = Instant::now();
        let due: Vec<(String, u8)> = {
            let mut q = lock(&s.pending_labels);
            let mut out = Vec::new();
            while q.front().is_some_and(|(t, _, _)| *t <= now) {
                if let Some((_, id, label)) = q.pop_front() {
                    out.push((id, label));
                }
            }
            out
        };
        for chunk in due.chunks(500) {
            let labels: Vec<Value> = chunk
                .iter()
                .map(|(id, l)| json!({"model": s.cli.model, "request_id": id, "label": l.to_string()}))
                .collect();
            let r = s
                .auth(s.client.post(&url))
                .header("content-type", "application/json")
                .body(json!({ "labels": labels }).to_string())
                .send()
                .await;
            let n = chunk.len() as u64;
            if s.counters.stopping.load(Ordering::Relaxed) {
                return;
            }
            match r {
                Ok(r) if r.status().is_success() => {
                    s.counters.labels_posted.fetch_add(n, Ordering::Relaxed);
                }
                Ok(r) => {
                    s.counters.labels_failed.fetch_add(n, Ordering::Relaxed);
                    eprintln!("labels refused: {}", r.status());
                }
                Err(e) => {
                    s.counters.labels_failed.fetch_add(n, Ordering::Relaxed);
                    eprintln!("labels not posted: {e}");
                }
            }
        }
    }
}

fn verify(secret: Option<&[u8]>, headers: &hyper::HeaderMap, body: &[u8]) -> &'static str {
    use hmac::{Hmac, Mac};
    let Some(key) = secret else {
        return "not checked (no secret)";
    };
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (ts, sig) = (get("x-driftwatch-timestamp"), get("x-driftwatch-signature"));
    let Some(hex_sig) = sig.strip_prefix("sha256=") else {
        return "INVALID (no signature)";
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return "INVALID (not hex)";
    };
    let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key) else {
        return "INVALID (key)";
    };
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    if mac.verify_slice(&expected).is_ok() {
        "valid"
    } else {
        "INVALID"
    }
}

async fn webhook(
    s: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let headers = req.headers().clone();
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let secret = std::env::var(&s.cli.hmac_env).ok();
    let signature = verify(secret.as_deref().map(str::as_bytes), &headers, &body);
    let n = s.counters.webhooks.fetch_add(1, Ordering::Relaxed) + 1;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let features: Vec<String> = v["drifted_features"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["feature"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    println!(
        ">>> retraining webhook #{n} called on {path}: model {}, rule {}, drifted features [{}], signature {signature}",
        v["model"].as_str().unwrap_or("?"),
        v["rule"].as_str().unwrap_or("?"),
        features.join(", ")
    );
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

async fn get_json(s: &Shared, url: &str) -> Option<Value> {
    let r = s.client.get(url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    serde_json::from_slice(&r.bytes().await.ok()?).ok()
}

fn fmt(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

async fn status(s: &Shared, start: Instant, last: &mut (Instant, u64)) {
    let c = &s.counters;
    let sent = c.sent.load(Ordering::Relaxed);
    let rate = (sent - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
    *last = (Instant::now(), sent);
    let t = start.elapsed().as_secs();
    let base = s.cli.collector.trim_end_matches('/');
    println!(
        "[{:02}:{:02}] traffic {} | sent {rate:.1} req/s ({sent} ok, {} failed) | labels posted {} | webhooks {}",
        t / 60,
        t % 60,
        phase(start.elapsed(), &s.cli),
        c.failed.load(Ordering::Relaxed),
        c.labels_posted.load(Ordering::Relaxed),
        c.webhooks.load(Ordering::Relaxed),
    );
    let url = format!(
        "{base}/v1/models/{}/windows?window={}&limit=1",
        s.cli.model, s.cli.window
    );
    match get_json(s, &url).await {
        Some(v) if v["windows"][0].is_object() => {
            let w = &v["windows"][0];
            let drift = &w["dataset_drift"];
            println!(
                "        window {} from {}: {} events, label coverage {}, drifted features {}/{}",
                s.cli.window,
                w["start"].as_str().unwrap_or("?"),
                w["events"],
                fmt(&w["label_coverage"], 2),
                drift["drifted_columns"],
                w["features"].as_array().map_or(0, Vec::len),
            );
            let features: Vec<String> = w["features"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    let test = f["default_test"].as_str().unwrap_or("");
                    let t = f["tests"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|t| t["test"].as_str() == Some(test));
                    let value = t.map_or(Value::Null, |t| {
                        if t["p_value"].is_number() {
                            t["p_value"].clone()
                        } else {
                            t["statistic"].clone()
                        }
                    });
                    format!(
                        "{}{} {}={}",
                        f["name"].as_str().unwrap_or("?"),
                        if f["drift"] == true { " DRIFT" } else { "" },
                        test,
                        fmt(&value, 3)
                    )
                })
                .collect();
            println!("        {}", features.join(" | "));
            // Realized accuracy from the longer window, when asked for.
            let realized_window = s.cli.realized_window.as_deref().unwrap_or(&s.cli.window);
            let longer = match realized_window == s.cli.window {
                true => None,
                false => get_json(
                    s,
                    &format!(
                        "{base}/v1/models/{}/windows?window={realized_window}&limit=1",
                        s.cli.model
                    ),
                )
                .await
                .map(|v| v["windows"][0].clone()),
            };
            let realized = longer.as_ref().unwrap_or(w);
            let perf = |role: &str| fmt(&realized["performance"][role]["accuracy"], 3);
            let estimated = &w["estimated_performance"]["champion"]["metrics"]["accuracy"];
            let alert = if estimated["alert"] == true {
                " ALERT"
            } else {
                ""
            };
            println!(
                "        accuracy champion {} ({realized_window} window, labels so far; estimated before labels in the {} window {}{alert}) shadow {} | agreement {} | latency p50 champion {} ms",
                perf("champion"),
                s.cli.window,
                fmt(&estimated["value"], 3),
                perf("shadow"),
                fmt(&w["shadow"]["agreement_ratio"], 3),
                fmt(&w["traffic"]["champion"]["latency_ms"]["p50"], 2),
            );
        }
        _ => println!("        collector: no window yet at {url}"),
    }
    if let Some(v) = get_json(s, &format!("{base}/v1/alerts")).await {
        let alerts: Vec<String> = v["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let l = &a["labels"];
                let feature = l["feature"]
                    .as_str()
                    .map_or(String::new(), |f| format!(" {f}"));
                format!(
                    "{}{feature} ({})",
                    l["alertname"].as_str().unwrap_or("?"),
                    a["state"].as_str().unwrap_or("?")
                )
            })
            .collect();
        let shown = if alerts.is_empty() {
            "none".to_string()
        } else {
            alerts.join(", ")
        };
        println!("        alerts: {shown}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (reference, mut drifted) = match (read_rows(&cli.reference), read_rows(&cli.drifted)) {
        (Ok(r), Ok(d)) => (r, d),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if !(cli.drift_loan_factor.is_finite() && cli.drift_loan_factor > 0.0) {
        eprintln!("error: --drift-loan-factor must be a positive number");
        return ExitCode::from(2);
    }
    for a in &mut drifted {
        a.loan_amount *= cli.drift_loan_factor;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let shared = Arc::new(Shared {
        cli,
        client,
        counters: Counters::default(),
        pending_labels: Mutex::new(VecDeque::new()),
    });
    runtime.block_on(async move {
        let s = shared.clone();
        if let Some(addr) = &s.cli.webhook_listen {
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: cannot listen on {addr}: {e}");
                    return ExitCode::from(1);
                }
            };
            if let Ok(a) = listener.local_addr() {
                println!("webhook receiver on http://{a}");
            }
            let s = s.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let s = s.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| webhook(s.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        }
        println!(
            "sending {} req/s to {}: reference rows for {}, drifted rows for {}, then reference again; labels {} later",
            s.cli.rate,
            s.cli.agent,
            humantime::format_duration(s.cli.drift_after),
            humantime::format_duration(s.cli.drift_for),
            humantime::format_duration(s.cli.label_delay),
        );
        let start = Instant::now();
        tokio::spawn(send_loop(s.clone(), reference, drifted));
        tokio::spawn(label_loop(s.clone()));
        let every = s.cli.status_every;
        let status_loop = {
            let s = s.clone();
            async move {
                if every.is_zero() {
                    return std::future::pending::<()>().await;
                }
                let mut last = (Instant::now(), 0);
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    status(&s, start, &mut last).await;
                }
            }
        };
        let stop = async {
            match s.cli.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = status_loop => {}
            _ = stop => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let c = &s.counters;
        c.stopping.store(true, Ordering::Relaxed);
        println!(
            "traffic stopped: {} requests answered, {} failed, {} labels posted ({} waiting, {} refused), {} retraining webhooks",
            c.sent.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.labels_posted.load(Ordering::Relaxed),
            lock(&s.pending_labels).len(),
            c.labels_failed.load(Ordering::Relaxed),
            c.webhooks.load(Ordering::Relaxed),
        );
        ExitCode::SUCCESS
    })
}
