use std::time::Duration;

use webb_proto::{
    flow::Verdict,
    json,
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
};

use super::*;
use crate::ingest::FlowSink as _;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("webb-flowlogs-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn flow(k: i64, verdict: Verdict) -> Item {
    super::super::tests::flow(k, "shop", verdict)
}

/// Every line of a log, waiting for its writer (up to 3 s) for `n` lines.
fn lines(path: &Path, n: usize) -> Vec<GetFlowsResponse> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        let got: Vec<GetFlowsResponse> =
            text.lines().map(|l| json::parse_line(l).unwrap()).collect();
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn verdicts(rs: &[GetFlowsResponse]) -> Vec<i32> {
    rs.iter()
        .filter_map(|r| match &r.response_types {
            Some(ResponseTypes::Flow(f)) => Some(f.verdict),
            _ => None,
        })
        .collect()
}

/// Writes the config and makes the sink read it on its next batch.
fn rewrite(d: &mut Dynamic, text: &str) {
    fs::write(d.path(), text).unwrap();
    d.next_read = Instant::now();
}

#[test]
fn named_logs_start_change_and_stop_with_the_file() {
    let dir = dir("change");
    let (all, denied) = (dir.join("all.log"), dir.join("denied.log"));
    let config = dir.join("flowlogs.yaml");
    fs::write(
        &config,
        format!(
            "flowLogs:\n  - name: all\n    filePath: {}\n  - name: denied\n    filePath: {}\n    includeFilters:\n      - verdict: [DROPPED]\n    fieldMask: [time, verdict]\n",
            all.display(),
            denied.display()
        ),
    )
    .unwrap();
    let counters = Arc::new(Counters::default());
    let mut d = Dynamic::start(config.clone(), counters.clone());
    assert_eq!(d.running(), ["all", "denied"]);
    d.accept(0, &[flow(1, Verdict::Forwarded), flow(2, Verdict::Dropped)]);
    assert_eq!(verdicts(&lines(&all, 2)), [1, 2]);
    let masked = lines(&denied, 1);
    assert_eq!(verdicts(&masked), [2]);
    let Some(ResponseTypes::Flow(f)) = &masked[0].response_types else {
        unreachable!()
    };
    assert!(
        f.source.is_none(),
        "the field mask keeps time and verdict only"
    );

    // "all" goes, "denied" now takes forwarded flows too: restarted.
    rewrite(
        &mut d,
        &format!(
            "flowLogs:\n  - name: denied\n    filePath: {}\n    excludeFilters:\n      - verdict: [DROPPED]\n",
            denied.display()
        ),
    );
    d.accept(2, &[flow(3, Verdict::Forwarded), flow(4, Verdict::Dropped)]);
    assert_eq!(d.running(), ["denied"]);
    assert_eq!(verdicts(&lines(&denied, 2)), [2, 1]);
    assert_eq!(
        verdicts(&lines(&all, 2)),
        [1, 2],
        "a stopped log is left as it was"
    );

    // A bad file changes nothing; nor does a log named twice.
    let (a, b) = (dir.join("a.log"), dir.join("b.log"));
    let (a, b) = (a.display(), b.display());
    for bad in [
        "flowLogs: [{name: x}]".to_owned(),
        format!("flowLogs:\n  - {{name: a, filePath: {a}}}\n  - {{name: a, filePath: {b}}}\n"),
        format!("flowLogs:\n  - {{name: a, filePath: {a}}}\n  - {{name: b, filePath: {a}}}\n"),
        format!("flowLogs:\n  - {{name: a, filePath: {a}, includeFilters: [{{source_pod: 5}}]}}\n"),
        format!("flowLogs:\n  - {{name: a, filePath: {a}, fieldMask: [no_such_field]}}\n"),
        format!("flowLogs:\n  - {{name: a, filePath: {a}, end: tomorrow}}\n"),
        format!("flowLogs:\n  - {{name: a, filePath: {a}, colour: red}}\n"),
        "not: [yaml".to_owned(),
    ] {
        rewrite(&mut d, &bad);
        d.accept(4, &[flow(5, Verdict::Forwarded)]);
        assert_eq!(d.running(), ["denied"], "{bad}");
    }
    assert_eq!(
        verdicts(&lines(&denied, 10)),
        [2, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    );
    assert!(!dir.join("a.log").exists() && !dir.join("b.log").exists());

    // An end in the past stops the log; a missing file means none.
    rewrite(
        &mut d,
        &format!(
            "flowLogs:\n  - name: denied\n    filePath: {}\n    end: \"2020-01-01T00:00:00Z\"\n",
            denied.display()
        ),
    );
    d.accept(5, &[flow(6, Verdict::Forwarded)]);
    assert!(d.running().is_empty());
    fs::remove_file(&config).unwrap();
    d.next_read = Instant::now();
    d.accept(6, &[flow(7, Verdict::Forwarded)]);
    assert!(d.running().is_empty());
    assert_eq!(counters.exported.load(Ordering::Relaxed), 12);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_log_whose_end_comes_stops_writing() {
    let dir = dir("end");
    let log = dir.join("soon.log");
    let config = dir.join("flowlogs.yaml");
    let end = chrono::Utc::now() + chrono::Duration::milliseconds(300);
    fs::write(
        &config,
        format!(
            "flowLogs:\n  - name: soon\n    filePath: {}\n    end: \"{}\"\n",
            log.display(),
            end.to_rfc3339()
        ),
    )
    .unwrap();
    let mut d = Dynamic::start(config, Arc::new(Counters::default()));
    d.accept(0, &[flow(1, Verdict::Forwarded)]);
    std::thread::sleep(Duration::from_millis(400));
    d.accept(1, &[flow(2, Verdict::Forwarded)]);
    assert!(d.running().is_empty());
    assert_eq!(lines(&log, 1).len(), 1, "only the flow before the end");
    fs::remove_dir_all(&dir).unwrap();
}
