//! The deployment files under deploy/: Kubernetes manifests against the
//! Kubernetes schemas (kubernetes-validate, from PyPI, in the venv), the
//! Prometheus config and rules with promtool, and the DaemonSet's own
//! arguments run for real.

use std::{path::PathBuf, process::Command, time::Duration};

use tracer_tests::{prometheus::http_get, *};

fn deploy(path: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?}:\n{text}");
    text
}

#[test]
fn kubernetes_manifests_match_the_kubernetes_schemas() {
    let validate = venv_python().with_file_name("kubernetes-validate");
    for file in ["kubernetes/daemonset.yaml", "kubernetes/service.yaml"] {
        let text = run_ok(Command::new(&validate).arg("--strict").arg(deploy(file)));
        assert!(text.contains("passed"), "{file}: {text}");
    }
    // The PodMonitor is a Prometheus Operator resource: no schema ships
    // with kubernetes-validate. Check what the operator reads.
    let pod_monitor = std::fs::read_to_string(deploy("kubernetes/podmonitor.yaml")).unwrap();
    for needed in [
        "apiVersion: monitoring.coreos.com/v1",
        "kind: PodMonitor",
        "app.kubernetes.io/name: tracer",
        "- port: metrics",
        "__meta_kubernetes_pod_node_name",
    ] {
        assert!(pod_monitor.contains(needed), "podmonitor.yaml: {needed}");
    }
}

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    for file in ["prometheus/prometheus.yml", "prometheus/single-process.yml"] {
        run_ok(
            Command::new("promtool")
                .args(["check", "config"])
                .arg(deploy(file)),
        );
    }
    let text = run_ok(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(deploy("prometheus/rules.yml")),
    );
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn the_daemonset_arguments_run_and_answer_the_readiness_probe() {
    require_root();
    let manifest = std::fs::read_to_string(deploy("kubernetes/daemonset.yaml")).unwrap();
    let args_line = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("args: "))
        .expect("args in the DaemonSet");
    let args: Vec<String> = serde_json::from_str(args_line).expect("args as a flow list");
    // The same arguments, on a free loopback port instead of 0.0.0.0:9464.
    let port = closed_port();
    let mut args: Vec<String> = args
        .into_iter()
        .map(|a| {
            if a.starts_with("0.0.0.0:") {
                format!("127.0.0.1:{port}")
            } else {
                a
            }
        })
        .collect();
    args.extend(["--duration".into(), "20s".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut tracer = Tracer::start(&refs);
    tracer
        .stderr
        .wait_for("serving metrics", Duration::from_secs(60));
    let (code, body) = http_get(port, "/healthz");
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, metrics) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("tracer_traced_processes"), "{metrics}");
    tracer.interrupt();
    let done = tracer.finish(Duration::from_secs(60));
    assert_eq!(done.code, Some(0), "{}", done.stderr);
}
