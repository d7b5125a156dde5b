//! End-to-end test of `webb ui --since`: the real dashboard in a real
//! terminal (tmux) showing a window of a real agent's history, its time
//! cursor moving the window, and L going back to the live stream.

use std::time::Duration;

use webb_proto::flow::FlowFilter;
use webb_tests::{
    agent::{AgentProcess, binary},
    block_on, client,
    lab::{Lab, PodSpec},
    privileged,
    tmux::Tmux,
    traffic::{listen_tcp, tcp_send},
};

#[test]
fn a_window_of_history_is_shown_moved_and_left_for_live() {
    let Some(_g) = privileged() else { return };
    if webb_tests::lab::which("tmux").is_none() {
        eprintln!("skipped: tmux is not installed (scripts/setup.sh installs it)");
        return;
    }
    let lab = Lab::new(&[
        PodSpec::new("shop", "frontend", "frontend"),
        PodSpec::new("shop", "db", "db"),
    ]);
    let agent = AgentProcess::start(&lab, "lab-node-1", &[]);
    let (fe, db) = (lab.pod("frontend"), lab.pod("db"));
    let _db = listen_tcp(db, 5432);
    for _ in 0..3 {
        assert!(tcp_send(fe, &db.ip.to_string(), 5432, 3));
    }
    block_on(client::wait_for(
        &agent.addr,
        vec![FlowFilter {
            destination_port: vec!["5432".into()],
            ..Default::default()
        }],
        Duration::from_secs(10),
        |f| f.len() >= 6,
    ));

    let cmd = format!(
        "TERM=xterm-256color {} ui --server {} --since 10m --to-port 5432 --log-file {}; sleep 30",
        binary("webb").display(),
        agent.addr,
        lab.dir.join("ui.log").display(),
    );
    let t = Tmux::start(&cmd, 160, 40);
    let flows_line = |s: &str| {
        s.lines()
            .find(|l| l.contains("┌ flows "))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    let s = t.wait_for("the window", |s| {
        s.contains("WINDOW ") && s.contains("(10m")
    });
    let shown = flows_line(&s);
    assert!(!shown.contains("flows 0 of 0"), "{s}");
    assert!(s.contains("shop/frontend") || s.contains("frontend"), "{s}");
    // Ten minutes earlier: the agent did not exist; nothing.
    t.keys(&["["]);
    let s = t.wait_for("the earlier window", |s| {
        s.contains("WINDOW ") && flows_line(s).contains("flows 0 of 0")
    });
    assert!(s.contains("(10m"), "{s}");
    // Back: the same flows as at first.
    t.keys(&["]"]);
    let s = t.wait_for("the window again", |s| {
        s.contains("WINDOW ") && !flows_line(s).contains("flows 0 of 0")
    });
    assert_eq!(flows_line(&s), shown, "{s}");
    // Narrower, then live.
    t.keys(&["{"]);
    t.wait_for("the narrower window", |s| {
        s.contains("WINDOW ") && s.contains("(5m")
    });
    t.keys(&["L"]);
    let s = t.wait_for("live", |s| s.contains("LIVE"));
    assert!(!s.contains("WINDOW"), "{s}");
    t.keys(&["q"]);
}
