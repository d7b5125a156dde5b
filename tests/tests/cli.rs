//! End-to-end tests of the `webb` command line against a real agent on a lab
//! node: server-side filters, JSON through jq, captures read back with
//! `--input-file`, `status` and `list`.

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use webb_tests::{
    agent::{AgentProcess, binary},
    lab::{Lab, PodSpec},
    privileged,
    traffic::{listen_tcp, ping, tcp_send},
};

fn webb(server: &str, args: &[&str]) -> Output {
    Command::new(binary("webb"))
        .args(args)
        .args(["--server", server])
        .env("WEBB_CONFIG", "/dev/null")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("running webb")
}

fn stdout_ok(server: &str, args: &[&str]) -> String {
    let out = webb(server, args);
    assert!(
        out.status.success(),
        "webb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn observe_status_and_list_against_a_live_agent() {
    let Some(_g) = privileged() else { return };
    let lab = Lab::new(&[
        PodSpec::new("shop", "frontend", "frontend"),
        PodSpec::new("shop", "cart", "cart"),
        PodSpec::new("shop", "db", "db"),
    ]);
    let policy = lab.write_policy(webb_tests::lab::DB_ALLOW_CART);
    let agent = AgentProcess::start(&lab, "lab-node-1", &["--policy", policy.to_str().unwrap()]);
    let (fe, cart, db) = (lab.pod("frontend"), lab.pod("cart"), lab.pod("db"));
    let _db = listen_tcp(db, 5432);
    let _cart = listen_tcp(cart, 8080);

    // Allowed, denied, and a ping.
    assert!(tcp_send(fe, &cart.ip.to_string(), 8080, 2));
    assert!(tcp_send(cart, &db.ip.to_string(), 5432, 2));
    assert!(
        !tcp_send(fe, &db.ip.to_string(), 5432, 1),
        "the policy denies frontend -> db"
    );
    assert!(ping(fe, &cart.ip.to_string(), 1));
    // Let the agent publish what it saw (ring poll interval + flush), and
    // wait until the listing settles: a SYN retransmitted just before the
    // denied client gave up can land a moment after the first drop.
    let server = agent.addr.clone();
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut last_count = usize::MAX;
    let mut stable_since = Instant::now();
    let all = loop {
        let all = stdout_ok(&server, &["observe", "--all", "-o", "json"]);
        let dropped = all
            .lines()
            .filter(|l| l.contains("\"verdict\":\"DROPPED\""))
            .count();
        let count = all.lines().count();
        if count != last_count {
            last_count = count;
            stable_since = Instant::now();
        }
        let settled = stable_since.elapsed() >= Duration::from_millis(1200);
        if (dropped >= 1 && settled) || Instant::now() > deadline {
            break all;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let all = json_lines(&all);
    assert!(all.len() >= 4, "{} flows", all.len());

    // --verdict DROPPED is applied by the server and returns exactly the
    // dropped flows of the full listing, all of them frontend -> db. A
    // flow that arrives between two listings must not fail the test, so
    // the filtered answer is held between the listing before it and the
    // one after it.
    let dropped = json_lines(&stdout_ok(
        &server,
        &["observe", "--all", "--verdict", "DROPPED", "-o", "json"],
    ));
    let after = json_lines(&stdout_ok(&server, &["observe", "--all", "-o", "json"]));
    assert!(!dropped.is_empty());
    let uuids = |v: &[serde_json::Value], pred: &dyn Fn(&serde_json::Value) -> bool| {
        let mut u: Vec<String> = v
            .iter()
            .filter(|r| pred(r))
            .map(|r| r["flow"]["uuid"].as_str().unwrap_or_default().to_owned())
            .collect();
        u.sort();
        u
    };
    let is_drop = |r: &serde_json::Value| r["flow"]["verdict"] == "DROPPED";
    let (before, filtered, after) = (
        uuids(&all, &is_drop),
        uuids(&dropped, &|_| true),
        uuids(&after, &is_drop),
    );
    assert!(
        dropped.iter().all(is_drop),
        "the server's filter returned a flow that is not dropped"
    );
    assert!(
        before.iter().all(|u| filtered.contains(u)) && filtered.iter().all(|u| after.contains(u)),
        "the server's filter and the full listing agree:\nbefore: {before:?}\nfiltered: {filtered:?}\nafter: {after:?}"
    );
    // The policy's drops are exactly frontend -> db; anything else dropped
    // is the kernel's own (a late segment to a closed socket, say) and says
    // so.
    let mut policy_drops = 0;
    for r in &dropped {
        let f = &r["flow"];
        if f["drop_reason_desc"] == "POLICY_DENIED" {
            policy_drops += 1;
            assert_eq!(f["source"]["pod_name"], "frontend", "{r}");
            assert_eq!(f["destination"]["pod_name"], "db", "{r}");
        } else {
            assert!(f["webb_kernel_drop_reason"].is_string(), "{r}");
        }
    }
    assert!(policy_drops > 0);
    // The compact printer says the same, Hubble-style.
    let compact = stdout_ok(
        &server,
        &[
            "observe",
            "--all",
            "--verdict",
            "DROPPED",
            "--drop-reason-desc",
            "POLICY_DENIED",
        ],
    );
    // As many as the JSON answer held, or more if one arrived since.
    assert!(compact.lines().count() >= policy_drops, "{compact}");
    for line in compact.lines() {
        assert!(line.contains("shop/frontend"), "{line}");
        assert!(
            line.contains(":5432 (ID:") && line.contains("Policy denied DROPPED (TCP Flags: SYN)"),
            "{line}"
        );
    }

    // Pipes into jq, as users' scripts do.
    let jq = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} observe --server {server} --all -o json --from-pod shop/cart | jq -r '.flow.source.pod_name' | sort -u",
            binary("webb").display()
        ))
        .env("WEBB_CONFIG", "/dev/null")
        .output()
        .expect("sh");
    assert!(
        jq.status.success(),
        "{}",
        String::from_utf8_lossy(&jq.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&jq.stdout), "cart\n");

    // A capture read back gives the same lines as the live query.
    let capture = lab.dir.join("capture.jsonl");
    let full = stdout_ok(&server, &["observe", "--all", "-o", "json"]);
    std::fs::write(&capture, &full).unwrap();
    for args in [
        &["--verdict", "DROPPED"][..],
        &["--to-pod", "shop/cart", "--protocol", "tcp"][..],
        &["--not", "--verdict", "DROPPED", "-o", "dict"][..],
    ] {
        let mut live_args = vec!["observe", "--all"];
        live_args.extend_from_slice(args);
        let live = stdout_ok(&server, &live_args);
        let mut file_args = vec!["observe", "--input-file", capture.to_str().unwrap()];
        file_args.extend_from_slice(args);
        let from_file = stdout_ok(&server, &file_args);
        // The live ring may have grown since the capture: compare the
        // capture's share of it.
        assert!(!from_file.is_empty(), "{args:?}");
        assert!(
            live.starts_with(&from_file),
            "{args:?}:\nlive:\n{live}\nfile:\n{from_file}"
        );
    }

    // Field masks: the agent sends only the fields asked for; text output
    // asks for what it prints and prints the same as with whole flows.
    let masked = json_lines(&stdout_ok(
        &server,
        &[
            "observe",
            "--all",
            "-o",
            "json",
            "--field-mask",
            "time,verdict,source.pod_name",
        ],
    ));
    assert!(!masked.is_empty());
    for r in &masked {
        let f = r["flow"].as_object().expect("a flow");
        let mut keys: Vec<&str> = f.keys().map(String::as_str).collect();
        keys.sort();
        assert!(
            keys.iter()
                .all(|k| ["time", "verdict", "source"].contains(k)),
            "{keys:?}"
        );
        if let Some(src) = f.get("source") {
            let src: Vec<&String> = src.as_object().unwrap().keys().collect();
            assert!(src.iter().all(|k| *k == "pod_name"), "{src:?}");
        }
    }
    for format in ["compact", "dict", "table"] {
        let with = stdout_ok(
            &server,
            &["observe", "--all", "-o", format, "--until", "1s"],
        );
        let without = stdout_ok(
            &server,
            &[
                "observe",
                "--all",
                "-o",
                format,
                "--until",
                "1s",
                "--use-default-field-masks=false",
            ],
        );
        assert!(!with.is_empty());
        assert_eq!(with, without, "{format}");
    }
    let bad = webb(
        &server,
        &["observe", "--all", "-o", "json", "--field-mask", "nope"],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains(
            "failed to construct field mask: proto: invalid path \"nope\" for message \"flow.Flow\""
        ),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // status and list nodes describe the agent.
    let status = stdout_ok(&server, &["status"]);
    assert!(
        status.starts_with(&format!("Healthcheck (via {server}): Ok\n")),
        "{status}"
    );
    assert!(status.contains("Current/Max Flows: "), "{status}");
    assert!(status.contains("Seen flows: "), "{status}");
    let nodes = stdout_ok(&server, &["list", "nodes"]);
    let mut lines = nodes.lines();
    assert!(lines.next().unwrap().starts_with("NAME"), "{nodes}");
    assert!(
        lines.next().unwrap().starts_with("lab-node-1   Connected"),
        "{nodes}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout_ok(&server, &["list", "nodes", "-o", "json"])).unwrap();
    assert_eq!(json[0]["name"], "lab-node-1");
    let namespaces = stdout_ok(&server, &["list", "namespaces"]);
    assert!(
        namespaces.lines().any(|l| l.trim() == "shop"),
        "{namespaces}"
    );

    // --follow prints a new flow at once and Ctrl-C ends it cleanly.
    let follow = Command::new(binary("webb"))
        .args([
            "observe",
            "--server",
            &server,
            "-f",
            "--to-port",
            "8080",
            "-o",
            "json",
        ])
        .env("WEBB_CONFIG", "/dev/null")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(tcp_send(fe, &cart.ip.to_string(), 8080, 2));
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(follow.id() as i32, libc::SIGINT) };
    let out = follow.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let followed = json_lines(&String::from_utf8_lossy(&out.stdout));
    assert!(
        !followed.is_empty(),
        "the new connection shows up while following"
    );
    drop(agent);
}
