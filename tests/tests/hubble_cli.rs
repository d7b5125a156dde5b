//! The real `hubble` CLI against webb. No hubble can be installed in CI, so
//! this runs when `WEBB_TEST_HUBBLE` names a `hubble` binary (built on your
//! machine from Hubble's source): `hubble status`, `list nodes`, `list
//! namespaces`, `watch peers` and `observe` against a real agent and the
//! real relay on a lab with DNS, HTTP, allowed and denied traffic, and
//! `hubble observe` must print what `webb observe` prints for the same
//! flows and flags, byte for byte, once webb's documented extensions are
//! set aside: the ` kernel-drop-reason=` and ` truncated=` suffixes and the
//! dict's `KERNEL DROP:`/`TRUNCATED:` lines (printed only from webb's own
//! fields), and the `webb_*` JSON fields (which a hubble does not know,
//! so does not print) and `emitter` (which hubble 1.19 prints and 1.17
//! does not know), set aside on both sides.

use std::{
    process::{Command, Output, Stdio},
    time::Duration,
};

use webb_tests::{
    agent::{AgentProcess, binary},
    lab::{Lab, PodSpec},
    privileged,
    relay::RelayProcess,
    traffic::{Resolver, dns_server, http_server, listen_tcp, ping, tcp_send},
};

/// Flags both CLIs take, each run over the same window of flows.
const CASES: &[&[&str]] = &[
    &[],
    &["-o", "json"],
    &["-o", "jsonpb"],
    &["-o", "dict"],
    &["-o", "table"],
    &["--verdict", "DROPPED"],
    &["--verdict", "DROPPED", "-o", "json"],
    &["--type", "l7"],
    &["--type", "l7", "-o", "json"],
    &["--type", "trace"],
    &["--type", "drop"],
    &["--protocol", "dns", "-o", "dict"],
    &["--protocol", "http"],
    &["--http-status", "5+"],
    &["--http-method", "GET"],
    &["--http-path", "/ok.*"],
    &["--to-pod", "shop/db"],
    &["--from-pod", "shop/frontend"],
    &["--pod", "shop/cart"],
    &["-n", "shop"],
    &["--not", "--namespace", "shop"],
    &["--to-port", "53"],
    &["--ip-version", "v4"],
    &["--from-label", "app=frontend"],
    &["--to-fqdn", "*.shop.lab"],
    &["--tcp-flags", "SYN"],
    &["--traffic-direction", "ingress"],
    &["--time-format", "RFC3339"],
    &["--time-format", "StampMilli", "-o", "table"],
    &["--ip-translation=false"],
    &["--print-node-name"],
    &["--numeric"],
    &["-o", "json", "--first", "5"],
    &["--first", "3"],
    &["--last", "4"],
    &["-o", "jsonpb", "--last", "2"],
    &["--color", "always"],
    &["--cel-expression", "_flow.verdict == Verdict.DROPPED"],
    &["--drop-reason-desc", "POLICY_DENIED"],
    &["-o", "jsonpb", "--allowlist", r#"{"verdict":["DROPPED"]}"#],
    &[
        "--not",
        "--verdict",
        "FORWARDED",
        "--not",
        "--type",
        "trace",
    ],
    &["--workload", "frontend"],
];

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env("HUBBLE_CONFIG", "/dev/null")
        .env("WEBB_CONFIG", "/dev/null")
        .env_remove("NO_COLOR")
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e}"))
}

/// Skips one JSON value starting at `s[0]` (a string, an object, or a
/// scalar up to the next `,` or `}`); returns the rest.
fn skip_value(s: &str) -> &str {
    let b = s.as_bytes();
    let (mut i, mut depth, mut in_str, mut esc) = (0, 0i32, false, false);
    while i < b.len() {
        let c = b[i];
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => {
                    in_str = false;
                    if depth == 0 {
                        return &s[i + 1..];
                    }
                }
                _ => {}
            }
        } else {
            match c {
                b'"' => in_str = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth == 0 => return &s[i..],
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        return &s[i + 1..];
                    }
                }
                b',' if depth == 0 => return &s[i..],
                _ => {}
            }
        }
        i += 1;
    }
    ""
}

/// The index just past the JSON string that starts at `s[at]` (a `"`).
fn string_end(s: &str, at: usize) -> usize {
    let b = s.as_bytes();
    let mut i = at + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

fn is_extension(key: &str) -> bool {
    key == "emitter"
        || key.starts_with("webb_")
        || key
            .strip_prefix("webb")
            .is_some_and(|r| r.starts_with(char::is_uppercase))
}

/// A JSON line without webb's extension fields, the rest untouched.
fn without_extensions(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while let Some(j) = line[i..].find('"').map(|j| i + j) {
        out.push_str(&line[i..j]);
        let end = string_end(line, j);
        let key = &line[j + 1..end.saturating_sub(1).max(j + 1)];
        if line[end..].starts_with(':') && is_extension(key) {
            // Drop `"key":value` and one comma beside it.
            let next = line.len() - skip_value(&line[end + 1..]).len();
            i = if out.ends_with(',') {
                out.pop();
                next
            } else if line[next..].starts_with(',') {
                next + 1
            } else {
                next
            };
            continue;
        }
        out.push_str(&line[j..end]);
        i = end;
    }
    out.push_str(&line[i..]);
    out
}

fn normalized(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("KERNEL DROP:") || trimmed.starts_with("TRUNCATED:") {
            continue;
        }
        let line = if line.starts_with('{') {
            without_extensions(line)
        } else {
            let mut l = line.to_owned();
            for suffix in [" kernel-drop-reason=", " truncated="] {
                while let Some(at) = l.find(suffix) {
                    let end = l[at + 1..].find(' ').map_or(l.len(), |e| at + 1 + e);
                    l.replace_range(at..end, "");
                }
            }
            l
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn the_real_hubble_cli_reads_webb_as_webb_does() {
    let Ok(hubble) = std::env::var("WEBB_TEST_HUBBLE") else {
        eprintln!("skipped: set WEBB_TEST_HUBBLE to a hubble binary");
        return;
    };
    let Some(_g) = privileged() else { return };
    let lab = Lab::new(&[
        PodSpec::new("shop", "frontend", "frontend"),
        PodSpec::new("shop", "cart", "cart"),
        PodSpec::new("shop", "db", "db"),
        PodSpec::new("kube-system", "coredns", "coredns"),
    ]);
    let policy = lab.write_policy(webb_tests::lab::DB_ALLOW_CART);
    let (fe, cart, db, dnsp) = (
        lab.pod("frontend"),
        lab.pod("cart"),
        lab.pod("db"),
        lab.pod("coredns"),
    );
    let _dns = dns_server(
        dnsp,
        "shop.lab",
        &[format!("--host-record=cart.shop.lab,{}", cart.ip)],
    );
    let _http = http_server(cart, 8080, 5);
    let _db = listen_tcp(db, 5432);
    let _resolver = Resolver::new(fe, &dnsp.ip.to_string(), "shop.lab");
    let export = lab.dir.join("events.log");
    let agent = AgentProcess::start(
        &lab,
        "lab-node-1",
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--export-file-path",
            export.to_str().unwrap(),
        ],
    );
    let relay = RelayProcess::start(&["--peer", &agent.addr]);

    let since = rfc3339(std::time::SystemTime::now() - Duration::from_secs(1));
    let out = fe.run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "http://cart.shop.lab:8080/ok",
            "-o",
            "/dev/null",
            "http://cart.shop.lab:8080/fail",
        ],
    );
    assert!(out.status.success(), "curl: {out:?}");
    assert!(tcp_send(cart, &db.ip.to_string(), 5432, 2));
    assert!(!tcp_send(fe, &db.ip.to_string(), 5432, 1), "denied");
    assert!(ping(fe, &cart.ip.to_string(), 1));
    // Everything seen is published, and the window is closed in the past.
    std::thread::sleep(Duration::from_secs(3));
    let until = rfc3339(std::time::SystemTime::now() - Duration::from_secs(1));

    let webb = binary("webb");
    let webb = webb.to_str().unwrap();
    for server in [agent.addr.as_str(), relay.addr.as_str()] {
        for cmd in [&["status"][..], &["list", "nodes"], &["list", "namespaces"]] {
            let out = run(&hubble, &[cmd, &["--server", server]].concat());
            assert!(
                out.status.success(),
                "hubble {cmd:?} --server {server}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut same = 0;
        let mut differ = Vec::new();
        for case in CASES {
            let args = [
                &[
                    "observe", "--server", server, "--since", &since, "--until", &until,
                ][..],
                case,
            ]
            .concat();
            let (h, w) = (run(&hubble, &args), run(webb, &args));
            let (ht, wt) = (
                String::from_utf8_lossy(&h.stdout),
                String::from_utf8_lossy(&w.stdout),
            );
            // Both sides: hubble 1.19 knows `emitter` (1.17 does not);
            // neither prints webb's own fields.
            if h.status.code() == w.status.code() && normalized(&ht) == normalized(&wt) {
                same += 1;
            } else {
                differ.push(format!(
                    "{case:?}: exit {:?} / {:?}\n--- hubble\n{}\n--- webb (normalized)\n{}\n{}",
                    h.status.code(),
                    w.status.code(),
                    normalized(&ht)
                        .lines()
                        .take(8)
                        .collect::<Vec<_>>()
                        .join("\n"),
                    normalized(&wt)
                        .lines()
                        .take(8)
                        .collect::<Vec<_>>()
                        .join("\n"),
                    String::from_utf8_lossy(&h.stderr)
                ));
            }
            assert!(
                !ht.is_empty() || !case.is_empty(),
                "hubble printed nothing for the window"
            );
        }
        assert!(
            differ.is_empty(),
            "{server}: {same} the same, {} differ:\n{}",
            differ.len(),
            differ.join("\n\n")
        );
        eprintln!("{server}: all {same} cases print the same");
        // The agent's events (endpoints, policies, IP cache) and the
        // debug events (webb's agent writes none), as both CLIs print them.
        for case in [
            &["agent-events", "--last", "50", "-o", "json"][..],
            &["agent-events", "--last", "50"],
            &["agent-events", "--last", "50", "-o", "dict"],
            &["debug-events", "--last", "5", "-o", "json"],
        ] {
            let args = [&["observe"][..], case, &["--server", server]].concat();
            let (h, w) = (run(&hubble, &args), run(webb, &args));
            assert_eq!(
                h.status.code(),
                w.status.code(),
                "{case:?}: {}",
                String::from_utf8_lossy(&h.stderr)
            );
            let ht = String::from_utf8_lossy(&h.stdout);
            if case[0] == "agent-events" {
                assert!(ht.lines().count() >= 3, "{server} {case:?}: {ht}");
            }
            assert_eq!(
                normalized(&ht),
                normalized(&String::from_utf8_lossy(&w.stdout)),
                "{server} {case:?}"
            );
        }
    }
    // The exporter's file, read back by both.
    for format in ["json", "compact", "dict"] {
        let args = [
            "observe",
            "--input-file",
            export.to_str().unwrap(),
            "-o",
            format,
        ];
        let (h, w) = (run(&hubble, &args), run(webb, &args));
        assert!(h.status.success(), "{}", String::from_utf8_lossy(&h.stderr));
        let ht = String::from_utf8_lossy(&h.stdout);
        assert!(ht.lines().count() > 10, "{ht}");
        assert_eq!(
            normalized(&ht),
            normalized(&String::from_utf8_lossy(&w.stdout)),
            "-o {format}"
        );
    }
    // Peers, as `hubble watch peers` reads them (a stream: read the first).
    let mut child = Command::new(&hubble)
        .args(["watch", "peers", "--server", &agent.addr])
        .env("HUBBLE_CONFIG", "/dev/null")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("PEER_ADDED") && line.contains("lab-node-1"),
        "{line:?}"
    );
}

#[test]
fn extensions_are_set_aside_and_nothing_else() {
    let line = r#"{"flow":{"time":"t","emitter":{"name":"webb","version":"0.1.0"},"verdict":"DROPPED","l7":{"webb_truncated":true,"type":"REQUEST"},"Summary":"UDP","webb_kernel_drop_reason":"NO_SOCKET","webb_packets":"1"},"node_name":"n"}"#;
    assert_eq!(
        without_extensions(line),
        r#"{"flow":{"time":"t","verdict":"DROPPED","l7":{"type":"REQUEST"},"Summary":"UDP"},"node_name":"n"}"#
    );
    assert_eq!(
        normalized("a DROPPED (UDP) kernel-drop-reason=NO_SOCKET\nKERNEL DROP: X\n  TYPE: y\n"),
        "a DROPPED (UDP)\n  TYPE: y\n"
    );
    // A value that merely says "webb" is kept.
    let kept = r#"{"flow":{"summary":"webb_x \"q\"","a":1}}"#;
    assert_eq!(without_extensions(kept), kept);
}
