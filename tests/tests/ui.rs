//! End-to-end test of `webb ui`: the real binary in a real terminal (tmux),
//! replaying a recorded capture; keys are sent as a user types them and the
//! screen is read back. Needs tmux (scripts/setup.sh installs it), not root.

use webb_tests::{agent::binary, tmux::Tmux};

#[test]
fn dashboard_replays_a_capture_filters_shows_details_and_restores_the_terminal() {
    if webb_tests::lab::which("tmux").is_none() {
        eprintln!("skipped: tmux is not installed (scripts/setup.sh installs it)");
        return;
    }
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tui/tests/fixtures/flows.jsonl"
    );
    let log = std::env::temp_dir().join(format!("webb-ui-test-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let cmd = format!(
        "TERM=xterm-256color {} ui --input-file {fixture} --replay-speed 0 --log-file {}; echo webb-exit=$?; sleep 30",
        binary("webb").display(),
        log.display()
    );
    let t = Tmux::start(&cmd, 120, 30);
    let s = t.wait_for("the replayed table", |s| s.contains("END OF FILE"));
    assert!(s.contains("flows 11 of 11"), "{s}");
    assert!(s.contains("DROPPED") && s.contains("FORWARDED"), "{s}");

    // Hide FORWARDED with its verdict key.
    t.keys(&["1"]);
    let s = t.wait_for("fewer flows", |s| !s.contains("flows 11 of 11"));
    let rows = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("│Jan"))
            .map(str::to_owned)
            .collect()
    };
    assert!(!rows(&s).is_empty(), "{s}");
    assert!(rows(&s).iter().all(|l| !l.contains("FORWARDED")), "{s}");
    t.keys(&["1"]);

    // The filter bar: observe's flags, applied to the buffer.
    t.keys(&["/"]);
    t.literal("--verdict DROPPED");
    t.keys(&["Enter"]);
    let s = t.wait_for("the filter", |s| s.contains("filter: --verdict DROPPED"));
    assert!(s.contains("flows 3 of 11"), "{s}");
    assert!(
        rows(&s)
            .iter()
            .all(|l| l.contains("DROPPED") || l.contains("DENIED")),
        "{s}"
    );

    // Pause, select, details with every field and the JSON.
    t.keys(&["Space", "Enter"]);
    let s = t.wait_for("the detail pane", |s| s.contains("JSON:"));
    assert!(s.contains("PAUSED"), "{s}");
    assert!(
        s.contains("verdict: DROPPED") || s.contains("\"verdict\":\"DROPPED\""),
        "{s}"
    );
    t.keys(&["Escape", "?"]);
    t.wait_for("help", |s| {
        s.contains("keys") && s.contains("show / hide FORWARDED")
    });
    // The service graph of the dropped flows: boxes and arrows.
    t.keys(&["x", "F2"]);
    let s = t.wait_for("the graph", |s| s.contains("service graph:"));
    assert!(s.contains("shop/frontend") && s.contains("shop/db"), "{s}");
    assert!(s.contains('▶') && s.contains('┌'), "{s}");
    // Enter narrows the flow table to the selected workload.
    t.keys(&["Enter"]);
    let s = t.wait_for("the focused table", |s| s.contains("focus:"));
    assert!(
        s.contains("focus: shop/") && !s.contains("flows 3 of 11"),
        "{s}"
    );
    // The drop panel explains the policy drop.
    t.keys(&["F3"]);
    let s = t.wait_for("the drop panel", |s| s.contains("what it means"));
    assert!(s.contains("POLICY_DENIED") && s.contains("policy"), "{s}");
    t.keys(&["q"]);

    // The program ended and left the alternate screen: none of it remains.
    // The shell around it prints its exit status and stays, because tmux
    // 3.3 can lose a pane's last output, and its exit status, when the
    // process ends right after writing (the session is killed on drop).
    let s = t.wait_for("exit", |s| s.contains("webb-exit="));
    assert!(s.contains("webb-exit=0"), "exit status; screen:\n{s}");
    assert!(
        !s.contains("verdicts") && !s.contains("flows "),
        "terminal not restored:\n{s}"
    );
    // The log went to its file, not to the screen.
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("webb ui started"), "log: {logged:?}");
    let _ = std::fs::remove_file(&log);
}
