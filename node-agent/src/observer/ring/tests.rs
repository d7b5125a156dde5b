use std::sync::Arc;

use webb_proto::{
    flow::{Flow, IcmPv4, Ip, Layer4, Layer7, Sctp, Tcp, TcpFlags, Udp, Verdict, layer4::Protocol},
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
    shared::EndpointData,
    wkt::Timestamp,
};

use super::*;

fn item(f: Flow) -> Item {
    Arc::new(GetFlowsResponse {
        time: f.time,
        node_name: f.node_name.clone(),
        response_types: Some(ResponseTypes::Flow(Box::new(f))),
    })
}

fn tcp(sport: u32, dport: u32, flags: Option<TcpFlags>) -> Option<Layer4> {
    Some(Layer4 {
        protocol: Some(Protocol::Tcp(Tcp {
            source_port: sport,
            destination_port: dport,
            flags,
        })),
    })
}

#[allow(deprecated)]
fn base(i: u32) -> Flow {
    // As the agent's endpoint table hands them out: one shared endpoint.
    static CLIENT: std::sync::LazyLock<webb_proto::endpoint::Endpoint> =
        std::sync::LazyLock::new(|| {
            webb_proto::endpoint::Endpoint::from(EndpointData {
                namespace: "shop".into(),
                pod_name: "client".into(),
                labels: vec!["k8s:app=client".into()],
                ..Default::default()
            })
        });
    let client = CLIENT.clone();
    Flow {
        time: Some(Timestamp {
            seconds: 1_700_000_000 + i64::from(i),
            nanos: (i * 7919) as i32 % 1_000_000_000,
        }),
        uuid: uuid::Uuid::new_v4().hyphenated().to_string(),
        verdict: Verdict::Forwarded as i32,
        ip: Some(Ip {
            source: "10.0.0.1".into(),
            destination: "10.0.0.2".into(),
            ..Default::default()
        }),
        l4: tcp(
            40000 + i,
            80,
            Some(TcpFlags {
                syn: i.is_multiple_of(2),
                ack: true,
                ..Default::default()
            }),
        ),
        source: Some(client),
        node_name: "node-a".into(),
        node_labels: vec!["kubernetes.io/hostname=node-a".into()],
        summary: "TCP Flags: ACK".into(),
        webb_packets: u64::from(i),
        webb_bytes: u64::from(i) * 1500,
        ..Default::default()
    }
}

/// Flows a record must give back exactly, and the ones it must keep whole.
fn variants() -> Vec<(Flow, bool)> {
    let mut v: Vec<(Flow, bool)> = (0..20).map(|i| (base(i), true)).collect();
    let mut f = base(1);
    f.uuid.clear();
    v.push((f, true));
    let mut f = base(2);
    f.l4 = tcp(1, 2, None);
    v.push((f, true));
    let mut f = base(3);
    f.l4 = tcp(
        65535,
        0,
        Some(TcpFlags {
            fin: true,
            syn: true,
            rst: true,
            psh: true,
            ack: true,
            urg: true,
            ece: true,
            cwr: true,
            ns: true,
        }),
    );
    v.push((f, true));
    let mut f = base(4);
    f.l4 = Some(Layer4 {
        protocol: Some(Protocol::Udp(Udp {
            source_port: 53,
            destination_port: 5353,
        })),
    });
    v.push((f, true));
    let mut f = base(5);
    f.l4 = Some(Layer4 {
        protocol: Some(Protocol::Sctp(Sctp {
            source_port: 9,
            destination_port: 10,
        })),
    });
    v.push((f, true));
    let mut f = base(6);
    f.l4 = Some(Layer4 {
        protocol: Some(Protocol::IcmPv4(IcmPv4 { r#type: 8, code: 0 })),
    });
    v.push((f, true));
    let mut f = base(7);
    f.l4 = None;
    f.ip = None;
    v.push((f, true));
    // Kept whole.
    let mut f = base(8);
    f.uuid = f.uuid.to_uppercase();
    v.push((f, false));
    let mut f = base(9);
    f.uuid = "not-a-uuid".into();
    v.push((f, false));
    let mut f = base(10);
    f.l4 = tcp(70000, 80, None);
    v.push((f, false));
    let mut f = base(11);
    f.l7 = Some(Box::new(Layer7::default()));
    v.push((f, false));
    let mut f = base(12);
    f.webb_packets = u64::from(u32::MAX) + 1;
    v.push((f, false));
    let mut f = base(13);
    f.time = None;
    v.push((f, false));
    let mut f = base(14);
    f.time = Some(Timestamp {
        seconds: 1,
        nanos: -1,
    });
    v.push((f, false));
    v
}

#[test]
fn a_record_gives_back_exactly_the_flow_stored() {
    let mut shapes = Shapes::default();
    for (f, compact) in variants() {
        let it = item(f);
        let e = Entry::of(&it, &mut shapes);
        assert_eq!(matches!(e, Entry::Flow(_)), compact, "{it:?}");
        assert_eq!(*e.item(), *it);
        assert_eq!(e.time(), it.time);
        let Some(ResponseTypes::Flow(f)) = &it.response_types else {
            unreachable!()
        };
        assert_eq!(e.key(), ItemKey::of_flow(f), "{f:?}");
    }
}

#[test]
fn a_response_whose_time_or_node_is_not_its_flows_is_kept_whole() {
    let mut shapes = Shapes::default();
    let f = base(1);
    let mut r = (*item(f)).clone();
    r.node_name = "relay".into();
    let it = Arc::new(r);
    let e = Entry::of(&it, &mut shapes);
    assert!(matches!(e, Entry::Other(_)));
    assert_eq!(*e.item(), *it);
}

#[test]
#[allow(deprecated)]
fn flows_of_one_conversation_share_one_shape_and_others_do_not() {
    let mut shapes = Shapes::default();
    // Twenty flows differing only in the record's fields: one shape.
    let entries: Vec<Entry> = (0..20)
        .map(|i| Entry::of(&item(base(i)), &mut shapes))
        .collect();
    assert_eq!(shapes.len(), 1);
    // Any other field makes another shape.
    let mut f = base(0);
    f.verdict = Verdict::Dropped as i32;
    let _d = Entry::of(&item(f), &mut shapes);
    let mut f = base(0);
    f.node_labels.push("zone=b".into());
    let _l = Entry::of(&item(f), &mut shapes);
    let mut f = base(0);
    f.summary = "TCP Flags: SYN".into();
    let _s = Entry::of(&item(f), &mut shapes);
    assert_eq!(shapes.len(), 4);
    // An endpoint equal in content but not shared is still the same shape.
    let mut f = base(0);
    f.source = Some(webb_proto::endpoint::Endpoint::from(
        (*base(0).source.unwrap()).clone(),
    ));
    let _e = Entry::of(&item(f), &mut shapes);
    assert!(shapes.len() <= 5);
    drop(entries);
}

#[test]
fn shapes_no_record_holds_are_swept() {
    let mut shapes = Shapes::default();
    let kept = Entry::of(&item(base(0)), &mut shapes);
    for i in 0..(SWEEP_EVERY as u32 + 10) {
        let mut f = base(i);
        f.cgroup_id = u64::from(i) + 1;
        drop(Entry::of(&item(f), &mut shapes));
    }
    shapes.maybe_sweep();
    assert_eq!(shapes.len(), 1, "only the held record's shape is left");
    assert_eq!(shapes.live().count(), 1);
    drop(kept);
}

#[test]
fn only_canonical_uuids_are_kept_as_bytes() {
    for _ in 0..1000 {
        let u = uuid::Uuid::new_v4();
        let s = u.hyphenated().to_string();
        assert_eq!(canonical_uuid(&s), Some(*u.as_bytes()));
        assert_eq!(canonical_uuid(&s.to_uppercase()), None);
    }
    for bad in [
        "",
        "x",
        "0123456789abcdef0123456789abcdef",
        "01234567-89ab-cdef-0123-456789abcdeg",
        "01234567-89ab-cdef-0123+456789abcdef",
        "01234567-89ab-cdef-0123-456789abcde\u{e9}",
        "{01234567-89ab-cdef-0123-456789abcdef}",
    ] {
        assert_eq!(canonical_uuid(bad), None, "{bad}");
    }
}

#[test]
fn a_record_is_small() {
    assert!(
        std::mem::size_of::<Entry>() <= 64,
        "{}",
        std::mem::size_of::<Entry>()
    );
}
