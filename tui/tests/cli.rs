//! The `webb` binary as users run it: every output format on a fixed set of
//! flows (L3/L4, policy and kernel drops, DNS, HTTP, lost events, IPv6,
//! world/host, a relay's node status), `--help`, errors and exit codes.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Output, Stdio},
};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/flows.jsonl");

fn webb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_webb"))
        .args(args)
        .env_remove("WEBB_SERVER")
        .env("WEBB_CONFIG", "/dev/null")
        .env_remove("NO_COLOR")
        .output()
        .expect("run webb")
}

fn observe_file(extra: &[&str]) -> (String, String) {
    let mut args = vec!["observe", "--input-file", FIXTURE, "--color", "never"];
    args.extend_from_slice(extra);
    let out = webb(&args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn compact() {
    let (out, err) = observe_file(&[]);
    insta::assert_snapshot!("compact", out);
    insta::assert_snapshot!("node_status_stderr", err);
}

#[test]
fn compact_with_node_names_and_numbers() {
    let (out, _) = observe_file(&[
        "--print-node-name",
        "--numeric",
        "--time-format",
        "RFC3339Nano",
    ]);
    insta::assert_snapshot!("compact_numeric", out);
}

#[test]
fn dict() {
    insta::assert_snapshot!("dict", observe_file(&["-o", "dict"]).0);
}

#[test]
fn table() {
    insta::assert_snapshot!("table", observe_file(&["-o", "table"]).0);
}

#[test]
fn json_and_jsonpb_are_the_capture_itself() {
    let fixture = std::fs::read_to_string(FIXTURE).unwrap();
    // As Hubble: a node status goes to stderr, never into the JSON stream.
    let (status, rest): (Vec<&str>, Vec<&str>) = fixture
        .lines()
        .partition(|l| l.starts_with("{\"node_status\""));
    for format in ["json", "jsonpb"] {
        let (out, err) = observe_file(&["-o", format]);
        assert_eq!(out.lines().collect::<Vec<_>>(), rest, "-o {format}");
        assert_eq!(err.lines().collect::<Vec<_>>(), status, "-o {format}");
    }
}

#[test]
fn jq_paths_users_have_work() {
    let (out, _) = observe_file(&["-o", "json", "--verdict", "DROPPED"]);
    let pods: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with("{\"flow\""))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {} {}",
                v["flow"]["source"]["pod_name"].as_str().unwrap(),
                v["flow"]["verdict"].as_str().unwrap(),
                v["flow"]["drop_reason_desc"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        pods,
        [
            "frontend-7d9c DROPPED POLICY_DENIED",
            "cart-5f6b DROPPED SOCKET_LOOKUP_FAILED",
            "frontend-7d9c DROPPED POLICY_DENIED"
        ]
    );
}

#[test]
fn filters_apply_to_files() {
    let count = |extra: &[&str]| observe_file(extra).0.lines().count();
    // 12 flows and one lost-events record. As Hubble, a record that is not
    // a flow matches no allowlist filter and no denylist one.
    assert_eq!(count(&[]), 12);
    assert_eq!(count(&["--verdict", "DROPPED"]), 3);
    assert_eq!(count(&["--not", "--verdict", "FORWARDED"]), 3 + 1);
    assert_eq!(count(&["--protocol", "http"]), 2);
    assert_eq!(count(&["--http-status", "5+"]), 1);
    assert_eq!(count(&["--type", "l7"]), 4);
    assert_eq!(count(&["--type", "trace:to-network"]), 1);
    assert_eq!(count(&["--to-pod", "shop/db"]), 2);
    assert_eq!(count(&["--pod", "kube-system/coredns"]), 2);
    assert_eq!(count(&["-6"]), 1);
    assert_eq!(count(&["--ip", "10.42.0.0/24", "--to-port", "53"]), 1);
    assert_eq!(count(&["--dns-query", "cart\\.shop"]), 2);
    assert_eq!(
        count(&[
            "--since",
            "2024-01-02T03:04:08Z",
            "--until",
            "2024-01-02T03:04:10Z"
        ]),
        4
    );
    assert_eq!(count(&["--first", "2"]), 2);
    let (last, err) = observe_file(&["--last", "2"]);
    assert!(
        last.lines().last().unwrap().contains("policy-verdict"),
        "{last}"
    );
    // As Hubble's file reader, --last counts every record: the last two are
    // the last flow and the node status after it.
    assert_eq!(last.lines().count(), 1);
    assert!(
        err.contains("lab-node-2"),
        "the node status after the last flow comes along: {err}"
    );
}

#[test]
fn color_is_used_when_asked_and_never_under_no_color() {
    let out = webb(&[
        "observe",
        "--input-file",
        FIXTURE,
        "--color",
        "always",
        "--first",
        "1",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\x1b[32mFORWARDED\x1b[0m"));
    let out = Command::new(env!("CARGO_BIN_EXE_webb"))
        .args(["observe", "--input-file", FIXTURE, "--first", "1"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\x1b'));
}

#[test]
fn print_raw_filters() {
    let out = webb(&[
        "observe",
        "--print-raw-filters",
        "--from-pod",
        "shop/frontend",
        "--not",
        "--verdict",
        "FORWARDED",
    ]);
    assert!(out.status.success());
    insta::assert_snapshot!("raw_filters", String::from_utf8(out.stdout).unwrap());
}

#[test]
fn reads_stdin_and_stops_quietly_when_the_reader_goes_away() {
    // A big capture through stdin into a reader that takes one line.
    let fixture = std::fs::read_to_string(FIXTURE).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_webb"))
        .args(["observe", "--input-file", "-", "--color", "never"])
        .env("WEBB_CONFIG", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for _ in 0..20_000 {
            if stdin.write_all(fixture.as_bytes()).is_err() {
                break;
            }
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("to-stack FORWARDED"), "{line}");
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("Broken pipe") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn bad_values_are_usage_errors_before_any_connection() {
    for (args, want) in [
        (
            &["observe", "--verdict", "FOO"][..],
            "--verdict: \"FOO\" is not a verdict; valid: FORWARDED, DROPPED",
        ),
        (
            &["observe", "--to-ip", "10.0.0.0/33"][..],
            "invalid filter: destination_ip: \"10.0.0.0/33\" is not an IP address or CIDR",
        ),
        (
            &["observe", "--since", "yesterday"][..],
            "\"yesterday\" is not a time",
        ),
        (&["observe", "-o", "xml"][..], "invalid output format: xml"),
        (
            &["observe", "--first", "1", "--follow"][..],
            "cannot set both --first and --follow",
        ),
        (
            &["observe", "--server", "relay:http"][..],
            "--server: \"relay:http\" is not an address",
        ),
        (
            &["observe", "--timeout", "soon"][..],
            "\"soon\" is not a duration",
        ),
    ] {
        let out = webb(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn unreachable_server_says_where_and_what_to_do() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("127.0.0.1:{port}");
    for cmd in [&["observe"][..], &["status"][..], &["list", "nodes"][..]] {
        let mut args = cmd.to_vec();
        args.extend(["--server", &server]);
        let out = webb(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("cannot connect to {server}")),
            "{err}"
        );
        assert!(
            err.contains("kubectl -n kube-system port-forward svc/webb-relay 4245:80"),
            "{err}"
        );
    }
}

#[test]
fn missing_input_file_names_it() {
    let out = webb(&["observe", "--input-file", "/nonexistent/flows.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/flows.json"));
}

#[test]
fn bad_capture_lines_name_the_line() {
    let dir = std::env::temp_dir().join(format!("webb-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.jsonl");
    let first = std::fs::read_to_string(FIXTURE)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    std::fs::write(&path, format!("{first}\n{{\"flow\": 3}}\n")).unwrap();
    let out = webb(&[
        "observe",
        "--input-file",
        path.to_str().unwrap(),
        "--color",
        "never",
    ]);
    // As Hubble's reader: the bad line is named in a warning and skipped.
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("msg=\"Failed to unmarshal json to flow\"")
            && err.contains("line=\"{\\\"flow\\\": 3}\""),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn help() {
    for cmd in [
        &["--help"][..],
        &["observe", "--help"][..],
        &["status", "--help"][..],
        &["list", "nodes", "--help"][..],
    ] {
        let out = webb(cmd);
        assert!(out.status.success());
        insta::assert_snapshot!(
            format!("help_{}", cmd[..cmd.len() - 1].join("_"))
                .trim_end_matches('_')
                .to_owned()
                + "",
            String::from_utf8(out.stdout).unwrap()
        );
    }
}

/// A capture from a newer Hubble, and a torn one: what can be read is read,
/// as Hubble's reader reads it, and what cannot is said, never lost quietly.
#[test]
fn newer_and_torn_captures_are_read_with_warnings() {
    let lines: Vec<&str> = include_str!("fixtures/flows.jsonl").lines().collect();
    let first_flow = lines
        .iter()
        .position(|l| l.contains("\"verdict\":\"FORWARDED\""))
        .unwrap();
    let path = std::env::temp_dir().join(format!("webb-cli-capture-{}.jsonl", std::process::id()));
    let mut text = String::new();
    // A field this build does not know, twice (one warning).
    text.push_str(&lines[first_flow].replacen("{\"flow\":{", "{\"flow\":{\"future_field\":1,", 1));
    text.push('\n');
    text.push_str(&lines[first_flow].replacen("{\"flow\":{", "{\"flow\":{\"future_field\":2,", 1));
    text.push('\n');
    // A line cut short by a crash, and one that is not JSON at all.
    text.push_str(&lines[first_flow][..40]);
    text.push_str("\nnot json\n");
    // An enum value by a name this build does not know, and by a number.
    text.push_str(&lines[first_flow].replace("\"FORWARDED\"", "\"FUTURE_VERDICT\""));
    text.push('\n');
    text.push_str(&lines[first_flow].replace("\"FORWARDED\"", "99"));
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap();
    for extra in [&[][..], &["--last", "10"][..]] {
        let mut args = vec![
            "observe",
            "--input-file",
            p,
            "--color",
            "never",
            "-o",
            "compact",
        ];
        args.extend_from_slice(extra);
        let out = webb(&args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{extra:?}: {stderr}");
        // Every readable line is printed, the number kept as Hubble keeps it.
        assert_eq!(stdout.lines().count(), 4, "{extra:?}: {stdout}");
        assert!(
            stdout.lines().nth(2).unwrap().contains("VERDICT_UNKNOWN"),
            "{stdout}"
        );
        assert!(stdout.lines().nth(3).unwrap().contains(" 99 "), "{stdout}");
        // One warning about what this build does not know, one per bad line.
        assert_eq!(
            stderr
                .matches("level=WARN msg=\"unknown field detected")
                .count(),
            1,
            "{stderr}"
        );
        assert!(stderr.contains("future_field"), "{stderr}");
        assert_eq!(
            stderr
                .matches("msg=\"Failed to unmarshal json to flow\"")
                .count(),
            2,
            "{stderr}"
        );
        assert!(stderr.contains("line=\"not json\""), "{stderr}");
    }
    let _ = std::fs::remove_file(&path);
}
