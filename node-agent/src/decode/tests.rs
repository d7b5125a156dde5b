#![allow(deprecated)] // Summary is deprecated in Hubble but still what its printers show.

use node_agent_ebpf::{FlowKey, v4_mapped};
use webb_proto::flow::layer4::Protocol;

use std::net::Ipv4Addr;

use super::*;
use crate::policy;

const ENDPOINTS: &str = "
host_ips: [10.99.0.1]
endpoints:
  - {namespace: shop, pod: frontend-1, labels: {app: frontend}, ips: [10.99.0.10]}
  - {namespace: shop, pod: db-0, labels: {app: db}, ips: [10.99.0.12]}
";
const POLICY: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: []
";

fn decoder() -> Decoder {
    let table = EndpointTable::parse(ENDPOINTS).unwrap();
    let compiled = policy::compile(&policy::parse(POLICY).unwrap(), &table);
    Decoder::new(Context {
        node_name: "lab/node-1".into(),
        endpoints: Arc::new(table),
        policy: Arc::new(compiled),
        drop_reasons: Arc::new(DropReasons::from_names([
            (2, "NOT_SPECIFIED".into()),
            (3, "NO_SOCKET".into()),
        ])),
    })
}

fn event(src: [u8; 4], dst: [u8; 4], proto: u8, point: u8) -> FlowEvent {
    FlowEvent {
        ts_ns: 1_000,
        packets: 3,
        bytes: 180,
        key: FlowKey {
            src: v4_mapped(src),
            dst: v4_mapped(dst),
            sport: 43210,
            dport: 5432,
            proto,
            point,
            _pad: [0; 2],
        },
        kind: kind::TRACE,
        emit: emit::NEW,
        tcp_flags: tcp::SYN,
        ip_version: 4,
        flags: flags::HAS_ETH,
        eth_src: [2, 0, 0, 0, 0, 1],
        ..Default::default()
    }
}

#[test]
fn forwarded_tcp_syn() {
    let mut d = decoder();
    let f = d.decode(&event(
        [10, 99, 0, 10],
        [10, 99, 0, 12],
        6,
        point::TC_INGRESS,
    ));
    assert_eq!(f.verdict, Verdict::Forwarded as i32);
    assert_eq!(f.summary, "TCP Flags: SYN");
    assert_eq!(f.source.as_ref().unwrap().pod_name, "frontend-1");
    assert_eq!(f.destination.as_ref().unwrap().pod_name, "db-0");
    assert_eq!(f.traffic_direction, TrafficDirection::Egress as i32);
    assert_eq!(
        f.trace_observation_point,
        TraceObservationPoint::FromEndpoint as i32
    );
    assert_eq!(f.event_type.unwrap().r#type, names::EVENT_TRACE);
    assert_eq!(f.is_reply, Some(BoolValue { value: false }));
    assert_eq!(f.ethernet.unwrap().source, "02:00:00:00:00:01");
    assert_eq!(f.ip.as_ref().unwrap().source, "10.99.0.10");
    assert_eq!((f.webb_packets, f.webb_bytes), (3, 180));
    match f.l4.unwrap().protocol.unwrap() {
        Protocol::Tcp(t) => assert_eq!(
            (t.source_port, t.destination_port, t.flags.unwrap().syn),
            (43210, 5432, true)
        ),
        other => panic!("not TCP: {other:?}"),
    }
    assert!(
        f.time.unwrap().seconds > 1_600_000_000,
        "dated by the wall clock"
    );
    assert_eq!(f.uuid.len(), 36);
}

#[test]
fn flows_of_an_endpoint_share_its_data() {
    // The ring's memory budget rests on this: an endpoint's names and
    // labels are held once, not once per flow.
    let mut d = decoder();
    let ev = event([10, 99, 0, 10], [10, 99, 0, 12], 6, point::TC_INGRESS);
    let (a, b) = (d.decode(&ev), d.decode(&ev));
    let (sa, sb) = (a.source.unwrap(), b.source.unwrap());
    assert!(sa.ptr_eq(&sb));
    assert!(a.destination.unwrap().ptr_eq(&b.destination.unwrap()));
    // World addresses share the one reserved endpoint too.
    let w = d.decode(&event(
        [10, 99, 0, 10],
        [93, 184, 216, 34],
        6,
        point::TC_INGRESS,
    ));
    let w2 = d.decode(&event([10, 99, 0, 10], [1, 1, 1, 1], 6, point::TC_INGRESS));
    assert!(w.destination.unwrap().ptr_eq(&w2.destination.unwrap()));
}

#[test]
fn reply_flips_direction() {
    let mut d = decoder();
    let mut ev = event([10, 99, 0, 12], [10, 99, 0, 10], 6, point::TC_INGRESS);
    ev.flags |= flags::REPLY;
    ev.tcp_flags = tcp::SYN | tcp::ACK;
    let f = d.decode(&ev);
    assert_eq!(f.traffic_direction, TrafficDirection::Ingress as i32);
    assert_eq!(f.trace_reason, TraceReason::Reply as i32);
    assert_eq!(f.summary, "TCP Flags: SYN, ACK");
}

#[test]
fn policy_drop_names_the_policy() {
    let mut d = decoder();
    let mut ev = event([10, 99, 0, 10], [10, 99, 0, 12], 6, point::TC_EGRESS);
    ev.kind = kind::POLICY_DROP;
    ev.emit = emit::DROP;
    let f = d.decode(&ev);
    assert_eq!(f.verdict, Verdict::Dropped as i32);
    assert_eq!(f.drop_reason_desc, DropReason::PolicyDenied as i32);
    assert_eq!(
        f.event_type.unwrap(),
        CiliumEventType {
            r#type: 1,
            sub_type: 133
        }
    );
    assert_eq!(f.ingress_denied_by.len(), 1);
    assert_eq!(f.ingress_denied_by[0].name, "db-ingress");
    assert!(f.egress_denied_by.is_empty());
}

#[test]
fn kernel_drop_carries_reason_name() {
    let mut d = decoder();
    let mut ev = event([8, 8, 8, 8], [10, 99, 0, 12], 17, point::KFREE_SKB);
    ev.kind = kind::KERNEL_DROP;
    ev.drop_reason = 3;
    ev.flags = 0;
    let f = d.decode(&ev);
    assert_eq!(f.webb_kernel_drop_reason, "NO_SOCKET");
    assert_eq!(f.drop_reason_desc, DropReason::SocketLookupFailed as i32);
    assert_eq!(f.source.as_ref().unwrap().labels, vec!["reserved:world"]);
    assert_eq!(f.traffic_direction, TrafficDirection::Ingress as i32);
    assert!(f.is_reply.is_none() && f.ethernet.is_none());
    ev.drop_reason = 77;
    assert_eq!(d.decode(&ev).webb_kernel_drop_reason, "UNKNOWN_77");
}

#[test]
fn icmp_summaries() {
    let mut d = decoder();
    let mut ev = event([10, 99, 0, 1], [10, 99, 0, 10], 1, point::TC_EGRESS);
    ev.icmp_type = 8;
    let f = d.decode(&ev);
    assert_eq!(f.summary, "ICMPv4 EchoRequest");
    assert_eq!(f.source.unwrap().labels, vec!["reserved:host"]);
    ev.icmp_type = 3;
    ev.icmp_code = 3;
    assert_eq!(d.decode(&ev).summary, "ICMPv4 DestinationUnreachable(Port)");
}

#[test]
fn hand_written_formatters_match_std() {
    for a in [0u8, 1, 9, 10, 42, 99, 100, 199, 200, 255] {
        for b in [0u8, 7, 64, 255] {
            let ip = IpAddr::V4(Ipv4Addr::new(a, b, b.wrapping_add(a), 255 - a));
            assert_eq!(ip_string(&ip), ip.to_string());
        }
    }
    let v6: IpAddr = "fd00::1:2".parse().unwrap();
    assert_eq!(ip_string(&v6), "fd00::1:2");
    let u = uuid_string();
    let parsed = uuid::Uuid::parse_str(&u).unwrap();
    assert_eq!(parsed.hyphenated().to_string(), u);
    assert_eq!(u.len(), 36);
    assert_eq!(parsed.get_version_num(), 8);
    assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
    // Unique: one process prefix, a counter after it.
    let next = uuid::Uuid::parse_str(&uuid_string()).unwrap();
    assert_ne!(next, parsed);
    assert_eq!(next.as_u64_pair().0, parsed.as_u64_pair().0);
    assert!(next.as_u64_pair().1 > parsed.as_u64_pair().1);
    let f = TcpFlags {
        syn: true,
        ack: true,
        fin: true,
        ..Default::default()
    };
    assert_eq!(tcp_flags_text(&f), "SYN, ACK, FIN");
    assert_eq!(tcp_flags_text(&TcpFlags::default()), "");
}

/// An L7 ring record: the event, its header, the payload.
fn l7_record(ev: &FlowEvent, proto: u8, payload: &[u8]) -> Vec<u8> {
    let hdr = L7Header {
        tcp_seq: 1,
        payload_len: payload.len() as u32,
        captured: payload.len() as u32,
        proto,
        _pad: [0; 3],
    };
    l7_record_bytes(ev, &hdr, payload)
}

#[test]
fn l7_records_become_l7_flows_and_answers_name_later_flows() {
    let mut d = decoder();
    // A DNS answer for db.shop.svc. -> 10.99.0.12, received by frontend.
    let answer: &[u8] = &[
        0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, // header
        2, b'd', b'b', 4, b's', b'h', b'o', b'p', 3, b's', b'v', b'c', 0, 0, 1, 0,
        1, // question
        0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 99, 0, 12, // A record
    ];
    let mut ev = event([10, 99, 0, 53], [10, 99, 0, 10], 17, point::TC_EGRESS);
    ev.emit = emit::L7;
    ev.key.sport = 53;
    let Decoded::Flow(f) = d.decode_record(&l7_record(&ev, node_agent_ebpf::l7::DNS_UDP, answer))
    else {
        panic!("no flow");
    };
    assert_eq!(f.r#type, FlowType::L7 as i32);
    assert_eq!(f.event_type.unwrap().r#type, 129);
    assert!(f.is_reply.unwrap().value);
    assert_eq!(f.webb_emit_reason, WebbEmitReason::WebbEmitL7 as i32);
    assert_eq!(f.trace_observation_point, 0);
    assert_eq!(
        f.summary,
        r#"DNS Answer "10.99.0.12" TTL: 30 (Proxy db.shop.svc. A)"#
    );
    assert_eq!(f.destination.unwrap().pod_name, "frontend-1");

    // frontend then connects to the address it resolved.
    let syn = event([10, 99, 0, 10], [10, 99, 0, 12], 6, point::TC_INGRESS);
    let f = d.decode(&syn);
    assert_eq!(f.destination_names, ["db.shop.svc"]);
    assert!(f.source_names.is_empty());
    // The reply names its source.
    let mut reply = event([10, 99, 0, 12], [10, 99, 0, 10], 6, point::TC_EGRESS);
    reply.flags |= flags::REPLY;
    assert_eq!(d.decode(&reply).source_names, ["db.shop.svc"]);

    // Garbage after the header is skipped and counted, records cut inside
    // the header are undecodable.
    let junk = l7_record(&ev, node_agent_ebpf::l7::HTTP, b"HTTP/1.1 abc\r\n\r\n");
    assert!(matches!(d.decode_record(&junk), Decoded::Skipped));
    assert_eq!(
        d.l7.counters.get(l7::Count::Error(l7::Error::HttpBadHead)),
        1
    );
    assert!(matches!(
        d.decode_record(&junk[..110]),
        Decoded::Undecodable
    ));
    let mut lying = junk.clone();
    lying.truncate(L7_RECORD_HEADER + 3);
    assert!(matches!(d.decode_record(&lying), Decoded::Skipped));
    assert_eq!(d.l7.counters.get(l7::Count::Error(l7::Error::BadRecord)), 1);
}
