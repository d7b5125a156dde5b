//! End-to-end test of `webb advise policy`: real connections between lab
//! pods, a real agent and relay, the real CLI; the advised YAML is then
//! applied to the agent, whose datapath must pass exactly the traffic seen.

use std::time::Duration;

use webb_proto::flow::{FlowFilter, WebbEmitReason};
use webb_tests::{
    agent::{AgentProcess, webb_ok},
    block_on, client,
    lab::{Lab, PodSpec},
    privileged,
    relay::RelayProcess,
    traffic::{listen_tcp, tcp_send},
};

#[test]
fn advised_policies_pass_the_traffic_seen_and_drop_the_rest() {
    let Some(_g) = privileged() else { return };
    let lab = Lab::new(&[
        PodSpec::new("shop", "frontend", "frontend"),
        PodSpec::new("shop", "cart", "cart"),
        PodSpec::new("shop", "db", "db"),
    ]);
    let policy = lab.write_policy("");
    let agent = AgentProcess::start(
        &lab,
        "lab-node-1",
        &["--policy", policy.to_str().expect("path")],
    );
    let relay = RelayProcess::start(&["--peer", agent.addr.as_str()]);
    let (fe, cart, db) = (lab.pod("frontend"), lab.pod("cart"), lab.pod("db"));
    let (fe_ip, cart_ip, db_ip) = (fe.ip.to_string(), cart.ip.to_string(), db.ip.to_string());
    let _listeners = [
        listen_tcp(fe, 9000),
        listen_tcp(cart, 8080),
        listen_tcp(db, 5432),
    ];
    // What the application does: frontend calls cart, cart calls db.
    assert!(tcp_send(fe, &cart_ip, 8080, 3));
    assert!(tcp_send(cart, &db_ip, 5432, 3));
    assert!(tcp_send(fe, &cart_ip, 8080, 3));
    // Each connection reported leaving its initiator and entering its
    // responder.
    block_on(client::wait_for(
        &agent.addr,
        vec![FlowFilter {
            destination_port: vec!["8080".into(), "5432".into()],
            ..Default::default()
        }],
        Duration::from_secs(10),
        |fl| {
            fl.iter()
                .filter(|f| f.webb_emit_reason == WebbEmitReason::WebbEmitNew as i32)
                .count()
                >= 6
        },
    ));

    let yaml = webb_ok(&["advise", "policy", "-n", "shop", "--server", &relay.addr]);
    assert!(
        yaml.contains("3 connection(s) from 1 node(s)")
            && yaml.contains("# from shop/frontend: 2 connection(s)")
            && yaml.contains("# to shop/db: 1 connection(s)")
            && yaml.contains("name: \"webb-advise-cart\""),
        "{yaml}"
    );
    // One workload only.
    let db_only = webb_ok(&[
        "advise",
        "policy",
        "-n",
        "shop",
        "--workload",
        "db",
        "--server",
        &agent.addr,
    ]);
    assert_eq!(
        db_only.matches("kind: NetworkPolicy").count(),
        1,
        "{db_only}"
    );

    // Applied: what was seen passes, nothing else does.
    std::fs::write(&policy, &yaml).expect("policy in force");
    let applied = || {
        webb_ok(&[
            "observe",
            "agent-events",
            "--server",
            &agent.addr,
            "--last",
            "1000",
            "-o",
            "json",
        ])
        .contains("webb-advise-frontend")
    };
    let start = std::time::Instant::now();
    while !applied() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the policies never applied"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(tcp_send(fe, &cart_ip, 8080, 3), "frontend -> cart was seen");
    assert!(tcp_send(cart, &db_ip, 5432, 3), "cart -> db was seen");
    assert!(!tcp_send(fe, &db_ip, 5432, 1), "frontend -> db was not");
    assert!(
        !tcp_send(cart, &fe_ip, 9000, 1),
        "nothing came into frontend"
    );
    assert!(
        !tcp_send(db, &cart_ip, 8080, 1),
        "db reached out to nothing"
    );
}
