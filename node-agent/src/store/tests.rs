use webb_proto::{
    endpoint::EndpointData,
    filter::FlowFilters,
    flow::{Flow, FlowFilter, Layer4, Tcp, Verdict, layer4},
};

use super::*;
use crate::observer::flow_item;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("webb-store-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

fn opts(d: &Path) -> Options {
    Options {
        dir: d.to_owned(),
        max_size: 1 << 30,
        max_age: Duration::from_secs(86_400 * 365 * 100),
    }
}

fn flow(sec: i64, port: u32, verdict: Verdict) -> Item {
    flow_item(
        Flow {
            time: Some(Timestamp {
                seconds: sec,
                nanos: 0,
            }),
            verdict: verdict as i32,
            source: Some(
                EndpointData {
                    namespace: "shop".into(),
                    pod_name: format!("pod-{sec}"),
                    ..Default::default()
                }
                .into(),
            ),
            l4: Some(Layer4 {
                protocol: Some(layer4::Protocol::Tcp(Tcp {
                    source_port: 40_000,
                    destination_port: port,
                    flags: None,
                })),
            }),
            ..Default::default()
        },
        "n1",
    )
}

fn secs(items: &[Item]) -> Vec<i64> {
    items.iter().map(|i| i.time.unwrap().seconds).collect()
}

fn all() -> Query {
    Query::default()
}

fn since(s: i64) -> Query {
    Query {
        since: Some(Timestamp {
            seconds: s,
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// Appends flows at seconds `range`, numbered from the store's next.
fn append(store: &FlowStore, range: std::ops::Range<i64>) {
    let items: Vec<Item> = range.map(|s| flow(s, 80, Verdict::Forwarded)).collect();
    store.append(store.next_seq(), &items);
}

#[test]
fn reopened_store_holds_what_was_written_and_continues_the_numbers() {
    let d = dir("reopen");
    let store = FlowStore::open(opts(&d)).unwrap();
    assert_eq!(store.next_seq(), 0);
    append(&store, 1..11);
    // Served from memory before the writer wrote it.
    assert_eq!(
        secs(&store.read(&all(), 10, usize::MAX, false).0),
        (1..11).collect::<Vec<_>>()
    );
    store.close();
    drop(store);

    let store = FlowStore::open(opts(&d)).unwrap();
    assert_eq!(store.next_seq(), 10);
    append(&store, 11..16);
    let (items, missing) = store.read(&all(), 15, usize::MAX, false);
    assert_eq!(secs(&items), (1..16).collect::<Vec<_>>());
    assert_eq!(missing, 0);
    // Only numbers below `before`: the ring holds the rest.
    assert_eq!(
        secs(&store.read(&all(), 12, usize::MAX, false).0),
        (1..13).collect::<Vec<_>>()
    );
    // The newest three below 12, oldest first.
    assert_eq!(secs(&store.read(&all(), 12, 3, true).0), [10, 11, 12]);
    // The first three from second 5.
    assert_eq!(secs(&store.read(&since(5), 15, 3, false).0), [5, 6, 7]);
    let st = store.status();
    assert_eq!(st.items, 15);
    assert_eq!(st.oldest.unwrap().seconds, 1);
    assert_eq!(st.newest.unwrap().seconds, 15);
    store.close();
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn a_second_agent_on_the_directory_is_refused() {
    let d = dir("lock");
    let store = FlowStore::open(opts(&d)).unwrap();
    let err = FlowStore::open(opts(&d)).err().unwrap().to_string();
    assert!(err.contains("in use by another webb-agent"), "{err}");
    assert!(err.contains(&std::process::id().to_string()), "{err}");
    store.close();
    drop(store);
    FlowStore::open(opts(&d)).unwrap().close();
    let _ = fs::remove_dir_all(&d);
}

fn segments(d: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wfs"))
        .collect();
    v.sort();
    v
}

/// Writes two blocks (two closes) into one segment.
fn two_blocks(d: &Path) {
    let store = FlowStore::open(opts(d)).unwrap();
    append(&store, 1..6);
    store.close();
    drop(store);
    let store = FlowStore::open(opts(d)).unwrap();
    append(&store, 6..11);
    store.close();
}

#[test]
fn a_torn_tail_is_cut_and_writing_goes_on() {
    let d = dir("torn");
    two_blocks(&d);
    let seg = segments(&d).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    // A crash in the middle of the second block.
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let store = FlowStore::open(opts(&d)).unwrap();
    assert!(store.counters().torn_bytes.load(Ordering::Relaxed) > 0);
    assert_eq!(store.next_seq(), 5, "the second block is gone whole");
    append(&store, 20..22);
    store.close();
    drop(store);
    let store = FlowStore::open(opts(&d)).unwrap();
    assert_eq!(
        secs(&store.read(&all(), 7, usize::MAX, false).0),
        [1, 2, 3, 4, 5, 20, 21]
    );
    store.close();
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn a_corrupt_block_is_skipped_and_counted_never_decoded() {
    let d = dir("corrupt");
    two_blocks(&d);
    let seg = segments(&d).pop().unwrap();
    // Flip a byte in the first block's payload.
    let mut bytes = fs::read(&seg).unwrap();
    bytes[8 + HEADER + 3] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();
    let store = FlowStore::open(opts(&d)).unwrap();
    let (items, _) = store.read(&all(), 10, usize::MAX, false);
    assert_eq!(secs(&items), [6, 7, 8, 9, 10]);
    assert_eq!(store.counters().corrupt_blocks.load(Ordering::Relaxed), 1);
    store.close();
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn retention_removes_the_oldest_segments_first() {
    let d = dir("retain");
    let mut o = opts(&d);
    // Segments of 64 KiB at least: a few blocks of incompressible names.
    o.max_size = 256 << 10;
    let store = FlowStore::open(o.clone()).unwrap();
    let mut n = 0;
    for round in 0..40 {
        let items: Vec<Item> = (0..500)
            .map(|i| {
                let mut f = flow(round * 1000 + i, 80, Verdict::Forwarded);
                if let Some(ResponseTypes::Flow(fl)) = &mut Arc::make_mut(&mut f).response_types
                    && let Some(src) = &mut fl.source
                {
                    src.make_mut().pod_name = uuid::Uuid::new_v4().to_string();
                }
                f
            })
            .collect();
        store.append(n, &items);
        n += 500;
        // One block per round.
        store.inner.seal(&mut store.inner.lock());
        while !store.inner.lock().waiting.is_empty() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let st = store.status();
    assert!(st.bytes <= o.max_size, "{} bytes on disk", st.bytes);
    assert!(st.segments > 1);
    let (items, missing) = store.read(&all(), n, usize::MAX, false);
    assert!(items.len() < 20_000 && !items.is_empty());
    assert_eq!(items.len() as u64 + missing, n, "what is gone is counted");
    // What remains is the newest.
    assert_eq!(items.last().unwrap().time.unwrap().seconds, 39_499);
    store.close();
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn filters_skip_blocks_by_their_summary() {
    let d = dir("summary");
    let store = FlowStore::open(opts(&d)).unwrap();
    store.append(
        0,
        &(1..6)
            .map(|s| flow(s, 80, Verdict::Forwarded))
            .collect::<Vec<_>>(),
    );
    store.inner.seal(&mut store.inner.lock());
    store.append(
        5,
        &(6..9)
            .map(|s| flow(s, 5432, Verdict::Dropped))
            .collect::<Vec<_>>(),
    );
    store.close();
    let q = |f: FlowFilter| Query {
        filters: FlowFilters::compile(&[f], &[]).unwrap(),
        ..Default::default()
    };
    let dropped = q(FlowFilter {
        verdict: vec![Verdict::Dropped as i32],
        ..Default::default()
    });
    assert_eq!(
        secs(&store.read(&dropped, 8, usize::MAX, false).0),
        [6, 7, 8]
    );
    assert_eq!(
        store
            .counters()
            .blocks_skipped_by_summary
            .load(Ordering::Relaxed),
        1
    );
    let port = q(FlowFilter {
        destination_port: vec!["80".into()],
        ..Default::default()
    });
    assert_eq!(
        secs(&store.read(&port, 8, usize::MAX, false).0),
        [1, 2, 3, 4, 5]
    );
    let other_ns = q(FlowFilter {
        source_pod: vec!["kube-system/".into()],
        ..Default::default()
    });
    assert!(store.read(&other_ns, 8, usize::MAX, false).0.is_empty());
    assert_eq!(
        store
            .counters()
            .blocks_skipped_by_summary
            .load(Ordering::Relaxed),
        4
    );
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn keys_let_a_query_decode_only_the_items_that_may_pass() {
    let d = dir("keys");
    let store = FlowStore::open(opts(&d)).unwrap();
    // One block, ports and verdicts mixed: its summary cannot rule
    // anything out. Every tenth flow goes to the database, and is dropped.
    let items: Vec<Item> = (1..=100)
        .map(|s| match s % 10 {
            0 => flow(s, 5432, Verdict::Dropped),
            _ => flow(s, 80, Verdict::Forwarded),
        })
        .collect();
    store.append(0, &items);
    store.close();
    let q = |f: FlowFilter| Query {
        filters: FlowFilters::compile(&[f], &[]).unwrap(),
        ..Default::default()
    };
    let c = store.counters();
    let db = q(FlowFilter {
        destination_port: vec!["5432".into()],
        ..Default::default()
    });
    let got = store.read(&db, 100, usize::MAX, false).0;
    assert_eq!(secs(&got), (1..=10).map(|k| k * 10).collect::<Vec<_>>());
    assert_eq!(c.items_decoded.load(Ordering::Relaxed), 10);
    assert_eq!(c.items_skipped_by_keys.load(Ordering::Relaxed), 90);
    // The newest-N path reads the same way.
    assert_eq!(secs(&store.read(&db, 100, 2, true).0), [90, 100]);
    // No item of the block may pass (though its summary holds port 80 and
    // a drop): its items are not even decompressed.
    let dropped = q(FlowFilter {
        destination_port: vec!["80".into()],
        verdict: vec![Verdict::Dropped as i32],
        ..Default::default()
    });
    let before = c.items_decoded.load(Ordering::Relaxed);
    assert!(store.read(&dropped, 100, usize::MAX, false).0.is_empty());
    assert_eq!(c.blocks_skipped_by_keys.load(Ordering::Relaxed), 1);
    assert_eq!(c.items_decoded.load(Ordering::Relaxed), before);
    // Unfiltered, everything is decoded.
    assert_eq!(store.read(&all(), 100, usize::MAX, false).0.len(), 100);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn a_store_written_before_keys_is_still_read() {
    let d = dir("unkeyed");
    fs::create_dir_all(&d).unwrap();
    // A `WFB1` segment as the first format wrote it: items only.
    let items: Vec<Item> = (1..=5).map(|s| flow(s, 80, Verdict::Forwarded)).collect();
    let mut raw = Vec::new();
    let mut summary = Summary::default();
    for i in &items {
        i.encode_length_delimited(&mut raw).unwrap();
        if let Some(ResponseTypes::Flow(f)) = &i.response_types {
            summary.add(f);
        }
    }
    let payload = zstd::bulk::compress(&raw, 3).unwrap();
    let meta = BlockMeta {
        offset: 8,
        len: payload.len() as u32,
        raw_len: raw.len() as u32,
        count: 5,
        first_seq: 0,
        min_ns: 1_000_000_000,
        max_ns: 5_000_000_000,
        summary,
        keyed: false,
        referenced: false,
    };
    let mut file = SEGMENT_MAGIC.to_vec();
    file.extend_from_slice(&meta.encode(crc32fast::hash(&payload)));
    file.extend_from_slice(&payload);
    fs::write(d.join(format!("{:020}.wfs", 0)), file).unwrap();
    let store = FlowStore::open(opts(&d)).unwrap();
    assert_eq!(
        secs(&store.read(&all(), 5, usize::MAX, false).0),
        [1, 2, 3, 4, 5]
    );
    let port = Query {
        filters: FlowFilters::compile(
            &[FlowFilter {
                destination_port: vec!["80".into()],
                ..Default::default()
            }],
            &[],
        )
        .unwrap(),
        ..Default::default()
    };
    assert_eq!(store.read(&port, 5, usize::MAX, false).0.len(), 5);
    // New blocks follow it, keyed.
    append(&store, 6..8);
    store.close();
    assert_eq!(
        secs(&store.read(&port, 7, usize::MAX, false).0),
        [1, 2, 3, 4, 5, 6, 7]
    );
    assert_eq!(store.counters().corrupt_blocks.load(Ordering::Relaxed), 0);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn history_meets_the_ring_with_no_gap_or_overlap() {
    let d = dir("seam");
    let store = FlowStore::open(opts(&d)).unwrap();
    let hub = Hub::new(4);
    let items: Vec<Item> = (1..=10).map(|s| flow(s, 80, Verdict::Forwarded)).collect();
    store.append(0, &items);
    hub.publish_items(0, &items);
    let q = |number, first, since: Option<i64>| {
        secs(
            &history(
                &hub,
                Some(&store),
                &Query {
                    number,
                    first,
                    since: since.map(|s| Timestamp {
                        seconds: s,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
            )
            .collect(),
        )
    };
    assert_eq!(q(0, false, None), (1..=10).collect::<Vec<_>>());
    assert_eq!(q(6, false, None), (5..=10).collect::<Vec<_>>());
    assert_eq!(q(3, false, None), [8, 9, 10], "the ring alone");
    assert_eq!(q(3, true, None), [1, 2, 3]);
    assert_eq!(q(0, false, Some(3)), (3..=10).collect::<Vec<_>>());
    let h = history(&hub, Some(&store), &since(1));
    assert_eq!(
        h.snapshot.overwritten, 0,
        "the store had what the ring overwrote"
    );
    assert_eq!(secs(&h.collect()), (1..=10).collect::<Vec<_>>());
    store.close();
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn a_segment_replaced_under_the_writer_is_left_and_the_lost_block_counted() {
    // The segment file replaced under the writer (a clean-up script, an
    // operator): its first block is gone, and counted as such.
    let d = dir("full");
    let store = FlowStore::open(opts(&d)).unwrap();
    append(&store, 1..3);
    store.inner.seal(&mut store.inner.lock());
    while !store.inner.lock().waiting.is_empty() {
        std::thread::sleep(Duration::from_millis(2));
    }
    let seg = segments(&d).pop().unwrap();
    fs::remove_file(&seg).unwrap();
    fs::create_dir(&seg).unwrap();
    // The writer finds its segment gone and starts another.
    append(&store, 3..5);
    store.close();
    drop(store);
    let store2_items = {
        let _ = fs::remove_dir(&seg);
        let store = FlowStore::open(opts(&d)).unwrap();
        let (items, missing) = store.read(&all(), 4, usize::MAX, false);
        store.close();
        (secs(&items), missing)
    };
    assert_eq!(
        store2_items,
        (vec![3, 4], 2),
        "the lost first block is counted"
    );
    let _ = fs::remove_dir_all(&d);
}

/// A full disk (a 512 KiB tmpfs, so root): writes fail, are counted as not
/// stored and warned about once, and writing resumes once there is room.
#[test]
fn a_full_disk_is_counted_and_writing_resumes_when_there_is_room() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let d = dir("enospc");
    fs::create_dir_all(&d).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(&d)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs");
        return;
    }
    let store = FlowStore::open(opts(&d)).unwrap();
    // Fill the disk but for a few KiB.
    let filler = d.join("filler");
    let mut f = File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    let block = |first: i64| -> Vec<Item> {
        (first..first + 200)
            .map(|s| {
                let mut item = flow(s, 80, Verdict::Forwarded);
                if let Some(ResponseTypes::Flow(fl)) = &mut Arc::make_mut(&mut item).response_types
                    && let Some(src) = &mut fl.source
                {
                    src.make_mut().pod_name = uuid::Uuid::new_v4().to_string();
                }
                item
            })
            .collect()
    };
    let wait_written = |store: &FlowStore| {
        store.inner.seal(&mut store.inner.lock());
        while !store.inner.lock().waiting.is_empty() {
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    store.append(0, &block(0));
    wait_written(&store);
    assert_eq!(store.counters().not_stored.load(Ordering::Relaxed), 200);
    assert_eq!(store.counters().write_errors.load(Ordering::Relaxed), 1);
    // Room again.
    fs::remove_file(&filler).unwrap();
    store.append(200, &block(200));
    wait_written(&store);
    assert_eq!(store.counters().not_stored.load(Ordering::Relaxed), 200);
    let (items, missing) = store.read(&all(), 400, usize::MAX, false);
    assert_eq!(items.len(), 200);
    assert_eq!(items[0].time.unwrap().seconds, 200);
    assert_eq!(missing, 200, "the block that did not fit is reported");
    store.close();
    drop(store);
    let _ = std::process::Command::new("umount").arg(&d).status();
    let _ = fs::remove_dir_all(&d);
}

/// Three blocks in one segment from one writer: a second apart, as a slow
/// node's seconds.
fn three_small_blocks(d: &Path) {
    let store = FlowStore::open(opts(d)).unwrap();
    for range in [1..4, 4..7, 7..10] {
        append(&store, range);
        std::thread::sleep(FLUSH + Duration::from_millis(300));
    }
    store.close();
}

#[test]
fn small_blocks_are_compressed_with_their_segments_first_block_and_read_back() {
    let d = dir("referenced");
    three_small_blocks(&d);
    let seg = segments(&d).pop().unwrap();
    let bytes = fs::read(&seg).unwrap();
    let magic = |m: &[u8]| bytes.windows(4).filter(|w| *w == m).count();
    assert_eq!(
        (magic(b"WFB2"), magic(b"WFB3")),
        (1, 2),
        "the first block plain, then two with it"
    );
    let store = FlowStore::open(opts(&d)).unwrap();
    assert_eq!(
        secs(&store.read(&all(), 9, usize::MAX, false).0),
        [1, 2, 3, 4, 5, 6, 7, 8, 9]
    );
    // Filtered reads decode by key within referenced blocks too.
    assert_eq!(
        secs(&store.read(&since(5), 9, usize::MAX, false).0),
        [5, 6, 7, 8, 9]
    );
    assert_eq!(store.counters().corrupt_blocks.load(Ordering::Relaxed), 0);
    store.close();
    drop(store);

    // The reference corrupt: its blocks cannot be read; they are skipped
    // and counted, and nothing else is lost or made up.
    let mut bytes = fs::read(&seg).unwrap();
    bytes[8 + HEADER + 3] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();
    let store = FlowStore::open(opts(&d)).unwrap();
    let (items, _) = store.read(&all(), 9, usize::MAX, false);
    assert!(items.is_empty(), "{:?}", secs(&items));
    assert_eq!(store.counters().corrupt_blocks.load(Ordering::Relaxed), 3);
    store.close();
    let _ = fs::remove_dir_all(&d);
}
