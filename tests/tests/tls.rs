//! TLS between the CLI and the relay, with certificates made here: server
//! TLS, mutual TLS, and the errors when the client does not trust the
//! server or shows no certificate. Unprivileged: the relay's only node is an
//! address where nothing listens, so it serves with that node unavailable.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use webb_tests::{
    agent::{binary, free_port},
    relay::RelayProcess,
};

fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn webb(args: &[&str]) -> Output {
    Command::new(binary("webb"))
        .args(args)
        .env("WEBB_CONFIG", "/dev/null")
        .output()
        .expect("running webb")
}

/// A relay whose only node is an address where nothing listens, and the
/// port it serves on.
fn start_relay(args: &[&str]) -> (RelayProcess, String) {
    let dead_peer = format!("127.0.0.1:{}", free_port());
    let mut all = vec!["--peer", dead_peer.as_str()];
    all.extend_from_slice(args);
    let relay = RelayProcess::start(&all);
    let port = relay.addr.rsplit(':').next().unwrap_or_default().to_owned();
    (relay, port)
}

#[test]
fn cli_talks_tls_and_mutual_tls_to_the_relay() {
    let dir = std::env::temp_dir().join(format!("webb-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (server_cert, server_key) = write_pair(&dir, "server");
    let (client_cert, client_key) = write_pair(&dir, "client");
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();

    // Server TLS.
    let (relay, port) = start_relay(&[
        "--tls-cert-file",
        &s(&server_cert),
        "--tls-key-file",
        &s(&server_key),
    ]);
    let server = format!("tls://localhost:{port}");
    let ok = webb(&[
        "status",
        "--server",
        &server,
        "--tls-ca-cert-files",
        &s(&server_cert),
    ]);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(out.contains("Healthcheck (via tls://localhost:"), "{out}");
    assert!(out.contains("Connected Nodes: 0/1"), "{out}");
    // An untrusted certificate is refused, unless verification is off.
    let untrusted = webb(&[
        "status",
        "--server",
        &server,
        "--tls-ca-cert-files",
        &s(&client_cert),
    ]);
    assert_eq!(untrusted.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("cannot connect"),
        "{}",
        String::from_utf8_lossy(&untrusted.stderr)
    );
    let insecure = webb(&["status", "--server", &server, "--tls-allow-insecure"]);
    assert!(
        insecure.status.success(),
        "{}",
        String::from_utf8_lossy(&insecure.stderr)
    );
    // Plaintext to a TLS server fails with a clear error.
    let plain = webb(&[
        "status",
        "--server",
        &format!("localhost:{port}"),
        "--timeout",
        "2s",
    ]);
    assert_eq!(plain.status.code(), Some(1));
    drop(relay);

    // Mutual TLS: the relay requires a client certificate it trusts.
    let (_relay, port) = start_relay(&[
        "--tls-cert-file",
        &s(&server_cert),
        "--tls-key-file",
        &s(&server_key),
        "--tls-client-ca-files",
        &s(&client_cert),
    ]);
    let server = format!("tls://localhost:{port}");
    let ca = s(&server_cert);
    let without = webb(&[
        "list",
        "nodes",
        "--server",
        &server,
        "--tls-ca-cert-files",
        &ca,
    ]);
    assert_eq!(
        without.status.code(),
        Some(1),
        "no client certificate must be refused"
    );
    let with = webb(&[
        "list",
        "nodes",
        "--server",
        &server,
        "--tls-ca-cert-files",
        &ca,
        "--tls-client-cert-file",
        &s(&client_cert),
        "--tls-client-key-file",
        &s(&client_key),
    ]);
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(
        String::from_utf8_lossy(&with.stdout).contains("Unavailable"),
        "{}",
        String::from_utf8_lossy(&with.stdout)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn relay_dials_its_agents_over_mutual_tls() {
    let Some(_g) = webb_tests::privileged() else {
        return;
    };
    let lab =
        webb_tests::lab::Lab::new(&[webb_tests::lab::PodSpec::new("shop", "client", "client")]);
    let dir = lab.dir.clone();
    let (agent_cert, agent_key) = write_pair(&dir, "agent");
    let (relay_cert, relay_key) = write_pair(&dir, "relay-client");
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let agent = webb_tests::agent::AgentProcess::start_tls(
        &lab,
        "lab-node-1",
        &[
            "--tls-cert-file",
            &s(&agent_cert),
            "--tls-key-file",
            &s(&agent_key),
            "--tls-client-ca-files",
            &s(&relay_cert),
        ],
    );
    // Plaintext is refused by the TLS agent.
    let plain = webb(&["status", "--server", &agent.addr, "--timeout", "2s"]);
    assert_eq!(plain.status.code(), Some(1));
    let relay = RelayProcess::start(&[
        "--peer",
        &agent.addr.replace("127.0.0.1", "localhost"),
        "--peer-tls-ca-cert-files",
        &s(&agent_cert),
        "--peer-tls-client-cert-file",
        &s(&relay_cert),
        "--peer-tls-client-key-file",
        &s(&relay_key),
    ]);
    let relay_addr = relay.addr.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = webb(&["status", "--server", &relay_addr]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("Connected Nodes: 1/1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relay never reached the TLS agent: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let nodes = webb(&["list", "nodes", "-o", "wide", "--server", &relay_addr]);
    let text = String::from_utf8_lossy(&nodes.stdout);
    assert!(
        text.contains("lab-node-1") && text.contains("Enabled"),
        "{text}"
    );
}

/// The manifests' YAML documents.
fn deploy_docs(text: &str) -> Vec<serde_yaml_ng::Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| <serde_yaml_ng::Value as serde::Deserialize>::deserialize(d).expect("YAML"))
        .collect()
}

fn deploy_file(name: &str) -> String {
    let path = format!("{}/../deploy/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `bash deploy/certs.sh`, its Secrets written out as the kubelet mounts
/// them: DIR/SECRET/{tls.crt,tls.key,ca.crt}.
fn certs_from_the_script(dir: &Path) {
    let out = Command::new("bash")
        .arg(format!("{}/../deploy/certs.sh", env!("CARGO_MANIFEST_DIR")))
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "certs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = deploy_docs(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(docs.len(), 2);
    for d in docs {
        assert_eq!(d["kind"], "Secret");
        assert_eq!(d["type"], "kubernetes.io/tls");
        assert_eq!(d["metadata"]["namespace"], "kube-system");
        let secret = dir.join(d["metadata"]["name"].as_str().unwrap());
        std::fs::create_dir_all(&secret).unwrap();
        for file in ["tls.crt", "tls.key", "ca.crt"] {
            let mut decode = Command::new("base64")
                .arg("-d")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            decode
                .stdin
                .take()
                .unwrap()
                .write_all(d["data"][file].as_str().unwrap().as_bytes())
                .unwrap();
            let pem = decode.wait_with_output().unwrap().stdout;
            assert!(pem.starts_with(b"-----BEGIN "), "{file}");
            std::fs::write(secret.join(file), pem).unwrap();
        }
    }
}

/// A container's arguments with the TLS prefix, the Secret volume's mount
/// path replaced by where [`certs_from_the_script`] wrote that Secret.
fn tls_args(docs: &[serde_yaml_ng::Value], kind: &str, prefix: &str, dir: &Path) -> Vec<String> {
    let d = docs.iter().find(|d| d["kind"] == kind).unwrap();
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tls")
        .expect("a tls volume mount");
    let secret = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .expect("a tls volume")["secret"]["secretName"]
        .as_str()
        .unwrap()
        .to_owned();
    let from = mount["mountPath"].as_str().unwrap();
    let to = dir.join(secret);
    c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .filter(|a| a.starts_with(prefix))
        .map(|a| a.replace(from, to.to_str().unwrap()))
        .collect()
}

/// The manifests turn on mutual TLS between the relay and the agents, with
/// the certificates of the one documented command: the relay reaches the
/// agent with the manifests' own flags; a client signed by another CA, and
/// one with no certificate, are refused.
#[test]
fn the_manifests_mutual_tls_works_with_the_documented_certificates() {
    let Some(_g) = webb_tests::privileged() else {
        return;
    };
    let lab =
        webb_tests::lab::Lab::new(&[webb_tests::lab::PodSpec::new("shop", "client", "client")]);
    let (ours, theirs) = (lab.dir.join("certs"), lab.dir.join("other-certs"));
    certs_from_the_script(&ours);
    certs_from_the_script(&theirs);
    let agent_args = tls_args(
        &deploy_docs(&deploy_file("agent.yaml")),
        "DaemonSet",
        "--tls",
        &ours,
    );
    let relay_args = tls_args(
        &deploy_docs(&deploy_file("relay.yaml")),
        "Deployment",
        "--peer-tls",
        &ours,
    );
    assert_eq!(agent_args.len(), 3, "{agent_args:?}");
    assert!(
        relay_args.contains(&"--peer-tls".to_owned()),
        "{relay_args:?}"
    );
    let agent = webb_tests::agent::AgentProcess::start_tls(
        &lab,
        "lab-node-1",
        &agent_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let port = agent.addr.rsplit(':').next().unwrap().to_owned();

    // A client with a certificate from another run of the script, and one
    // with none, are refused.
    let cli = |certs: &Path, client_cert: bool| {
        let s = |p: PathBuf| p.to_str().unwrap().to_owned();
        let mut args = vec![
            "status".to_owned(),
            "--server".to_owned(),
            format!("tls://127.0.0.1:{port}"),
            "--tls-server-name".to_owned(),
            "webb-agent.kube-system".to_owned(),
            "--tls-ca-cert-files".to_owned(),
            s(ours.join("webb-agent-tls/ca.crt")),
            "--timeout".to_owned(),
            "10s".to_owned(),
        ];
        if client_cert {
            args.extend([
                "--tls-client-cert-file".to_owned(),
                s(certs.join("webb-relay-client-tls/tls.crt")),
                "--tls-client-key-file".to_owned(),
                s(certs.join("webb-relay-client-tls/tls.key")),
            ]);
        }
        webb(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let good = cli(&ours, true);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert_ne!(
        cli(&theirs, true).status.code(),
        Some(0),
        "another CA's client"
    );
    assert_ne!(
        cli(&ours, false).status.code(),
        Some(0),
        "no client certificate"
    );

    let mut all = vec!["--peer".to_owned(), format!("127.0.0.1:{port}")];
    all.extend(relay_args);
    let relay = RelayProcess::start(&all.iter().map(String::as_str).collect::<Vec<_>>());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = webb(&["status", "--server", &relay.addr]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("Connected Nodes: 1/1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay never reached the agent with the manifests' TLS: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
