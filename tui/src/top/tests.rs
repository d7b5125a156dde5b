use webb_proto::analysis::{TopCounts, TopPair, TopValue};

use super::*;

fn pair(src: &str, dst: &str, port: &str, flows: u64, bytes: u64) -> TopPair {
    TopPair {
        keys: vec![
            TopValue {
                source: src.into(),
                destination: dst.into(),
                pair: String::new(),
            },
            TopValue {
                pair: port.into(),
                ..Default::default()
            },
        ],
        flows,
        forward_sent: Some(TopCounts {
            packets: flows,
            bytes,
        }),
        // Delivered saw fewer (the sender's side counts).
        forward_delivered: Some(TopCounts {
            packets: flows / 2,
            bytes: bytes / 2,
        }),
        ..Default::default()
    }
}

fn answer() -> TopResponse {
    TopResponse {
        pairs: vec![
            pair("shop/web", "shop/db", "5432/TCP", 10, 2048),
            pair("shop/web", "evil\x1b[2J\tname", "53/UDP", 40, 100),
            pair("shop/cart", "shop/db", "", 10, 4096),
        ],
        nodes: vec!["a".into(), "b".into()],
        unavailable_nodes: vec!["c".into()],
        flows_counted: 60,
        flows_gone: 5,
        ..Default::default()
    }
}

fn span(live: bool) -> Span {
    let until = DateTime::from_timestamp(1_700_000_010, 0);
    Span {
        since: DateTime::from_timestamp(1_700_000_000, 0),
        until,
        live,
    }
}

#[test]
fn the_table_ranks_pairs_and_escapes_names() {
    let by = [By::Workload, By::Port];
    let t = table(&answer(), &by, SortBy::Bytes, 0, &span(false));
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[0].starts_with("Window 2023-11-14T22:13:20Z .. 2023-11-14T22:13:30Z (10s), 2 node(s), 60 flows; unavailable: c; 5 flows of the window no longer held"),
        "{t}"
    );
    let header: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "SOURCE",
            "DESTINATION",
            "PORT",
            "FLOWS",
            "BYTES",
            "PACKETS",
            "DROPS",
            "ERRORS",
            "P95"
        ]
    );
    // By bytes: cart (4 KiB), then web->db (2 KiB), then the 100 B one.
    assert!(lines[3].starts_with("shop/cart"), "{t}");
    assert!(lines[3].contains("4.0 KiB"), "{t}");
    assert!(
        lines[3].contains(" - "),
        "an empty pair-wide value shows as -: {t}"
    );
    assert!(lines[4].contains("5432/TCP"), "{t}");
    assert!(!t.contains('\x1b'), "no escape reaches the terminal: {t:?}");
    assert!(lines[5].contains("evil\\u{1b}[2J\\u{9}name"), "{t}");

    let by_flows = table(&answer(), &by, SortBy::Flows, 1, &span(false));
    let lines: Vec<&str> = by_flows.lines().collect();
    assert!(lines[3].contains("53/UDP"), "{by_flows}");
    assert_eq!(lines.last(), Some(&"(2 more pairs)"));
}

#[test]
fn live_figures_are_rates_over_the_window() {
    let t = table(
        &answer(),
        &[By::Workload, By::Port],
        SortBy::Flows,
        0,
        &span(true),
    );
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("Live "), "{t}");
    assert!(
        lines[2].contains("FLOWS/S") && lines[2].contains("BYTES/S"),
        "{t}"
    );
    // 40 flows, 40 packets and 100 bytes in 10 s.
    let row: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(
        row[..3],
        ["shop/web", "evil\\u{1b}[2J\\u{9}name", "53/UDP"],
        "{t}"
    );
    assert_eq!(row[3..], ["4.0", "10", "B/s", "4.0", "0", "0", "-"], "{t}");
}

#[test]
fn json_is_one_line_with_every_pair() {
    let line = json_line(&answer(), &[By::Workload, By::Port], &span(false));
    assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let pairs = v["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 3);
    assert_eq!(pairs[0]["source"]["workload"], "shop/cart");
    assert_eq!(pairs[0]["bytes"], 4096);
    assert_eq!(pairs[0]["bytes_per_second"], 409.6);
    assert_eq!(pairs[1]["port"], "5432/TCP");
    assert_eq!(pairs[2]["destination"]["workload"], "evil\x1b[2J\tname");
    assert!(!line.contains('\x1b'), "JSON escapes control characters");
    assert_eq!(v["unavailable_nodes"][0], "c");
    assert_eq!(v["flows_gone"], 5);
}
