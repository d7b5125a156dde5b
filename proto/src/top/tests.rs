use super::*;
use crate::{
    flow::{
        Dns, EndpointData, Http, Ip, Layer4, Layer7, NetworkInterface, Tcp, Workload,
        layer4::Protocol,
    },
    wkt::BoolValue,
};

fn pod(ns: &str, name: &str, workload: &str) -> Endpoint {
    EndpointData {
        namespace: ns.into(),
        pod_name: name.into(),
        workloads: vec![Workload {
            name: workload.into(),
            kind: "Deployment".into(),
        }],
        ..Default::default()
    }
    .into()
}

fn world() -> Endpoint {
    EndpointData {
        identity: 2,
        labels: vec!["reserved:world".into()],
        ..Default::default()
    }
    .into()
}

/// A TCP report of client:40000 -> server:8080 (or its reply) at `point`
/// on interface `ifindex`, with the tuple's cumulative counters.
fn tcp(
    sec: i64,
    reply: bool,
    point: TraceObservationPoint,
    ifindex: u32,
    pkts: u64,
    bytes: u64,
) -> Flow {
    let (client, server) = (pod("shop", "web-1", "web"), pod("shop", "db-0", "db"));
    let (ca, sa) = ("10.0.0.1", "10.0.0.2");
    let (src, dst, sip, dip, sp, dp) = if reply {
        (server, client, sa, ca, 8080, 40000)
    } else {
        (client, server, ca, sa, 40000, 8080)
    };
    Flow {
        time: Some(Timestamp {
            seconds: sec,
            nanos: 0,
        }),
        verdict: Verdict::Forwarded as i32,
        ip: Some(Ip {
            source: sip.into(),
            destination: dip.into(),
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(Protocol::Tcp(Tcp {
                source_port: sp,
                destination_port: dp,
                flags: None,
            })),
        }),
        source: Some(src),
        destination: Some(dst),
        r#type: FlowType::L3L4 as i32,
        node_name: "node-a".into(),
        trace_observation_point: point as i32,
        interface: Some(NetworkInterface {
            index: ifindex,
            name: String::new(),
        }),
        is_reply: Some(BoolValue { value: reply }),
        webb_packets: pkts,
        webb_bytes: bytes,
        ..Default::default()
    }
}

fn http_response(sec: i64, code: u32, latency_ms: u64) -> Flow {
    let mut f = tcp(sec, true, TraceObservationPoint::FromEndpoint, 5, 0, 0);
    f.r#type = FlowType::L7 as i32;
    f.is_reply = None;
    f.l7 = Some(Box::new(Layer7 {
        r#type: L7FlowType::Response as i32,
        latency_ns: latency_ms * 1_000_000,
        record: Some(layer7::Record::Http(Http {
            code,
            method: "GET".into(),
            ..Default::default()
        })),
        ..Default::default()
    }));
    f
}

fn only(r: &TopResponse) -> &TopPair {
    assert_eq!(r.pairs.len(), 1, "{:?}", r.pairs);
    &r.pairs[0]
}

#[test]
fn buckets_hold_their_values_within_a_sixteenth() {
    for us in (0..5000u64).chain([1 << 20, 123_456_789, u64::MAX / 3]) {
        let b = bucket(us);
        assert!(bucket_lower(b) <= us, "{us} in {b}");
        assert!(us < bucket_lower(b + 1), "{us} in {b}");
        if us >= 16 {
            let width = bucket_lower(b + 1) - bucket_lower(b);
            assert!(width * 16 <= us + 16, "{us}: width {width}");
        }
    }
    // Every bucket's lower bound lands in that bucket.
    for b in 0..900 {
        assert_eq!(bucket(bucket_lower(b)), b);
    }
}

#[test]
fn reports_add_up_per_direction_and_side() {
    use TraceObservationPoint::*;
    let mut a = Aggregator::new(vec![TopKey::Workload]);
    // The request direction: 3 then 7 packets reported leaving the client's
    // veth, 10 at once entering the server's; the replies: 8 each side.
    a.add(&tcp(1, false, FromEndpoint, 5, 3, 300));
    a.add(&tcp(2, false, FromEndpoint, 5, 7, 700));
    a.add(&tcp(2, false, ToEndpoint, 6, 10, 1000));
    a.add(&tcp(3, true, FromEndpoint, 6, 8, 800));
    a.add(&tcp(3, true, ToEndpoint, 5, 8, 800));
    let r = a.finish();
    let p = only(&r);
    assert_eq!(
        p.keys,
        vec![TopValue {
            source: "shop/web".into(),
            destination: "shop/db".into(),
            pair: String::new(),
        }],
        "replies count with their request's pair, initiator first"
    );
    assert_eq!(p.flows, 5);
    assert_eq!(p.forward_sent.as_ref().map(|c| c.packets), Some(10));
    assert_eq!(p.forward_delivered.as_ref().map(|c| c.packets), Some(10));
    assert_eq!(p.reverse_sent.as_ref().map(|c| c.bytes), Some(800));
    let f = Figures::of(p);
    // Sent and delivered are the same packets: the larger side, per
    // direction, counts once.
    assert_eq!((f.packets, f.bytes), (10 + 8, 1000 + 800));
    assert_eq!(r.flows_counted, 5);
    assert_eq!(
        (r.first.map(|t| t.seconds), r.last.map(|t| t.seconds)),
        (Some(1), Some(3))
    );
}

#[test]
fn a_side_seen_on_two_nodes_counts_once() {
    use TraceObservationPoint::*;
    // One node reports the packets leaving the client, the other the same
    // packets entering the server, each in its own answer.
    let mut sender = Aggregator::new(vec![TopKey::Pod]);
    sender.add(&tcp(1, false, FromEndpoint, 5, 100, 10_000));
    let mut receiver = Aggregator::new(vec![TopKey::Pod]);
    receiver.add(&tcp(1, false, ToEndpoint, 6, 99, 9_900));
    let merged = merge([sender.finish(), receiver.finish()]);
    let f = Figures::of(only(&merged));
    assert_eq!((f.packets, f.bytes), (100, 10_000));
}

#[test]
fn drops_errors_and_latency() {
    use TraceObservationPoint::*;
    let mut a = Aggregator::new(vec![TopKey::Workload, TopKey::Port, TopKey::Reason]);
    let mut drop = tcp(1, false, ToEndpoint, 6, 4, 400);
    drop.verdict = Verdict::Dropped as i32;
    drop.drop_reason_desc = DropReason::PolicyDenied as i32;
    a.add(&drop);
    for (i, (code, ms)) in [(200, 1), (200, 2), (503, 3), (200, 4), (500, 100)]
        .into_iter()
        .enumerate()
    {
        a.add(&http_response(2 + i as i64, code, ms));
    }
    let r = a.finish();
    assert_eq!(
        r.pairs.len(),
        2,
        "a drop reason is its own pair: {:?}",
        r.pairs
    );
    let by_reason = |reason: &str| {
        r.pairs
            .iter()
            .find(|p| p.keys[2].pair == reason)
            .map(Figures::of)
            .unwrap()
    };
    let dropped = by_reason("POLICY_DENIED");
    assert_eq!(
        (dropped.drops, dropped.packets),
        (1, 0),
        "drops carry no traffic"
    );
    let served = by_reason("");
    assert_eq!((served.responses, served.errors), (5, 2));
    // 95% of 5 responses: the fifth, 100 ms, within a sixteenth.
    let p95 = served.p95_us.unwrap();
    assert!((94_000..=106_000).contains(&p95), "{p95}");
    let port = &r.pairs[0].keys[1];
    assert_eq!(
        port.pair, "8080/TCP",
        "the responder's port, also for responses"
    );
}

#[test]
fn ends_without_a_pod_are_named_by_address_or_reserved_label() {
    let mut f = tcp(1, false, TraceObservationPoint::FromEndpoint, 5, 1, 60);
    f.destination = Some(world());
    f.destination_names = vec!["api.example.com".into()];
    let by = vec![TopKey::Workload, TopKey::Namespace, TopKey::Fqdn];
    let mut a = Aggregator::new(by);
    a.add(&f);
    let r = a.finish();
    let k = &only(&r).keys;
    assert_eq!(k[0].destination, "10.0.0.2");
    assert_eq!(k[1].destination, "reserved:world");
    assert_eq!(k[2].destination, "api.example.com");
    assert_eq!(k[2].source, "shop/web-1");
}

#[test]
fn merged_answers_equal_one_aggregation_of_every_flow() {
    use TraceObservationPoint::*;
    let mut flows = Vec::new();
    for i in 0..40u64 {
        let mut f = tcp(i as i64, i % 3 == 0, FromEndpoint, 5, i + 1, (i + 1) * 100);
        f.node_name = format!("node-{}", i % 2);
        if i % 5 == 0 {
            f.source = Some(pod("other", "x", "x"));
        }
        flows.push(f);
    }
    flows.push(http_response(50, 200, 7));
    let mut dns = http_response(51, 0, 1);
    if let Some(l7) = dns.l7.as_mut() {
        l7.record = Some(layer7::Record::Dns(Dns {
            rcode: 3,
            ..Default::default()
        }));
    }
    flows.push(dns);
    let by = vec![TopKey::Namespace, TopKey::Node];
    let mut whole = Aggregator::new(by.clone());
    let (mut one, mut two) = (Aggregator::new(by.clone()), Aggregator::new(by.clone()));
    for f in &flows {
        whole.add(f);
        if f.node_name == "node-0" {
            one.add(f)
        } else {
            two.add(f)
        }
    }
    let sorted = |mut r: TopResponse| {
        r.pairs.sort_by_key(|p| format!("{:?}", p.keys));
        for p in &mut r.pairs {
            for c in [
                &mut p.forward_sent,
                &mut p.forward_delivered,
                &mut p.reverse_sent,
                &mut p.reverse_delivered,
            ] {
                c.get_or_insert_with(TopCounts::default);
            }
        }
        r
    };
    let merged = sorted(merge([one.finish(), two.finish()]));
    let whole = sorted(whole.finish());
    assert_eq!(merged.pairs, whole.pairs);
    assert_eq!(merged.flows_counted, 42);
    let errors: u64 = merged.pairs.iter().map(|p| p.errors).sum();
    assert_eq!(errors, 1, "NXDOMAIN is an error, 200 is not");
}

#[test]
fn pairs_past_the_limit_are_counted_as_left_out() {
    let mut a = Aggregator::new(vec![TopKey::Pod]);
    let mut f = tcp(1, false, TraceObservationPoint::FromEndpoint, 5, 1, 1);
    for i in 0..MAX_PAIRS + 3 {
        f.source = Some(pod("ns", &format!("p{i}"), "w"));
        a.add(&f);
    }
    let r = a.finish();
    assert_eq!(r.pairs.len(), MAX_PAIRS);
    assert_eq!(r.flows_left_out, 3);
    assert_eq!(r.flows_counted, MAX_PAIRS as u64);
}

#[test]
fn keys_default_to_workload_and_skip_unknown_numbers() {
    assert_eq!(keys(&[]), vec![TopKey::Workload]);
    assert_eq!(keys(&[99, 0]), vec![TopKey::Workload]);
    assert_eq!(keys(&[2, 5]), vec![TopKey::Pod, TopKey::Port]);
}

#[test]
fn host_traffic_the_cgroup_programs_report_counts_on_its_sides() {
    use TraceObservationPoint::*;
    let mut a = Aggregator::new(vec![TopKey::Workload]);
    // A host process's packets: sent (to-stack) in two reports, the
    // replies received (from-stack).
    a.add(&tcp(1, false, ToStack, 0, 10, 1000));
    a.add(&tcp(2, false, ToStack, 0, 20, 2000));
    a.add(&tcp(3, true, FromStack, 0, 4, 400));
    let p = a.finish();
    let p = only(&p);
    assert_eq!(p.forward_sent.map(|c| c.packets), Some(30));
    assert_eq!(p.reverse_delivered.map(|c| c.packets), Some(4));
    let f = Figures::of(p);
    assert_eq!((f.packets, f.bytes), (30 + 4, 3000 + 400));
}
