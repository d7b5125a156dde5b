//! End-to-end tests of `webb policy what-if`: real connections between lab
//! pods, a real agent that replays its history through its policy compiler
//! and its datapath's decision (webb.analysis.Analysis/WhatIf), the real
//! relay, and the real CLI. The answers are held to what the agent then
//! does when the candidate is applied.

use std::time::Duration;

use webb_proto::flow::{FlowFilter, Verdict, WebbEmitReason};
use webb_tests::{
    agent::{AgentProcess, binary, webb_ok},
    block_on, client,
    lab::{Lab, PodSpec},
    privileged,
    relay::RelayProcess,
    traffic::{listen_tcp, tcp_send},
};

fn lab() -> Lab {
    Lab::new(&[
        PodSpec::new("shop", "frontend", "frontend"),
        PodSpec::new("shop", "cart", "cart"),
        PodSpec::new("shop", "db", "db"),
    ])
}

/// db-allow-cart: only pods of these apps may reach db, on 5432/TCP.
fn db_allow(apps: &[&str]) -> String {
    let from: String = apps
        .iter()
        .map(|a| format!("        - podSelector: {{matchLabels: {{app: {a}}}}}\n"))
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: db-allow-cart, namespace: shop}}
spec:
  podSelector: {{matchLabels: {{app: db}}}}
  policyTypes: [Ingress]
  ingress:
    - from:
{from}      ports:
        - {{protocol: TCP, port: 5432}}
"
    )
}

fn what_if(server: &str, file: &std::path::Path) -> serde_json::Value {
    let out = webb_ok(&[
        "policy",
        "what-if",
        file.to_str().expect("path"),
        "--server",
        server,
        "--protocol",
        "tcp",
        "-o",
        "json",
    ]);
    serde_json::from_str(out.trim()).expect("one JSON object")
}

fn pairs(v: &serde_json::Value) -> Vec<(String, String, String, String, u64, Vec<String>)> {
    let mut out: Vec<_> = v["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .map(|p| {
            (
                p["change"].as_str().unwrap_or_default().to_owned(),
                p["source"].as_str().unwrap_or_default().to_owned(),
                p["destination"].as_str().unwrap_or_default().to_owned(),
                p["port"].as_str().unwrap_or_default().to_owned(),
                p["connections"].as_u64().unwrap_or_default(),
                p["policies"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Waits until the agent holds the first packets of `n` connections to
/// db:5432 or cart:8080, counted at each point that reports them.
fn wait_for_connection_starts(agent: &AgentProcess, n: usize) {
    let f = FlowFilter {
        destination_port: vec!["5432".into(), "8080".into()],
        ..Default::default()
    };
    block_on(client::wait_for(
        &agent.addr,
        vec![f],
        Duration::from_secs(10),
        |fl| {
            fl.iter()
                .filter(|f| f.webb_emit_reason == WebbEmitReason::WebbEmitNew as i32)
                .count()
                >= n
        },
    ));
}

#[test]
fn a_candidate_policy_lists_exactly_the_connections_it_would_drop_then_does() {
    let Some(_g) = privileged() else { return };
    let lab = lab();
    // No policy in force yet: an empty file, so the agent enforces what it
    // is given later.
    let policy = lab.write_policy("");
    let agent = AgentProcess::start(
        &lab,
        "lab-node-1",
        &["--policy", policy.to_str().expect("path")],
    );
    let relay = RelayProcess::start(&["--peer", agent.addr.as_str()]);
    let (fe, cart, db) = (lab.pod("frontend"), lab.pod("cart"), lab.pod("db"));
    let _db = listen_tcp(db, 5432);
    let _cart = listen_tcp(cart, 8080);
    let db_ip = db.ip.to_string();
    assert!(tcp_send(fe, &db_ip, 5432, 3));
    assert!(tcp_send(cart, &db_ip, 5432, 3));
    assert!(tcp_send(fe, &cart.ip.to_string(), 8080, 3));
    // Three TCP connections, each reported leaving its initiator and
    // entering its responder.
    wait_for_connection_starts(&agent, 6);

    let candidate = lab.dir.join("candidate.yaml");
    std::fs::write(&candidate, db_allow(&["cart"])).expect("candidate");
    for server in [&agent.addr, &relay.addr] {
        let v = what_if(server, &candidate);
        assert_eq!(
            pairs(&v),
            [(
                "WOULD_DROP".to_owned(),
                "shop/frontend".to_owned(),
                "shop/db".to_owned(),
                "5432/TCP".to_owned(),
                1,
                vec!["shop/db-allow-cart".to_owned()],
            )],
            "only frontend's connection to db, entering db: {v}"
        );
        // Three TCP connections, each decided leaving its initiator and
        // entering its responder.
        assert_eq!(v["connections_decided"], 6, "{v}");
    }
    // The table names it too.
    let table = webb_ok(&[
        "policy",
        "what-if",
        candidate.to_str().expect("path"),
        "--server",
        &relay.addr,
    ]);
    assert!(
        table.contains("WOULD DROP")
            && table.contains("shop/frontend")
            && table.contains("shop/db-allow-cart"),
        "{table}"
    );

    // The dashboard marks the same: the flows of frontend -> db in the
    // table, the edge on the graph.
    if webb_tests::lab::which("tmux").is_some() {
        let cmd = format!(
            "TERM=xterm-256color {} ui --server {} --what-if {} --log-file {}; sleep 30",
            binary("webb").display(),
            relay.addr,
            candidate.display(),
            lab.dir.join("ui.log").display(),
        );
        let t = webb_tests::tmux::Tmux::start(&cmd, 160, 40);
        let s = t.wait_for("the what-if answer", |s| {
            s.contains("1 connections would drop, 0 allow")
        });
        assert!(s.contains("✂ WOULD DROP"), "{s}");
        t.keys(&["F2"]);
        t.wait_for("the cut edge", |s| s.contains("what-if: 1 cut"));
        t.keys(&["q"]);
    }

    // Applied, the candidate does what it said: frontend is dropped
    // entering db, cart is not.
    std::fs::write(&policy, db_allow(&["cart"])).expect("policy in force");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!tcp_send(fe, &db_ip, 5432, 1), "frontend is denied");
    assert!(tcp_send(cart, &db_ip, 5432, 3), "cart still reaches db");
    block_on(async {
        let f = FlowFilter {
            destination_port: vec!["5432".into()],
            verdict: vec![Verdict::Dropped as i32],
            ..Default::default()
        };
        client::wait_for(&agent.addr, vec![f], Duration::from_secs(5), |fl| {
            !fl.is_empty()
        })
        .await;
    });

    // Now in force, the same policy changes nothing; its widened version
    // would let frontend's attempts through, and replaces it (same name).
    let v = what_if(&relay.addr, &candidate);
    assert!(
        !pairs(&v)
            .iter()
            .any(|p| p.0 == "WOULD_DROP" && p.1 == "shop/cart"),
        "{v}"
    );
    // db-allow-cart, changed to let frontend in too.
    std::fs::write(&candidate, db_allow(&["cart", "frontend"])).expect("candidate");
    let v = what_if(&relay.addr, &candidate);
    let allowed = pairs(&v);
    assert!(
        // Judged against the policy in force now: frontend's first
        // connection (forwarded before it) and its denied attempt (the SYN's
        // retransmissions counted with it).
        allowed.iter().any(|p| p.0 == "WOULD_ALLOW"
            && p.1 == "shop/frontend"
            && p.2 == "shop/db"
            && p.4 == 2
            && p.5 == ["shop/db-allow-cart"]),
        "{v}"
    );
    assert!(!allowed.iter().any(|p| p.0 == "WOULD_DROP"), "{v}");
}

#[test]
fn a_candidate_that_does_not_parse_is_a_usage_error() {
    let Some(_g) = privileged() else { return };
    let lab = lab();
    let agent = AgentProcess::start(&lab, "lab-node-1", &[]);
    let bad = lab.dir.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec: {podSelector: {}, ingress: [{ports: [{port: http}]}]}\n").expect("file");
    let out = std::process::Command::new(binary("webb"))
        .args([
            "policy",
            "what-if",
            bad.to_str().expect("path"),
            "--server",
            &agent.addr,
        ])
        .env("WEBB_CONFIG", "/dev/null")
        .output()
        .expect("webb");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("candidate policy file 1"), "{err}");
    let missing = std::process::Command::new(binary("webb"))
        .args([
            "policy",
            "what-if",
            "/nonexistent.yaml",
            "--server",
            &agent.addr,
        ])
        .env("WEBB_CONFIG", "/dev/null")
        .output()
        .expect("webb");
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.yaml"),
        "{missing:?}"
    );
}
