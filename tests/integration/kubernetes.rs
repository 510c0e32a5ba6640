//! The Kubernetes manifests of `deploy/kubernetes/`: valid against the Kubernetes 1.31 schemas
//! (`validate.sh`: kubernetes-validate --strict, offline, and the prometheus-operator models
//! for the ServiceMonitor), and holding what running redis-flusher there takes: exit 2 fails a
//! Job at once, a grace period longer than the shutdown, no root, no writes, no inline secret,
//! probes on the endpoints `serve` has, the settings it knows.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// Runs validate.sh once (it makes its virtualenv, target/k8s-venv, the first time).
fn validated() -> &'static str {
    static OUT: OnceLock<String> = OnceLock::new();
    OUT.get_or_init(|| {
        let out = Command::new(dir().join("validate.sh"))
            .output()
            .expect("run deploy/kubernetes/validate.sh");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "validate.sh failed:\n{said}");
        said
    })
}

/// The documents of a manifest, as JSON (read with the validator's own YAML reader).
fn docs(file: &str) -> Vec<Value> {
    validated();
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/k8s-venv/bin/python");
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(dir().join(file))
        .output()
        .expect("read the YAML");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// The container that runs redis-flusher in a pod spec, and the spec.
fn flusher(pod: &Value) -> &Value {
    pod["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "redis-flusher"))
        .expect("a redis-flusher container")
}

/// What every pod of ours must be: non-root, read-only, no capabilities, no inline secret,
/// passwords from the Secret's files, settings from the ConfigMap, memory sized.
fn check_pod(what: &str, pod: &Value) {
    let c = flusher(pod);
    let sc = &c["securityContext"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
    assert_eq!(sc["runAsNonRoot"], true, "{what}");
    assert_eq!(sc["runAsUser"], 65532, "{what}: the image's user");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{what}"
    );
    // Longer than the flusher's own bound on a stop (--shutdown-timeout, 20 s).
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
    assert!(grace > 20, "{what}: terminationGracePeriodSeconds {grace}");
    assert_eq!(
        pod["enableServiceLinks"], false,
        "{what}: REDIS_* from Services"
    );
    assert_eq!(
        c["envFrom"][0]["configMapRef"]["name"], "redis-flusher",
        "{what}: settings from the ConfigMap"
    );
    let env = c["env"].as_array().cloned().unwrap_or_default();
    for e in &env {
        let name = e["name"].as_str().unwrap_or_default();
        assert!(
            !name.ends_with("PASSWORD") && !name.ends_with("_URL"),
            "{what}: {name} inline"
        );
    }
    for var in ["DB_PASSWORD_FILE", "REDIS_PASSWORD_FILE"] {
        let path = env
            .iter()
            .find(|e| e["name"] == var)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("{what}: no {var}"));
        let mount = c["volumeMounts"][0]["mountPath"]
            .as_str()
            .unwrap_or_default();
        assert!(
            path.starts_with(mount),
            "{what}: {var} {path} is not in {mount}"
        );
    }
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "redis-flusher");
    let memory = c["resources"]["limits"]["memory"]
        .as_str()
        .unwrap_or_default();
    assert!(
        !memory.is_empty() && c["resources"]["requests"]["memory"].is_string(),
        "{what}"
    );
}

#[test]
fn the_manifests_are_valid_for_kubernetes_1_31() {
    let said = validated();
    assert!(
        said.contains("every manifest is valid for Kubernetes 1.31.0"),
        "{said}"
    );
}

#[test]
fn the_cronjob_fails_at_once_on_exit_2_and_retries_exit_1() {
    let cron = &docs("cronjob.yaml")[0];
    assert_eq!(cron["kind"], "CronJob");
    let spec = &cron["spec"];
    assert_eq!(spec["concurrencyPolicy"], "Forbid");
    assert!(spec["startingDeadlineSeconds"].as_i64().is_some());
    let job = &spec["jobTemplate"]["spec"];
    assert!(job["backoffLimit"].as_i64().unwrap_or(0) >= 1);
    assert!(job["activeDeadlineSeconds"].as_i64().is_some());
    let rules = job["podFailurePolicy"]["rules"].as_array().expect("rules");
    let on = |code: i64| {
        rules
            .iter()
            .find(|r| {
                r["onExitCodes"]["values"]
                    .as_array()
                    .is_some_and(|v| v.contains(&Value::from(code)))
            })
            .map(|r| r["action"].as_str().unwrap_or_default())
    };
    assert_eq!(
        on(2),
        Some("FailJob"),
        "exit 2: a person must fix something"
    );
    assert_eq!(on(1), Some("Count"), "exit 1: the next try may work");
    let pod = &job["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(flusher(pod)["args"], serde_json::json!(["run"]));
    check_pod("the CronJob", pod);
}

/// One pod per shard, each told the count: an Indexed Job sets JOB_COMPLETION_INDEX.
#[test]
fn the_sharded_cronjob_runs_one_pod_per_shard() {
    let cron = &docs("cronjob-sharded.yaml")[0];
    assert_eq!(cron["kind"], "CronJob");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let job = &cron["spec"]["jobTemplate"]["spec"];
    assert_eq!(job["completionMode"], "Indexed");
    let pod = &job["template"]["spec"];
    let shards = flusher(pod)["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "REDIS_FLUSHER_SHARDS")
        .and_then(|e| e["value"].as_str())
        .and_then(|v| v.parse::<i64>().ok())
        .expect("REDIS_FLUSHER_SHARDS, a number");
    assert_eq!(job["completions"], shards);
    assert_eq!(job["parallelism"], shards);
    assert_eq!(flusher(pod)["args"], serde_json::json!(["run"]));
    check_pod("the sharded CronJob", pod);
}

#[test]
fn the_deployment_probes_what_serve_serves_and_two_replicas_are_safe() {
    let deploy = &docs("deployment.yaml")[0];
    assert_eq!(deploy["kind"], "Deployment");
    assert_eq!(
        deploy["spec"]["replicas"], 2,
        "a hot standby: the lease lets one flush"
    );
    let pod = &deploy["spec"]["template"]["spec"];
    let c = flusher(pod);
    assert_eq!(c["args"], serde_json::json!(["serve"]));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let listen = c["env"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == "REDIS_FLUSHER_LISTEN"))
        .and_then(|e| e["value"].as_str())
        .expect("REDIS_FLUSHER_LISTEN");
    let port = listen.rsplit(':').next().unwrap_or_default();
    assert_eq!(c["ports"][0]["containerPort"].to_string(), port);
    let annotations = &deploy["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], port);
    check_pod("the Deployment", pod);
    let monitor = &docs("servicemonitor.yaml")[0];
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
}

#[test]
fn the_configmap_sets_only_what_redis_flusher_knows() {
    let known = redis_flusher::cli::variables();
    let map = &docs("configmap.yaml")[0];
    for (name, _) in map["data"].as_object().expect("data") {
        assert!(
            known.contains(name) || name == "RUST_LOG",
            "the ConfigMap sets {name}, which redis-flusher does not know"
        );
        assert!(!name.contains("PASSWORD"), "{name} in a ConfigMap");
    }
}
