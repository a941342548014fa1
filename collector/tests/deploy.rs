//! The Kubernetes manifests in `deploy/`, checked offline: every resource
//! against the Kubernetes schemas (kubernetes-validate, installed by
//! scripts/test), the kustomization against the files it names, the
//! configs inside the ConfigMaps by the programs that read them (the
//! collector serves with its config, `rules check` passes the rules), and
//! the cross-references a schema cannot see (Service ports, probes,
//! ServiceMonitor endpoints, grace periods).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::examples::run_cli;
use common::server::{temp_db_dir, Server};
use driftwatch_testkit::nats::Nats;
use serde::Deserialize;
use serde_yaml_ng::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// Every YAML document of a file.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("manifest");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

/// The files the base kustomization lists, under `deploy/base/`.
fn resource_files() -> Vec<String> {
    let k = &documents(&deploy("base/kustomization.yaml"))[0];
    k["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| format!("base/{}", r.as_str().expect("file name")))
        .collect()
}

/// All resources of the kustomization.
fn resources() -> Vec<Value> {
    resource_files()
        .iter()
        .flat_map(|f| documents(&deploy(f)))
        .collect()
}

fn find<'a>(all: &'a [Value], kind: &str, name: &str) -> &'a Value {
    all.iter()
        .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn config_map_file(all: &[Value], name: &str, key: &str) -> String {
    find(all, "ConfigMap", name)["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {name} has no {key}"))
        .to_string()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_manifest_passes_the_kubernetes_schemas() {
    let validator =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/testenv/bin/kubernetes-validate");
    assert!(
        validator.exists(),
        "{} is missing: run ./scripts/test, which installs kubernetes-validate",
        validator.display()
    );
    let mut files: Vec<PathBuf> = resource_files().iter().map(|f| deploy(f)).collect();
    files.push(deploy("secret.example.yaml"));
    files.push(deploy("examples/kserve-inferenceservice.yaml"));
    files.push(deploy("examples/argo-rollouts-analysis.yaml"));
    files.push(deploy("examples/flagger-canary.yaml"));
    let out = Command::new(&validator)
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    // Custom resources have no schema there: only they may be skipped.
    for line in report
        .lines()
        .filter(|l| l.contains("Couldn't find schema"))
    {
        assert!(
            [
                "ServiceMonitor",
                "InferenceService",
                "AnalysisTemplate",
                "Rollout",
                "Canary"
            ]
            .iter()
            .any(|k| line.contains(&format!("kind {k}"))),
            "{line}"
        );
    }
    let passed = report.lines().filter(|l| l.contains(" passed ")).count();
    assert!(passed >= 13, "{report}");
    // The validator does refuse a broken manifest (it is not a no-op).
    let dir = temp_db_dir();
    let broken = dir.join("broken.yaml");
    let text = std::fs::read_to_string(deploy("base/agent.yaml")).expect("agent.yaml");
    std::fs::write(
        &broken,
        text.replace("containerPort: 8081", "containerPortt: 8081"),
    )
    .expect("write");
    let out = Command::new(&validator)
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .arg(&broken)
        .output()
        .expect("run kubernetes-validate");
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(dir);
}

/// The collector's address inside the cluster as the base deploys it:
/// its Service's name, namespace and port.
fn collector_base_url() -> String {
    let all = resources();
    let service = find(&all, "Service", "driftwatch-collector");
    let namespace = find(&all, "Namespace", "driftwatch")["metadata"]["name"]
        .as_str()
        .expect("namespace")
        .to_string();
    let port = service["spec"]["ports"][0]["port"].as_i64().expect("port");
    format!("http://driftwatch-collector.{namespace}.svc:{port}/v1/experiments/")
}

#[test]
fn the_experiment_gates_ask_the_collector_what_its_api_answers() {
    let base = collector_base_url();
    let argo = documents(&deploy("examples/argo-rollouts-analysis.yaml"));
    let template = argo
        .iter()
        .find(|d| d["kind"] == "AnalysisTemplate")
        .expect("an AnalysisTemplate");
    let metric = &template["spec"]["metrics"][0];
    let web = &metric["provider"]["web"];
    let url = web["url"].as_str().expect("url");
    // Argo takes a non-2xx answer as an error: the template asks for 200 always.
    assert!(
        url.starts_with(&base) && url.ends_with("?gate=false"),
        "{url} is not {base}NAME?gate=false"
    );
    assert_eq!(web["jsonPath"], "{$.decision}");
    assert_eq!(metric["successCondition"], "result == \"promote\"");
    let failure = metric["failureCondition"]
        .as_str()
        .expect("failureCondition");
    assert!(failure.contains("rollback") && failure.contains("invalid"));
    // The Rollout's analysis step names the template and fills its argument.
    let rollout = argo
        .iter()
        .find(|d| d["kind"] == "Rollout")
        .expect("a Rollout");
    let steps = rollout["spec"]["strategy"]["canary"]["steps"]
        .as_sequence()
        .expect("steps");
    let analysis = steps
        .iter()
        .find_map(|s| s.get("analysis"))
        .expect("an analysis step");
    assert_eq!(
        analysis["templates"][0]["templateName"],
        template["metadata"]["name"]
    );
    assert_eq!(
        analysis["args"][0]["name"],
        template["spec"]["args"][0]["name"]
    );
    let canary = &documents(&deploy("examples/flagger-canary.yaml"))[0];
    let hooks = canary["spec"]["analysis"]["webhooks"]
        .as_sequence()
        .expect("webhooks");
    let gate = |kind: &str| {
        hooks
            .iter()
            .find(|h| h["type"] == kind)
            .and_then(|h| h["url"].as_str())
            .unwrap_or_else(|| panic!("a {kind} webhook"))
            .to_string()
    };
    for (kind, query) in [
        ("confirm-promotion", "?gate=promote"),
        ("rollback", "?gate=rollback"),
    ] {
        let url = gate(kind);
        assert!(
            url.starts_with(&base) && url.ends_with(query),
            "{kind}: {url}"
        );
    }
}

#[test]
fn the_kustomization_names_every_manifest_and_generated_file() {
    // `kubectl apply -k deploy/` applies the base.
    let top = &documents(&deploy("kustomization.yaml"))[0];
    assert_eq!(strs(&top["resources"]), ["base"]);
    let listed = resource_files();
    let k = &documents(&deploy("base/kustomization.yaml"))[0];
    for entry in std::fs::read_dir(deploy("base")).expect("deploy/base/") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(
                listed.contains(&format!("base/{name}")),
                "{name} is not in base/kustomization.yaml"
            );
        }
    }
    for g in k["configMapGenerator"].as_sequence().expect("generators") {
        for f in strs(&g["files"]) {
            let path = f.split_once('=').map_or(f.as_str(), |(_, p)| p);
            assert!(
                deploy("base").join(path).exists(),
                "generated from {path}, which is missing"
            );
        }
    }
}

/// The rule files of the `driftwatch-rules` ConfigMap, written to
/// `dir/rules/`, where the collector's config is pointed.
fn write_rules(all: &[Value], dir: &Path) -> PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    for key in ["receivers.yaml", "drift.yaml"] {
        std::fs::write(
            rules.join(key),
            config_map_file(all, "driftwatch-rules", key),
        )
        .expect("rule file");
    }
    rules
}

#[test]
fn the_collector_serves_with_the_deployed_config_and_rules() {
    let all = resources();
    let dir = temp_db_dir();
    // The rules pass `rules check`, as the collector would load them.
    let rules = write_rules(&all, &dir);
    let files: Vec<String> = ["receivers.yaml", "drift.yaml"]
        .iter()
        .map(|k| rules.join(k).display().to_string())
        .collect();
    let mut args = vec!["rules", "check"];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = run_cli(&args);
    assert_eq!(code, 0, "{out}{err}");
    // The collector's config, with the mounted paths pointed at the files
    // the kustomization mounts there, starts a collector that serves.
    let config = config_map_file(&all, "driftwatch-collector-config", "collector.yaml")
        .replace("/etc/driftwatch/rules/", &format!("{}/", rules.display()))
        .replace(
            "/etc/driftwatch/reference/credit.csv",
            &deploy("base/reference/credit.csv").display().to_string(),
        );
    let file = driftwatch_testkit::file(&dir, "collector.yaml", &config);
    let server = Server::start(
        &["--config", &file.display().to_string()],
        &[
            ("DRIFTWATCH_TOKENS", "t0ken"),
            ("SMTP_PASSWORD", "x"),
            ("SLACK_WEBHOOK_URL", "http://127.0.0.1:9/hook"),
            ("RETRAIN_HMAC", "k"),
        ],
    );
    let (status, body) = server.request("GET", "/v1/models", &[], b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"credit\""), "{body}");
    // Events need the Secret's token, as the agents send it.
    let (status, _) = server.request("POST", "/v1/events", &[], br#"{"events": []}"#);
    assert_eq!(status, 401);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// Named ports of the first container of a workload.
fn container_ports(workload: &Value) -> Vec<(String, i64)> {
    workload["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("port name").to_string(),
                p["containerPort"].as_i64().expect("port"),
            )
        })
        .collect()
}

#[test]
fn services_probes_monitors_and_policies_point_at_real_ports() {
    let all = resources();
    let workloads = [
        (
            find(&all, "StatefulSet", "driftwatch-collector"),
            find(&all, "Service", "driftwatch-collector"),
        ),
        (
            find(&all, "DaemonSet", "driftwatch-agent"),
            find(&all, "Service", "driftwatch-agent"),
        ),
    ];
    let mut service_ports = Vec::new();
    for (w, svc) in workloads {
        let ports = container_ports(w);
        let labels = &w["spec"]["template"]["metadata"]["labels"];
        for (k, v) in svc["spec"]["selector"].as_mapping().expect("selector") {
            assert_eq!(&labels[k.as_str().expect("key")], v, "selector {k:?}");
        }
        for p in svc["spec"]["ports"].as_sequence().expect("service ports") {
            let target = p["targetPort"].as_str().expect("named targetPort");
            assert!(
                ports.iter().any(|(n, _)| n == target),
                "{target} is no container port"
            );
            service_ports.push(p["name"].as_str().expect("name").to_string());
        }
        let c = &w["spec"]["template"]["spec"]["containers"][0];
        for probe in ["readinessProbe", "livenessProbe"] {
            let port = c[probe]["httpGet"]["port"].as_str().expect("probe port");
            assert!(ports.iter().any(|(n, _)| n == port), "{probe} on {port}");
            let path = c[probe]["httpGet"]["path"].as_str().expect("path");
            assert!(path == "/healthz" || path == "/readyz", "{path}");
        }
        // Restricted pods: non-root, read-only root, no privilege.
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(
            w["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
            true
        );
    }
    let monitor = find(&all, "ServiceMonitor", "driftwatch");
    for e in monitor["spec"]["endpoints"]
        .as_sequence()
        .expect("endpoints")
    {
        let port = e["port"].as_str().expect("port");
        assert!(service_ports.iter().any(|p| p == port), "{port}");
        assert_eq!(e["path"], "/metrics");
    }
    let agent = find(&all, "Service", "driftwatch-agent");
    assert_eq!(agent["spec"]["internalTrafficPolicy"], "Local");
    let ds = find(&all, "DaemonSet", "driftwatch-agent");
    let env = &ds["spec"]["template"]["spec"]["containers"][0]["env"];
    let node = env
        .as_sequence()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    // SIGTERM: the agent's shutdown deadline ends before the kubelet kills it.
    let agent_config: Value = serde_yaml_ng::from_str(&config_map_file(
        &all,
        "driftwatch-agent-config",
        "agent.yaml",
    ))
    .expect("agent config");
    let deadline = humantime::parse_duration(
        agent_config["shutdown_deadline"]
            .as_str()
            .expect("shutdown_deadline"),
    )
    .expect("duration");
    let grace = ds["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace period");
    assert!(grace > deadline.as_secs(), "{grace}s ≤ {deadline:?}");
    // The network policies admit the ports the Services serve.
    for policy in all.iter().filter(|r| r["kind"] == "NetworkPolicy") {
        for rule in policy["spec"]["ingress"].as_sequence().expect("ingress") {
            for p in rule["ports"].as_sequence().expect("ports") {
                let port = p["port"].as_i64().expect("port");
                assert!([8080, 8081, 8082].contains(&port), "{port}");
            }
        }
    }
}

/// Strategic merge as kustomize applies these patches: maps merge key by
/// key, lists of named maps (containers, env, ports, volumes) merge by
/// name, anything else (args, scalars) is replaced.
fn merge(base: &mut Value, patch: &Value) {
    let named = |l: &[Value]| l.iter().all(|x| x["name"].is_string());
    match (base, patch) {
        (Value::Mapping(b), Value::Mapping(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(old) => merge(old, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Sequence(b), Value::Sequence(p)) if named(b) && named(p) => {
            for v in p {
                match b.iter_mut().find(|x| x["name"] == v["name"]) {
                    Some(old) => merge(old, v),
                    None => b.push(v.clone()),
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// The resources of `deploy/overlays/cluster`: the base, the overlay's
/// own files, its patches applied.
fn cluster_resources() -> Vec<Value> {
    let dir = "overlays/cluster";
    let k = &documents(&deploy(&format!("{dir}/kustomization.yaml")))[0];
    let mut all = Vec::new();
    for r in strs(&k["resources"]) {
        match r.as_str() {
            "../../base" => all.extend(resources()),
            file => all.extend(documents(&deploy(&format!("{dir}/{file}")))),
        }
    }
    for p in k["patches"].as_sequence().expect("patches") {
        let file = p["path"].as_str().expect("patch path");
        for patch in documents(&deploy(&format!("{dir}/{file}"))) {
            let name = patch["metadata"]["name"].as_str().expect("name");
            let kind = patch["kind"].as_str().expect("kind");
            let target = all
                .iter_mut()
                .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("{file} patches {kind} {name}, which is not there"));
            merge(target, &patch);
        }
    }
    all
}

/// The item of a YAML list whose `name` is `name`.
fn named<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_sequence()?.iter().find(|x| x["name"] == name)
}

/// The container named `name` of a workload.
fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    named(&workload["spec"]["template"]["spec"]["containers"], name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// An environment variable of a container (its `value` or `valueFrom`).
fn env<'a>(c: &'a Value, name: &str) -> &'a Value {
    named(&c["env"], name).unwrap_or_else(|| panic!("no env {name}"))
}

/// The mount paths of a container.
fn mount_paths(c: &Value) -> Vec<String> {
    c["volumeMounts"]
        .as_sequence()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str().map(String::from))
        .collect()
}

#[test]
fn the_cluster_overlay_validates_and_its_collectors_form_a_cluster() {
    let all = cluster_resources();
    let dir = temp_db_dir();
    // Every resource against the Kubernetes schemas.
    let built = dir.join("built.yaml");
    let text: Vec<String> = all
        .iter()
        .map(|r| serde_yaml_ng::to_string(r).expect("YAML"))
        .collect();
    std::fs::write(&built, text.join("---\n")).expect("write");
    let validator = deploy("../.cache/testenv/bin/kubernetes-validate");
    let out = Command::new(&validator)
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .arg(&built)
        .output()
        .expect("run kubernetes-validate (./scripts/test installs it)");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(
        report.lines().filter(|l| l.contains(" passed ")).count() >= 16,
        "{report}"
    );

    // The NATS servers: their config is one nats-server 2.15.1 accepts,
    // and its ports, routes, store and pid file are where the manifests
    // say.
    let servers = find(&all, "StatefulSet", "driftwatch-nats");
    let replicas = servers["spec"]["replicas"].as_u64().expect("replicas");
    assert_eq!(replicas, 3);
    let conf = config_map_file(&all, "driftwatch-nats-config", "nats.conf");
    let conf_file = driftwatch_testkit::file(&dir, "nats.conf", &conf);
    let out = Command::new(deploy("../.cache/testenv/bin/nats-server"))
        .args(["-t", "-c"])
        .arg(&conf_file)
        .envs([("POD_NAME", "driftwatch-nats-0"), ("NATS_TOKEN", "t")])
        .output()
        .expect("nats-server -t");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ports = container_ports(servers);
    for (name, port, line) in [
        ("client", 4222, "port: 4222"),
        ("cluster", 6222, "port: 6222"),
        ("monitor", 8222, "http_port: 8222"),
    ] {
        assert!(
            ports.contains(&(name.to_string(), port)),
            "{name} {ports:?}"
        );
        assert!(conf.contains(line), "{line}");
    }
    for i in 0..replicas {
        let route = format!("nats://driftwatch-nats-{i}.driftwatch-nats.driftwatch.svc:6222");
        assert!(conf.contains(&route), "{route}");
    }
    let service = find(&all, "Service", "driftwatch-nats");
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(servers["spec"]["serviceName"], "driftwatch-nats");
    let nats = container(servers, "nats");
    let mounts = mount_paths(nats);
    assert!(conf.contains("store_dir: /data/jetstream") && mounts.contains(&"/data".into()));
    assert!(conf.contains("pid_file: /var/run/nats/nats.pid"));
    assert!(mounts.contains(&"/var/run/nats".into()));
    assert_eq!(nats["securityContext"]["readOnlyRootFilesystem"], true);
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(nats[probe]["httpGet"]["port"], "monitor", "{probe}");
    }
    let secret = std::fs::read_to_string(deploy("secret.example.yaml")).expect("secret");
    assert!(secret.contains("nats-token:"));
    assert_eq!(
        env(nats, "NATS_TOKEN")["valueFrom"]["secretKeyRef"]["key"],
        "nats-token"
    );

    // Three collectors, each named after its pod and reached at its IP,
    // with the servers' token.
    let collectors = find(&all, "StatefulSet", "driftwatch-collector");
    assert_eq!(collectors["spec"]["replicas"], 3);
    let c = container(collectors, "collector");
    let args = strs(&c["args"]).join(" ");
    assert!(
        args.contains("--node $(POD_NAME) --advertise-url http://$(POD_IP):8080"),
        "{args}"
    );
    assert_eq!(
        env(c, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env(c, "POD_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    assert_eq!(
        env(c, "NATS_TOKEN")["valueFrom"]["secretKeyRef"]["key"],
        "nats-token"
    );
    let config = config_map_file(&all, "driftwatch-collector-config", "collector.yaml");
    let parsed: Value = serde_yaml_ng::from_str(&config).expect("config");
    let urls = strs(&parsed["cluster"]["urls"]);
    assert_eq!(
        urls.len() as u64,
        replicas,
        "one URL per server: three replicas"
    );
    for (i, url) in urls.iter().enumerate() {
        assert_eq!(
            url,
            &format!("nats://driftwatch-nats-{i}.driftwatch-nats.driftwatch.svc:4222")
        );
    }
    // Clients of the namespace reach the servers.
    let policy = find(&all, "NetworkPolicy", "driftwatch-nats");
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], 4222);

    // The collectors' config with the base's rules, pointed at a real
    // NATS server that wants the token, forms a cluster: two of them
    // share the model, and the rules run.
    let token = "n4ts-t0ken";
    let nats = Nats::start_with(&dir, &["--auth", token]);
    let rules = write_rules(&all, &dir);
    let mut local: Value = serde_yaml_ng::from_str(
        &config
            .replace("/etc/driftwatch/rules/", &format!("{}/", rules.display()))
            .replace(
                "/etc/driftwatch/reference/credit.csv",
                &deploy("base/reference/credit.csv").display().to_string(),
            ),
    )
    .expect("config");
    local["cluster"]["urls"] = vec![Value::from(nats.url.clone())].into();
    local["cluster"]["lease_ttl"] = "3s".into();
    let file = driftwatch_testkit::file(
        &dir,
        "collector.yaml",
        serde_yaml_ng::to_string(&local).expect("YAML"),
    );
    let env = [
        ("DRIFTWATCH_TOKENS", "t0ken"),
        ("NATS_TOKEN", token),
        ("SMTP_PASSWORD", "x"),
        ("SLACK_WEBHOOK_URL", "http://127.0.0.1:9/hook"),
        ("RETRAIN_HMAC", "k"),
    ];
    let start = |node: &str| {
        let args = ["--config", &file.display().to_string(), "--node", node];
        Server::start_on(&args, &env, &dir.join(format!("{node}.db")))
    };
    let nodes = [
        start("driftwatch-collector-0"),
        start("driftwatch-collector-1"),
    ];
    for s in &nodes {
        s.wait_for(Duration::from_secs(30), "two members and an owner", |s| {
            let (_, body) = s.request("GET", "/v1/cluster", &[], b"");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            v["members"].as_array().is_some_and(|m| m.len() == 2)
                && v["owners"]["credit"].is_string()
        });
        let (status, body) = s.request("GET", "/v1/rules", &[], b"");
        assert!(status == 200 && body.contains("\"alert\""), "{body}");
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(dir);
}
