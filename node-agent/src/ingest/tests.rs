use std::sync::Mutex;

use node_agent_ebpf::{FlowEvent, FlowKey, emit, kind, point, v4_mapped};
use webb_proto::observer::get_flows_response::ResponseTypes;

use super::*;
use crate::{endpoints::EndpointTable, kernel::DropReasons, observer::Query, policy};

fn decoder() -> Decoder {
    let table = EndpointTable::parse(
        "endpoints:\n  - {namespace: shop, pod: db-0, labels: {app: db}, ips: [10.99.0.12]}\n",
    )
    .unwrap();
    let compiled = policy::compile(&[], &table);
    Decoder::new(Context {
        node_name: "n1".into(),
        endpoints: Arc::new(table),
        policy: Arc::new(compiled),
        drop_reasons: Arc::new(DropReasons::default()),
    })
}

fn record(i: u64) -> Vec<u8> {
    let ev = FlowEvent {
        ts_ns: 1_000 + i,
        packets: 1,
        bytes: 60,
        key: FlowKey {
            src: v4_mapped([10, 99, 0, 12]),
            dst: v4_mapped([10, 99, 0, 13]),
            sport: 40_000 + i as u16,
            dport: 5432,
            proto: 6,
            point: point::TC_EGRESS,
            _pad: [0; 2],
        },
        kind: kind::TRACE,
        emit: emit::NEW,
        ip_version: 4,
        ..Default::default()
    };
    record_bytes(&ev).to_vec()
}

/// A sink that remembers what it was given.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(u64, Item)>>>);

impl FlowSink for Seen {
    fn accept(&mut self, first_seq: u64, items: &[Item]) {
        let mut v = self.0.lock().unwrap();
        for (i, item) in items.iter().enumerate() {
            v.push((first_seq + i as u64, item.clone()));
        }
    }
}

fn source(records: Vec<Vec<u8>>) -> MadeRecords<impl FnMut() -> Option<Vec<u8>>> {
    let mut it = records.into_iter();
    MadeRecords {
        make: move || it.next(),
        counters: SourceCounters::default(),
    }
}

#[test]
fn every_sink_sees_every_item_numbered_in_order() {
    let hub = Arc::new(Hub::new(100));
    let seen = Seen::default();
    let mut p = Pipeline::new(
        decoder(),
        hub.clone(),
        vec![Box::new(seen.clone()), Box::new(hub.clone())],
    )
    .starting_at(41);
    let mut src = source((0..(BATCH as u64 + 5)).map(record).collect());
    assert_eq!(p.step(&mut src), BATCH);
    assert_eq!(p.step(&mut src), 5);
    assert_eq!(p.step(&mut src), 0);
    let seen = seen.0.lock().unwrap();
    assert_eq!(seen.len(), BATCH + 5);
    assert!(
        seen.iter()
            .enumerate()
            .all(|(i, (seq, _))| *seq == 41 + i as u64)
    );
    assert_eq!(p.next_seq, 41 + BATCH as u64 + 5);
    // The ring numbered its items the same way.
    let snap = hub.query(&Query::default());
    assert_eq!(snap.ring_first_seq, 41 + BATCH as u64 + 5 - 100);
    assert_eq!(hub.status().seen_flows, BATCH as u64 + 5);
}

#[test]
fn undecodable_records_and_a_full_source_become_lost_events() {
    let hub = Arc::new(Hub::new(100));
    let seen = Seen::default();
    let mut p = Pipeline::new(decoder(), hub.clone(), vec![Box::new(seen.clone())]);
    let mut src = source(vec![record(1), vec![1, 2, 3], vec![], record(2)]);
    assert_eq!(p.step(&mut src), 4);
    src.counters.ring_full = 7;
    p.tick(&mut src);
    let seen = seen.0.lock().unwrap();
    let kinds: Vec<_> = seen
        .iter()
        .map(|(_, i)| match &i.response_types {
            Some(ResponseTypes::Flow(_)) => "flow".to_owned(),
            Some(ResponseTypes::LostEvents(l)) => format!("lost {}", l.num_events_lost),
            _ => "other".to_owned(),
        })
        .collect();
    assert_eq!(kinds, ["flow", "flow", "lost 9"]);
    assert_eq!(hub.counters.lost_events.load(Ordering::Relaxed), 9);
    drop(seen);
    // Counted once: the next tick reports only what is new.
    p.tick(&mut src);
    assert_eq!(hub.counters.lost_events.load(Ordering::Relaxed), 9);
}

#[test]
fn a_new_context_is_taken_up_on_the_next_drain() {
    let hub = Arc::new(Hub::new(100));
    let seen = Seen::default();
    let context = Arc::new(RwLock::new(decoder().ctx));
    let generation = Arc::new(AtomicU64::new(0));
    let mut p =
        Pipeline::new(decoder(), hub, vec![Box::new(seen.clone())]).with_updates(ContextUpdates {
            context: context.clone(),
            generation: generation.clone(),
        });
    context.write().unwrap().node_name = "n2".into();
    generation.fetch_add(1, Ordering::Release);
    p.step(&mut source(vec![record(1)]));
    assert_eq!(seen.0.lock().unwrap()[0].1.node_name, "n2");
}
