use webb_proto::flow::{FlowFilter, Verdict};

use super::*;

fn flow(sec: i64, verdict: Verdict) -> Flow {
    Flow {
        time: Some(Timestamp {
            seconds: sec,
            nanos: 0,
        }),
        verdict: verdict as i32,
        ..Default::default()
    }
}

fn publish(hub: &Hub, mut flows: Vec<Flow>) {
    hub.publish(&mut flows, "n1");
    assert!(flows.is_empty(), "the batch is drained");
}

fn secs(items: &[Item]) -> Vec<i64> {
    items.iter().map(|i| i.time.unwrap().seconds).collect()
}

fn dropped_only() -> FlowFilters {
    let f = FlowFilter {
        verdict: vec![Verdict::Dropped as i32],
        ..Default::default()
    };
    FlowFilters::compile(&[f], &[]).unwrap()
}

#[test]
fn last_first_since_until() {
    let hub = Hub::new(10);
    publish(&hub, (1..=5).map(|s| flow(s, Verdict::Forwarded)).collect());
    let q = |number, first, since: Option<i64>, until: Option<i64>| {
        secs(
            &hub.query(&Query {
                number,
                first,
                since: since.map(|s| Timestamp {
                    seconds: s,
                    nanos: 0,
                }),
                until: until.map(|s| Timestamp {
                    seconds: s,
                    nanos: 0,
                }),
                ..Default::default()
            })
            .history,
        )
    };
    assert_eq!(q(2, false, None, None), [4, 5]);
    assert_eq!(q(2, true, None, None), [1, 2]);
    assert_eq!(q(0, false, Some(3), None), [3, 4, 5]);
    assert_eq!(q(0, false, Some(2), Some(3)), [2, 3]);
    assert_eq!(q(0, false, None, None), [1, 2, 3, 4, 5]);
    let st = hub.status();
    assert_eq!((st.num_flows, st.max_flows, st.seen_flows), (5, 10, 5));
}

#[test]
fn overwritten_flows_are_reported() {
    let hub = Hub::new(3);
    publish(&hub, (1..=5).map(|s| flow(s, Verdict::Forwarded)).collect());
    let snap = hub.query(&Query {
        since: Some(Timestamp {
            seconds: 2,
            nanos: 0,
        }),
        ..Default::default()
    });
    assert_eq!(secs(&snap.history), [3, 4, 5]);
    assert_eq!(snap.overwritten, 1, "flow 2 was wanted but overwritten");
    let snap = hub.query(&Query {
        number: 5,
        ..Default::default()
    });
    assert_eq!(snap.overwritten, 2);
    let snap = hub.query(&Query {
        number: 2,
        ..Default::default()
    });
    assert_eq!(snap.overwritten, 0);
}

#[test]
fn follow_filters_and_reports_slow_subscribers() {
    let hub = Hub::new(100_000);
    let mut snap = hub.query(&Query {
        follow: true,
        filters: dropped_only(),
        ..Default::default()
    });
    let mut rx = snap.live.take().unwrap();
    publish(
        &hub,
        vec![flow(1, Verdict::Forwarded), flow(2, Verdict::Dropped)],
    );
    assert_eq!(rx.try_recv().unwrap().time.unwrap().seconds, 2);
    assert!(rx.try_recv().is_err(), "the forwarded flow is filtered out");

    // Overflow the queue without reading.
    let n = SUBSCRIBER_QUEUE as i64 + 100;
    publish(
        &hub,
        (0..n).map(|s| flow(10 + s, Verdict::Dropped)).collect(),
    );
    let mut got = 0;
    while rx.try_recv().is_ok() {
        got += 1;
    }
    assert_eq!(got, SUBSCRIBER_QUEUE);
    // The next matching flow first delivers the loss report.
    publish(&hub, vec![flow(99_999, Verdict::Dropped)]);
    let report = rx.try_recv().unwrap();
    match &report.response_types {
        Some(ResponseTypes::LostEvents(l)) => {
            assert_eq!(l.num_events_lost, 100);
            assert_eq!(l.source, LostEventSource::HubbleRingBuffer as i32);
        }
        other => panic!("expected lost events, got {other:?}"),
    }
    assert_eq!(rx.try_recv().unwrap().time.unwrap().seconds, 99_999);

    drop(rx);
    publish(&hub, vec![flow(100_000, Verdict::Dropped)]);
    assert!(
        hub.lock().subscribers.is_empty(),
        "closed subscribers are removed"
    );
}

#[test]
fn lost_events_reach_everyone() {
    let hub = Hub::new(10);
    let mut snap = hub.query(&Query {
        follow: true,
        filters: dropped_only(),
        ..Default::default()
    });
    let mut rx = snap.live.take().unwrap();
    hub.publish_lost(LostEventSource::PerfEventRingBuffer, 7, "n1");
    let item = rx.try_recv().unwrap();
    assert!(
        matches!(&item.response_types, Some(ResponseTypes::LostEvents(l)) if l.num_events_lost == 7)
    );
    assert_eq!(hub.counters.lost_events.load(Ordering::Relaxed), 7);
}
