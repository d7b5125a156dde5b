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

/// The ring's compact records give back, for any query, exactly the
/// responses published, in order: the query's answer equals filtering the
/// published list directly.
#[test]
fn compact_records_answer_as_the_published_flows_would() {
    use webb_proto::flow::{Ip, Layer4, Tcp, TcpFlags, Udp, layer4::Protocol};
    let ep = |ns: &str, pod: &str| {
        webb_proto::endpoint::Endpoint::from(webb_proto::shared::EndpointData {
            namespace: ns.into(),
            pod_name: pod.into(),
            ..Default::default()
        })
    };
    let (a, b) = (ep("shop", "a"), ep("db", "b"));
    let hub = Hub::new(5000);
    let mut published = Vec::new();
    for i in 0..6000u32 {
        let mut f = flow(1_700_000_000 + i64::from(i / 10), Verdict::Forwarded);
        f.uuid = uuid::Uuid::new_v4().hyphenated().to_string();
        if i % 7 == 0 {
            f.verdict = Verdict::Dropped as i32;
        }
        (f.source, f.destination) = if i % 2 == 0 {
            (Some(a.clone()), Some(b.clone()))
        } else {
            (Some(b.clone()), Some(a.clone()))
        };
        f.ip = Some(Ip {
            source: format!("10.0.0.{}", i % 2),
            destination: format!("10.0.0.{}", 1 - i % 2),
            ..Default::default()
        });
        f.l4 = Some(Layer4 {
            protocol: Some(if i % 3 == 0 {
                Protocol::Udp(Udp {
                    source_port: 1000 + i % 50,
                    destination_port: 53,
                })
            } else {
                Protocol::Tcp(Tcp {
                    source_port: 2000 + i % 300,
                    destination_port: 8080,
                    flags: Some(TcpFlags {
                        syn: i % 4 == 1,
                        ack: true,
                        ..Default::default()
                    }),
                })
            }),
        });
        if i % 1000 == 999 {
            // Not compactable: kept whole, among the records.
            f.uuid = "upper-or-odd".into();
        }
        f.webb_packets = u64::from(i % 9);
        f.webb_bytes = u64::from(i) * 3;
        f.node_name = "node".into();
        published.push(flow_item(f, "node"));
    }
    hub.publish_items(0, &published);
    // All but the odd ones are compact records.
    let st = hub.lock();
    let whole = st
        .ring
        .iter()
        .filter(|e| matches!(e, Entry::Other(_)))
        .count();
    assert_eq!(whole, 5, "of {}", st.ring.len());
    drop(st);
    let kept = &published[1000..];
    let filter = |f: FlowFilter| FlowFilters::compile(&[f], &[]).unwrap();
    let queries = [
        Query::default(),
        Query {
            filters: filter(FlowFilter {
                source_port: vec!["2001".into(), "1003".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
        Query {
            filters: filter(FlowFilter {
                source_pod: vec!["db/".into()],
                tcp_flags: vec![webb_proto::flow::TcpFlags {
                    syn: true,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            number: 50,
            ..Default::default()
        },
        Query {
            filters: dropped_only(),
            number: 30,
            first: true,
            since: Some(Timestamp {
                seconds: 1_700_000_200,
                nanos: 0,
            }),
            ..Default::default()
        },
    ];
    for q in &queries {
        let got = hub.query(q).history;
        let want: Vec<&Item> = kept.iter().filter(|i| q.wants(i)).collect();
        let want: Vec<&Item> = match (q.number, q.first) {
            (0, _) => want,
            (n, true) => want.into_iter().take(n as usize).collect(),
            (n, false) => {
                let skip = want.len().saturating_sub(n as usize);
                want.into_iter().skip(skip).collect()
            }
        };
        assert!(!want.is_empty(), "{q:?}");
        assert_eq!(got.len(), want.len(), "{q:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(**g, **w);
        }
    }
}
