//! The demo, headless: `webb-demo --no-ui` brings up the two-node lab, and
//! `webb observe` through its relay sees flows of every kind; stopping it
//! (or `--keep` then `--down`) leaves no namespace, link, qdisc, cgroup,
//! program or process behind.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use webb_tests::{
    agent::{binary, free_port},
    demo, privileged,
    tmux::Tmux,
};

/// What the relay must have shown, by name, for the demo to pass.
const KINDS: [&str; 11] = [
    "forwarded TCP",
    "policy drop",
    "kernel drop",
    "DNS answer",
    "DNS NXDOMAIN",
    "HTTP 2xx",
    "HTTP 4xx",
    "HTTP 5xx",
    "ICMP",
    "world",
    "both nodes",
];

/// The kinds of flow in `webb observe -o json` lines.
fn kinds(json_lines: &str) -> BTreeSet<&'static str> {
    let mut seen = BTreeSet::new();
    let mut nodes = BTreeSet::new();
    for line in json_lines.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let f = &v["flow"];
        if f.is_null() {
            continue;
        }
        if let Some(n) = f["node_name"].as_str() {
            nodes.insert(n.to_owned());
        }
        if f["verdict"] == "FORWARDED" && !f["l4"]["TCP"].is_null() {
            seen.insert("forwarded TCP");
        }
        if f["drop_reason_desc"] == "POLICY_DENIED" && f["verdict"] == "DROPPED" {
            seen.insert("policy drop");
        }
        if f["webb_kernel_drop_reason"].is_string() && f["verdict"] == "DROPPED" {
            seen.insert("kernel drop");
        }
        let dns = &f["l7"]["dns"];
        if !dns.is_null() && dns["ips"].as_array().is_some_and(|a| !a.is_empty()) {
            seen.insert("DNS answer");
        }
        if dns["rcode"] == 3 {
            seen.insert("DNS NXDOMAIN");
        }
        match f["l7"]["http"]["code"].as_u64() {
            Some(200..=299) => seen.insert("HTTP 2xx"),
            Some(400..=499) => seen.insert("HTTP 4xx"),
            Some(500..=599) => seen.insert("HTTP 5xx"),
            _ => false,
        };
        if !f["l4"]["ICMPv4"].is_null() {
            seen.insert("ICMP");
        }
        if f["source"]["identity"] == 2 || f["destination"]["identity"] == 2 {
            seen.insert("world");
        }
    }
    if nodes.contains("demo-node-1") && nodes.contains("demo-node-2") {
        seen.insert("both nodes");
    }
    seen
}

/// Both lab nodes share one kernel (`--shared-kernel`): a drop is reported
/// by the node it happened on, once. frontend -> cart:9 (both on node 1)
/// dies in node 1's kernel path; frontend -> db is denied at db's ingress
/// on node 2. Closing sockets' queues are not drops.
fn each_drop_is_reported_once_by_its_node(json_lines: &str) {
    for line in json_lines.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let f = &v["flow"];
        if f["verdict"] != "DROPPED" {
            continue;
        }
        let node = f["node_name"].as_str().unwrap_or_default();
        let kernel = f["webb_kernel_drop_reason"].as_str();
        assert!(
            !matches!(kernel, Some("QUEUE_PURGE" | "SOCKET_CLOSE")),
            "a closing socket's queue reported as a drop: {line}"
        );
        match f["destination"]["pod_name"].as_str() {
            Some("db") => assert_eq!(
                node, "demo-node-2",
                "a drop to db reported by {node}: {line}"
            ),
            Some("cart") if kernel == Some("NO_SOCKET") => {
                assert_eq!(
                    node, "demo-node-1",
                    "cart's NO_SOCKET reported by {node}: {line}"
                )
            }
            _ => {}
        }
    }
}

fn observe(relay: &str) -> String {
    let out = Command::new(binary("webb"))
        .args([
            "observe", "--server", relay, "--last", "20000", "-o", "json",
        ])
        .output()
        .expect("running webb observe");
    assert!(
        out.status.success(),
        "webb observe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the relay has shown every kind of flow.
fn wait_for_every_kind(relay: &str) {
    let start = Instant::now();
    loop {
        let seen = kinds(&observe(relay));
        let missing: Vec<&str> = KINDS
            .iter()
            .copied()
            .filter(|k| !seen.contains(k))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "after 60 s the relay still shows no {missing:?} flows (seen: {seen:?}); logs:\n{}",
            demo::recent_logs(10)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Names of the eBPF programs loaded right now that are webb's.
fn webb_programs() -> usize {
    let out = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines().filter(|l| l.contains(" name webb_")).count()
}

/// Everything a demo could leave behind that is still there.
fn leftovers() -> Vec<String> {
    let mut left = Vec::new();
    for ns in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = ns.file_name().to_string_lossy().into_owned();
        if name.starts_with(demo::PREFIX) {
            left.push(format!("network namespace {name}"));
        }
    }
    for link in std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = link.file_name().to_string_lossy().into_owned();
        if name.starts_with(demo::PREFIX) || name.starts_with("lxc-") {
            left.push(format!("link {name}"));
        }
    }
    let qdiscs = Command::new("tc")
        .args(["qdisc", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for q in qdiscs.lines() {
        if q.contains(demo::PREFIX) || q.contains("lxc-") {
            left.push(format!("qdisc {q}"));
        }
    }
    if let Some(root) = webb_tests::lab::cgroup2_root()
        && root.join(demo::PREFIX).exists()
    {
        left.push(format!("cgroup {}", root.join(demo::PREFIX).display()));
    }
    for dir in std::fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        if dir.file_name().to_string_lossy().starts_with(demo::PREFIX) {
            left.push(format!("resolver {}", dir.path().display()));
        }
    }
    if Path::new(demo::STATE_DIR).exists() {
        left.push(format!("state directory {}", demo::STATE_DIR));
    }
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if ["demo-node-", "webb-demo traffic", "/run/netns/webb-demo"]
            .iter()
            .any(|m| cmdline.contains(m))
        {
            left.push(format!(
                "process {}: {cmdline}",
                p.file_name().to_string_lossy()
            ));
        }
    }
    left
}

fn assert_torn_down(programs_before: usize) {
    // Processes killed a moment ago may still be exiting.
    let start = Instant::now();
    let mut left = leftovers();
    while !left.is_empty() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
        left = leftovers();
    }
    assert!(
        left.is_empty(),
        "the demo left behind:\n{}",
        left.join("\n")
    );
    assert_eq!(
        webb_programs(),
        programs_before,
        "webb's eBPF programs are still loaded after tear-down"
    );
}

/// A running `webb-demo --no-ui`, stopped with SIGTERM when dropped: a
/// failing test still tears its lab down (and releases the test's output,
/// which the demo shares).
struct Demo(std::process::Child);

impl Demo {
    /// SIGTERM, then up to 30 s for the tear-down; None if it did not end.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: kill with our child's pid and a valid signal.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) && self.stop().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn skip_if_a_demo_is_up() -> bool {
    if demo::is_up() {
        eprintln!(
            "skipped: a demo lab is up on this machine; `sudo bash scripts/demo.sh --down` first"
        );
        return true;
    }
    false
}

#[test]
fn demo_shows_every_kind_of_flow_through_the_relay_and_tears_down_on_sigterm() {
    let Some(_guard) = privileged() else { return };
    if skip_if_a_demo_is_up() {
        return;
    }
    let programs_before = webb_programs();
    let relay = format!("127.0.0.1:{}", free_port());
    let mut demo = Demo(
        Command::new(binary("webb-demo"))
            .args(["--no-ui", "--listen", &relay])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting webb-demo"),
    );
    let stdout = demo.0.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = String::new();
    loop {
        match lines.next() {
            Some(Ok(l)) => {
                printed.push_str(&l);
                printed.push('\n');
                if l.contains("Ctrl-C tears the lab down") {
                    break;
                }
            }
            _ => {
                let status = demo.0.wait().expect("webb-demo status");
                panic!("webb-demo exited ({status}) before it was up; it printed:\n{printed}");
            }
        }
    }
    assert!(
        printed.contains(&format!("webb observe --server {relay}")),
        "the demo did not print the commands to try:\n{printed}"
    );
    wait_for_every_kind(&relay);
    each_drop_is_reported_once_by_its_node(&observe(&relay));

    let status = demo
        .stop()
        .expect("webb-demo did not exit within 30 s of SIGTERM");
    assert!(status.success(), "webb-demo exited with {status}");
    assert_torn_down(programs_before);
}

#[test]
fn demo_keep_leaves_the_lab_running_and_down_removes_it() {
    let Some(_guard) = privileged() else { return };
    if skip_if_a_demo_is_up() {
        return;
    }
    let programs_before = webb_programs();
    let relay = format!("127.0.0.1:{}", free_port());
    // Whatever happens below, the kept lab does not outlive the test.
    struct DownOnDrop;
    impl Drop for DownOnDrop {
        fn drop(&mut self) {
            demo::down();
        }
    }
    let _down = DownOnDrop;
    let out = Command::new(binary("webb-demo"))
        .args(["--no-ui", "--keep", "--listen", &relay])
        .stdin(Stdio::null())
        .output()
        .expect("running webb-demo --keep");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "webb-demo --keep failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("--down"),
        "--keep did not say how to remove the lab:\n{text}"
    );
    assert!(demo::is_up(), "--keep returned but no lab is up");

    // The lab outlives the command that made it: both nodes serve flows.
    let nodes = Command::new(binary("webb"))
        .args(["list", "nodes", "--server", &relay, "-o", "json"])
        .output()
        .expect("webb list nodes");
    let nodes = String::from_utf8_lossy(&nodes.stdout);
    assert!(
        nodes.contains("demo-node-1") && nodes.contains("demo-node-2"),
        "the kept lab's relay does not list both nodes:\n{nodes}"
    );

    // A second demo refuses to start over the kept one.
    let again = Command::new(binary("webb-demo"))
        .args(["--no-ui", "--listen", &format!("127.0.0.1:{}", free_port())])
        .stdin(Stdio::null())
        .output()
        .expect("running a second webb-demo");
    assert!(
        !again.status.success(),
        "a second demo started over a kept lab"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already up"),
        "the second demo did not say why it refused: {}",
        String::from_utf8_lossy(&again.stderr)
    );

    let down = Command::new(binary("webb-demo"))
        .arg("--down")
        .output()
        .expect("running webb-demo --down");
    assert!(
        down.status.success(),
        "webb-demo --down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("torn down"),
        "--down did not report what it removed"
    );
    assert_torn_down(programs_before);
}

#[test]
fn demo_opens_the_dashboard_on_the_relay_and_quitting_tears_down() {
    let Some(_guard) = privileged() else { return };
    if skip_if_a_demo_is_up() || webb_tests::lab::which("tmux").is_none() {
        return;
    }
    let programs_before = webb_programs();
    let relay = format!("127.0.0.1:{}", free_port());
    // The exit status is printed by a shell that stays: tmux can lose a
    // pane's last output when its process ends right after writing.
    let cmd = format!(
        "{} --listen {relay}; echo webb-demo-exit=$?; sleep 60",
        binary("webb-demo").display()
    );
    let t = Tmux::start(&cmd, 140, 40);
    let s = t.wait_for_within(
        "the dashboard with both nodes",
        Duration::from_secs(60),
        |s| s.contains("nodes 2 up") && s.contains("shop/frontend"),
    );
    assert!(
        s.contains(&relay),
        "the dashboard is not on the demo's relay:\n{s}"
    );
    t.keys(&["F3"]);
    t.wait_for_within(
        "a policy drop in the drop panel",
        Duration::from_secs(30),
        |s| s.contains("POLICY_DENIED") && s.contains("shop/db"),
    );
    t.keys(&["q"]);
    let s = t.wait_for_within("the demo's exit", Duration::from_secs(30), |s| {
        s.contains("webb-demo-exit=")
    });
    assert!(s.contains("webb-demo-exit=0"), "the demo failed:\n{s}");
    assert!(
        s.contains("torn down"),
        "the demo did not report its tear-down:\n{s}"
    );
    assert_torn_down(programs_before);
}

/// The capture in `examples/` (recorded from the demo lab by `webb observe
/// -o json`) is what `webb ui --input-file` shows without root: it must
/// read back through webb and hold every kind of flow the live demo has.
#[test]
fn the_recorded_demo_capture_reads_back_with_every_kind_of_flow() {
    let capture = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo.jsonl");
    let out = Command::new(binary("webb"))
        .args(["observe", "--input-file", capture, "--all", "-o", "json"])
        .output()
        .expect("running webb observe --input-file");
    assert!(
        out.status.success(),
        "webb could not read {capture}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let seen = kinds(&text);
    let missing: Vec<&str> = KINDS
        .iter()
        .copied()
        .filter(|k| !seen.contains(k))
        .collect();
    assert!(missing.is_empty(), "{capture} has no {missing:?} flows");
    let lines = std::fs::read_to_string(capture)
        .expect("reading the capture")
        .lines()
        .count();
    assert_eq!(
        text.lines().count(),
        lines,
        "webb dropped lines of {capture}"
    );
}
