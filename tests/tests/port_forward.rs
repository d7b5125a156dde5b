//! `webb -P`: the CLI reaches the relay through a port-forward opened via
//! the Kubernetes API (the double in `webb_tests::kube_api`, which speaks
//! the pod port-forward WebSocket protocol), to the real `webb-relay`.
//! Needs no privileges: the relay runs with one unreachable node.

use std::process::Command;

use serde_json::json;
use webb_tests::{agent::binary, kube_api::KubeApi, relay::RelayProcess};

fn cluster_with_relay(api: &KubeApi, relay: &RelayProcess) {
    api.apply(
        "services",
        json!({"metadata": {"name": "webb-relay", "namespace": "kube-system"},
               "spec": {"selector": {"app.kubernetes.io/name": "webb-relay"},
                        "ports": [{"port": 80, "targetPort": 4245, "protocol": "TCP"}]}}),
    );
    api.apply(
        "pods",
        json!({"metadata": {"name": "webb-relay-7c9d", "namespace": "kube-system",
                            "labels": {"app.kubernetes.io/name": "webb-relay"}},
               "spec": {"containers": [{"name": "relay", "image": "webb-relay"}]},
               "status": {"phase": "Running",
                          "conditions": [{"type": "Ready", "status": "True"}]}}),
    );
    api.forward_pod("kube-system/webb-relay-7c9d", relay.addr.parse().unwrap());
}

fn webb(kubeconfig: &std::path::Path, args: &[&str]) -> std::process::Output {
    let home = tempdir();
    Command::new(binary("webb"))
        .args(args)
        .args(["-P", "--port-forward-port", "0", "--kubeconfig"])
        .arg(kubeconfig)
        .env("HOME", &home)
        .env_remove("KUBECONFIG")
        .env_remove("WEBB_SERVER")
        .output()
        .expect("running webb")
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "webb-pf-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn status_and_list_reach_the_relay_through_a_port_forward() {
    let relay = RelayProcess::start(&["--peer", "127.0.0.1:1"]);
    let api = KubeApi::start();
    if api.is_real() {
        eprintln!("skipped: a real pod port-forward needs a kubelet");
        return;
    }
    cluster_with_relay(&api, &relay);
    let dir = tempdir();
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);

    let out = webb(&kubeconfig, &["status"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Connected Nodes: 0/1"), "{stdout}");
    let out = webb(&kubeconfig, &["list", "nodes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:1"));

    // The same with no flags: the config file's keys, as Hubble's
    // `port-forward`, `port-forward-port` and `kubeconfig`.
    let config = dir.join("config.toml");
    let conf = config.to_str().unwrap();
    let kc = kubeconfig.to_str().unwrap();
    for (k, v) in [
        ("port-forward", "true"),
        ("port-forward-port", "0"),
        ("kubeconfig", kc),
    ] {
        webb_tests::agent::webb_ok(&["--config", conf, "config", "set", k, v]);
    }
    let view = webb_tests::agent::webb_ok(&["--config", conf, "config", "view"]);
    assert!(
        view.contains("port-forward: true\nport-forward-port: \"0\"\n"),
        "{view}"
    );
    let out = Command::new(binary("webb"))
        .args(["--config", conf, "status"])
        .env_remove("KUBECONFIG")
        .env_remove("WEBB_SERVER")
        .output()
        .expect("running webb");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("Connected Nodes: 0/1"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let forwards = api
        .requests()
        .get(&("pods".to_owned(), "portforward".to_owned()))
        .copied()
        .unwrap_or(0);
    assert!(forwards >= 3, "{:?}", api.requests());
}

#[test]
fn port_forward_errors_say_what_to_fix() {
    let relay = RelayProcess::start(&["--peer", "127.0.0.1:1"]);
    let api = KubeApi::start();
    if api.is_real() {
        eprintln!("skipped: a real pod port-forward needs a kubelet");
        return;
    }
    let dir = tempdir();
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let stderr = |out: std::process::Output| {
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // No relay Service.
    let e = stderr(webb(&kubeconfig, &["status"]));
    assert!(
        e.contains("Service webb-relay not found in namespace kube-system"),
        "{e}"
    );
    // The user may not port-forward.
    cluster_with_relay(&api, &relay);
    api.forbid("pods/portforward", true);
    let e = stderr(webb(&kubeconfig, &["status"]));
    assert!(
        e.contains("may not create pods/portforward in namespace kube-system"),
        "{e}"
    );
    // No kubeconfig at all.
    let e = stderr(webb(&dir.join("missing"), &["status"]));
    assert!(e.contains("cannot read --kubeconfig"), "{e}");
    // -P with --server is a usage error.
    let out = webb(&kubeconfig, &["status", "--server", "localhost:4245"]);
    assert_eq!(out.status.code(), Some(1));
}
