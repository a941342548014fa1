//! The agent's config in deploy/base/agent.yaml (a ConfigMap of the
//! DaemonSet) is one the agent accepts, and the paths in it are where the
//! image and the mounts put the files; the cluster overlay's config too.

use std::path::Path;

use driftwatch_agent::config::Config;
use serde::Deserialize;
use serde_yaml_ng::Value;

fn deploy(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// The YAML documents of a file under deploy/.
fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy(path)).expect(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .collect()
}

/// The agent's config in the ConfigMap of `docs`, loaded and checked as
/// the agent does at start.
fn agent_config(docs: &[Value]) -> Config {
    let map = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "driftwatch-agent-config")
        .expect("the agent's ConfigMap");
    let dir = driftwatch_testkit::temp_dir("deploy");
    let file = driftwatch_testkit::file(
        &dir,
        "agent.yaml",
        map["data"]["agent.yaml"].as_str().expect("agent.yaml"),
    );
    let config = Config::load(&file).expect("the deployed config loads");
    config.check().expect("and passes the agent's checks");
    let _ = std::fs::remove_dir_all(&dir);
    config
}

#[test]
fn the_cluster_overlay_agents_publish_to_its_nats_servers_with_the_secret_token() {
    let base = agent_config(&documents("base/agent.yaml"));
    let patch = documents("overlays/cluster/agent.yaml");
    let config = agent_config(&patch);
    let urls = config.collector.nats_urls().expect("nats:// URLs");
    let nats = documents("overlays/cluster/nats.yaml");
    let servers = nats
        .iter()
        .find(|d| d["kind"] == "StatefulSet")
        .expect("the NATS StatefulSet");
    let replicas = servers["spec"]["replicas"].as_u64().expect("replicas");
    assert_eq!(urls.len() as u64, replicas, "{urls:?}");
    for (i, url) in urls.iter().enumerate() {
        assert_eq!(
            url,
            &format!("nats://driftwatch-nats-{i}.driftwatch-nats.driftwatch.svc:4222")
        );
    }
    // The token the servers want, from the Secret, in the agent's env.
    assert_eq!(config.collector.token_env.as_deref(), Some("NATS_TOKEN"));
    let daemonset = patch
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("the DaemonSet patch");
    let env = &daemonset["spec"]["template"]["spec"]["containers"][0]["env"];
    let token = env
        .as_sequence()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "NATS_TOKEN")
        .expect("NATS_TOKEN");
    assert_eq!(token["valueFrom"]["secretKeyRef"]["key"], "nats-token");
    // Everything else as in the base: the mounts and the image still fit.
    assert_eq!(format!("{:?}", config.models), format!("{:?}", base.models));
    assert_eq!(
        format!("{:?}", config.collector.spool),
        format!("{:?}", base.collector.spool)
    );
    assert_eq!(config.ort_library, base.ort_library);
}

#[test]
fn the_deployed_agent_config_loads_and_its_paths_exist_in_the_image_and_mounts() {
    let docs = documents("base/agent.yaml");
    let config = agent_config(&docs);

    // The ONNX Runtime library is where the image puts it.
    let library = config.ort_library.clone().expect("ort_library");
    let image = std::fs::read_to_string(deploy("Containerfile.agent")).expect("Containerfile");
    assert!(
        image.contains(&library.display().to_string()),
        "{library:?}"
    );
    // The shadow model is a key of the models ConfigMap, mounted at its directory.
    let daemonset = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("DaemonSet");
    let mounts = &daemonset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
    for m in &config.models {
        let Some(shadow) = &m.shadow else { continue };
        let (parent, name) = (
            shadow.path.parent().expect("dir").display().to_string(),
            shadow
                .path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned(),
        );
        assert!(
            mounts
                .as_sequence()
                .expect("mounts")
                .iter()
                .any(|v| v["name"] == "models" && v["mountPath"] == parent.as_str()),
            "{parent} is not the models mount"
        );
        let kustomization = std::fs::read_to_string(deploy("base/kustomization.yaml")).expect("k");
        assert!(
            kustomization.contains(&format!("{name}=")),
            "{name} is not generated"
        );
    }
    // The spool lives on a writable volume (the root filesystem is read-only).
    let spool = config.collector.spool.clone().expect("spool");
    assert!(mounts
        .as_sequence()
        .expect("mounts")
        .iter()
        .any(|v| v["mountPath"] == spool.path.display().to_string().as_str()));
}
