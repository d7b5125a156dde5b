use webb_proto::{
    endpoint::EndpointData,
    flow::{Flow, LostEvent, Verdict},
    wkt::Timestamp,
};

use super::*;
use crate::{ingest::FlowSink as _, observer::flow_item};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("webb-export-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

/// A flow of pod `pod-K` in `ns` (the dynamic logs' tests use it too).
pub(super) fn flow(k: i64, ns: &str, verdict: Verdict) -> Item {
    flow_item(
        Flow {
            time: Some(Timestamp {
                seconds: 1_700_000_000 + k,
                nanos: 0,
            }),
            verdict: verdict as i32,
            source: Some(
                EndpointData {
                    namespace: ns.into(),
                    pod_name: format!("pod-{k}"),
                    ..Default::default()
                }
                .into(),
            ),
            ..Default::default()
        },
        "n1",
    )
}

fn opts(target: Target) -> Options {
    Options {
        target,
        max_size: 10 << 20,
        max_backups: 5,
        compress: false,
        filters: FlowFilters::default(),
        mask: None,
    }
}

fn lines(path: &Path) -> Vec<GetFlowsResponse> {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "a cut line");
    text.lines().map(|l| json::parse_line(l).unwrap()).collect()
}

fn pod_names(rs: &[GetFlowsResponse]) -> Vec<String> {
    rs.iter()
        .filter_map(|r| match &r.response_types {
            Some(ResponseTypes::Flow(f)) => Some(f.source.as_ref().unwrap().pod_name.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn flows_are_written_as_hubble_json_lines_that_read_back() {
    let d = dir("lines");
    let path = d.join("sub/events.log");
    let mut ex = Exporter::start(opts(Target::File(path.clone()))).unwrap();
    let items: Vec<Item> = (0..3)
        .map(|k| flow(k, "shop", Verdict::Forwarded))
        .collect();
    ex.accept(0, &items);
    let lost = Arc::new(GetFlowsResponse {
        node_name: "n1".into(),
        response_types: Some(ResponseTypes::LostEvents(LostEvent {
            num_events_lost: 7,
            ..Default::default()
        })),
        ..Default::default()
    });
    ex.accept(3, &[lost]);
    let c = ex.counters();
    drop(ex);
    let got = lines(&path);
    assert_eq!(got.len(), 4);
    assert_eq!(got[0], *items[0], "the line is the response");
    assert!(matches!(
        got[3].response_types,
        Some(ResponseTypes::LostEvents(_))
    ));
    // Exactly the text `-o json` prints.
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().next().unwrap(), json::to_line(&items[0]));
    assert_eq!(c.exported.load(Ordering::Relaxed), 4);
    // An agent started again appends.
    let mut ex = Exporter::start(opts(Target::File(path.clone()))).unwrap();
    ex.accept(4, &[flow(9, "shop", Verdict::Forwarded)]);
    drop(ex);
    assert_eq!(lines(&path).len(), 5);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn filters_and_field_mask_apply() {
    let d = dir("filters");
    let path = d.join("events.log");
    let allow = parse_filters("--export-allowlist", r#"{"source_pod":["shop/"]}"#).unwrap();
    let deny = parse_filters(
        "--export-denylist",
        r#"{"verdict":["DROPPED"]},{"source_pod":["shop/pod-2"]}"#,
    )
    .unwrap();
    assert_eq!(deny.len(), 2);
    let mut o = opts(Target::File(path.clone()));
    o.filters = FlowFilters::compile(&allow, &deny).unwrap();
    o.mask = parse_mask(&["time,source.pod_name".into(), "verdict".into()]).unwrap();
    let mut ex = Exporter::start(o).unwrap();
    ex.accept(
        0,
        &[
            flow(1, "shop", Verdict::Forwarded),
            flow(2, "shop", Verdict::Forwarded),
            flow(3, "kube-system", Verdict::Forwarded),
            flow(4, "shop", Verdict::Dropped),
            flow(5, "shop", Verdict::Forwarded),
        ],
    );
    drop(ex);
    let got = lines(&path);
    assert_eq!(pod_names(&got), ["pod-1", "pod-5"]);
    let ResponseTypes::Flow(f) = got[0].response_types.as_ref().unwrap() else {
        panic!()
    };
    assert!(f.time.is_some() && f.verdict == Verdict::Forwarded as i32);
    assert!(
        f.source.as_ref().unwrap().namespace.is_empty(),
        "masked out"
    );
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn bad_filters_and_masks_are_clear_errors() {
    let e = parse_filters("--export-allowlist", r#"{"source_pod": 3}"#).unwrap_err();
    assert!(format!("{e:#}").contains("--export-allowlist"), "{e:#}");
    assert!(
        parse_filters("--export-allowlist", "[{}, {\"verdict\":[\"DROPPED\"]}]")
            .unwrap()
            .len()
            == 2
    );
    assert!(
        parse_filters("--export-allowlist", "  ")
            .unwrap()
            .is_empty()
    );
    let e = parse_mask(&["source.nope".into()]).unwrap_err();
    assert!(format!("{e:#}").contains("source.nope"), "{e:#}");
}

#[test]
fn rotation_keeps_whole_lines_and_the_newest_backups() {
    let d = dir("rotate");
    let path = d.join("events.log");
    let mut o = opts(Target::File(path.clone()));
    // About six lines a file.
    let line = json::to_line(&flow(0, "shop", Verdict::Forwarded)).len() as u64 + 1;
    o.max_size = line * 6;
    o.max_backups = 3;
    let mut ex = Exporter::start(o.clone()).unwrap();
    let mut k = 0;
    for batch in 0..10 {
        // Batches of 4: a batch straddles rotations.
        let items: Vec<Item> = (0..4)
            .map(|_| {
                k += 1;
                flow(k, "shop", Verdict::Forwarded)
            })
            .collect();
        // No pause: rotations within one millisecond still get names
        // that sort as they were written.
        ex.accept(batch * 4, &items);
    }
    let c = ex.counters();
    drop(ex);
    let mut backups: Vec<PathBuf> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != &path)
        .collect();
    backups.sort();
    assert_eq!(backups.len(), 3, "{backups:?}");
    for b in &backups {
        let name = b.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("events-") && name.ends_with(".log"),
            "{name}"
        );
        assert!(fs::metadata(b).unwrap().len() <= line * 6);
    }
    // Every line is whole, in order, once; the oldest files are gone.
    let mut all = Vec::new();
    for b in backups.iter().chain([&path]) {
        all.extend(pod_names(&lines(b)));
    }
    let n: Vec<i64> = all
        .iter()
        .map(|p| p.trim_start_matches("pod-").parse().unwrap())
        .collect();
    assert_eq!(*n.last().unwrap(), 40);
    assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "{n:?}");
    assert!(c.rotations.load(Ordering::Relaxed) >= 5);
    assert_eq!(c.exported.load(Ordering::Relaxed), 40);
    assert_eq!(c.dropped.load(Ordering::Relaxed), 0);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn rotated_files_are_gzipped_when_asked() {
    use std::io::Read as _;
    let d = dir("gzip");
    let path = d.join("flows.json");
    let mut o = opts(Target::File(path.clone()));
    o.max_size = 1;
    o.compress = true;
    let mut ex = Exporter::start(o).unwrap();
    ex.accept(0, &[flow(1, "shop", Verdict::Forwarded)]);
    ex.accept(1, &[flow(2, "shop", Verdict::Forwarded)]);
    drop(ex);
    let gz: Vec<PathBuf> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".json.gz"))
        .collect();
    assert_eq!(gz.len(), 1, "{gz:?}");
    let mut text = String::new();
    flate2::read::GzDecoder::new(File::open(&gz[0]).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let first: Vec<GetFlowsResponse> = text.lines().map(|l| json::parse_line(l).unwrap()).collect();
    assert_eq!(pod_names(&first), ["pod-1"]);
    assert_eq!(pod_names(&lines(&path)), ["pod-2"]);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn a_file_moved_away_is_started_anew() {
    let d = dir("moved");
    let path = d.join("events.log");
    let mut ex = Exporter::start(opts(Target::File(path.clone()))).unwrap();
    ex.accept(0, &[flow(1, "shop", Verdict::Forwarded)]);
    std::thread::sleep(Duration::from_millis(200));
    fs::rename(&path, d.join("taken.log")).unwrap();
    std::thread::sleep(CHECK_PATH + Duration::from_millis(100));
    ex.accept(1, &[flow(2, "shop", Verdict::Forwarded)]);
    drop(ex);
    assert_eq!(pod_names(&lines(&d.join("taken.log"))), ["pod-1"]);
    assert_eq!(pod_names(&lines(&path)), ["pod-2"]);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn a_full_disk_drops_and_counts() {
    // A full disk: /dev/full fails every write.
    let mut ex = Exporter::start(opts(Target::File("/dev/full".into()))).unwrap();
    ex.accept(0, &[flow(1, "shop", Verdict::Forwarded)]);
    let c = ex.counters();
    drop(ex);
    assert_eq!(c.exported.load(Ordering::Relaxed), 0);
    assert_eq!(c.dropped.load(Ordering::Relaxed), 1);
    assert_eq!(c.write_errors.load(Ordering::Relaxed), 1);
}
