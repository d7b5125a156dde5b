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
