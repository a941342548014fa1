//! The agent's config in deploy/agent.yaml (a ConfigMap of the DaemonSet)
//! is one the agent accepts, and the paths in it are where the image and
//! the mounts put the files.

use std::path::Path;

use driftwatch_agent::config::Config;
use serde::Deserialize;
use serde_yaml_ng::Value;

fn deploy(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

#[test]
fn the_deployed_agent_config_loads_and_its_paths_exist_in_the_image_and_mounts() {
    let text = std::fs::read_to_string(deploy("agent.yaml")).expect("deploy/agent.yaml");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .collect();
    let map = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "driftwatch-agent-config")
        .expect("the agent's ConfigMap");
    let dir = driftwatch_testkit::temp_dir("deploy");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = driftwatch_testkit::file(
        &dir,
        "agent.yaml",
        map["data"]["agent.yaml"].as_str().expect("agent.yaml"),
    );
    let config = Config::load(&file).expect("the deployed config loads");
    config.check().expect("and passes the agent's checks");
    let _ = std::fs::remove_dir_all(&dir);

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
        let kustomization = std::fs::read_to_string(deploy("kustomization.yaml")).expect("k");
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
