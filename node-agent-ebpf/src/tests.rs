extern crate std;
use std::vec::Vec;

use super::*;

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = std::vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = eth(ETH_P_IP);
    let total = (20 + l4.len()) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        proto,
        0,
        0,
    ]);
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(l4);
    f
}

fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0; 8]);
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

fn parse(frame: &[u8], with_eth: bool, l3: u16) -> Result<Parsed, ParseError> {
    let mut p = Parsed::default();
    parse_packet(&frame, with_eth, l3, &mut p).map(|()| p)
}

#[test]
fn tcp_over_ipv4() {
    let p = parse(&ipv4(IPPROTO_TCP, &tcp(43210, 80, tcp::SYN)), true, 0).unwrap();
    assert_eq!(p.src, v4_mapped([10, 0, 0, 1]));
    assert_eq!(p.dst, v4_mapped([10, 0, 0, 2]));
    assert_eq!(
        (p.sport, p.dport, p.proto, p.tcp_flags),
        (43210, 80, 6, tcp::SYN)
    );
    assert_eq!(p.eth_src, [2, 0, 0, 0, 0, 1]);
    assert_eq!(p.ip_version, 4);
}

#[test]
fn cgroup_packets_start_at_ip() {
    let frame = ipv4(IPPROTO_UDP, &[0x14, 0xe9, 0, 53, 0, 8, 0, 0]);
    let p = parse(&frame[14..], false, ETH_P_IP).unwrap();
    assert_eq!(
        (p.sport, p.dport, p.proto, p.has_eth),
        (5353, 53, 17, false)
    );
}

#[test]
fn vlan_tag_is_skipped() {
    let inner = ipv4(IPPROTO_UDP, &[0, 1, 0, 2, 0, 8, 0, 0]);
    let mut f = eth(0x8100);
    f.extend_from_slice(&[0, 5, 0x08, 0x00]);
    f.extend_from_slice(&inner[14..]);
    assert_eq!(parse(&f, true, 0).unwrap().dport, 2);
}

#[test]
fn ipv6_with_extension_header_and_icmp_echo() {
    let mut f = eth(ETH_P_IPV6);
    // Version 6, next header hop-by-hop (0).
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 16, 0, 64]);
    let mut src = [0u8; 16];
    src[0] = 0xfd;
    src[15] = 1;
    let mut dst = src;
    dst[15] = 2;
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    // Hop-by-hop: next = ICMPv6, length 0 (8 bytes).
    f.extend_from_slice(&[58, 0, 0, 0, 0, 0, 0, 0]);
    // Echo request, id 0x1234.
    f.extend_from_slice(&[128, 0, 0, 0, 0x12, 0x34, 0, 1]);
    let p = parse(&f, true, 0).unwrap();
    assert_eq!(
        (p.proto, p.icmp_type, p.sport, p.dport),
        (58, 128, 0x1234, 0x1234)
    );
    assert_eq!((p.src, p.dst, p.ip_version), (src, dst, 6));
}

#[test]
fn later_fragments_have_no_ports() {
    let mut f = ipv4(IPPROTO_UDP, &[0, 1, 0, 2]);
    f[14 + 6] = 0x00;
    f[14 + 7] = 0x10;
    let p = parse(&f, true, 0).unwrap();
    assert_eq!((p.sport, p.dport, p.proto), (0, 0, 17));
}

#[test]
fn garbage_is_reported_not_parsed() {
    assert_eq!(parse(&[1, 2, 3], true, 0), Err(ParseError::Malformed));
    assert_eq!(parse(&eth(0x88cc), true, 0), Err(ParseError::NotIp));
    // IPv4 ethertype with an IPv6 version nibble.
    let mut bad = ipv4(IPPROTO_TCP, &tcp(1, 2, 0));
    bad[14] = 0x65;
    assert_eq!(parse(&bad, true, 0), Err(ParseError::Malformed));
    // IHL below 5.
    bad[14] = 0x44;
    assert_eq!(parse(&bad, true, 0), Err(ParseError::Malformed));
    // TCP header cut short.
    let cut = ipv4(IPPROTO_TCP, &[0, 1, 0]);
    assert_eq!(parse(&cut, true, 0), Err(ParseError::Malformed));
}

#[test]
fn reverse_key_swaps_ends_and_points() {
    let k = FlowKey {
        src: [1; 16],
        dst: [2; 16],
        sport: 1000,
        dport: 80,
        proto: 6,
        point: point::TC_INGRESS,
        _pad: [0; 2],
    };
    let r = k.reverse();
    assert_eq!(
        (r.src, r.dst, r.sport, r.dport, r.point),
        ([2; 16], [1; 16], 80, 1000, point::TC_EGRESS)
    );
    assert_eq!(r.reverse(), k);
}

#[test]
fn layouts_have_no_implicit_padding() {
    assert_eq!(core::mem::size_of::<FlowKey>(), 40);
    assert_eq!(core::mem::size_of::<FlowState>(), 32);
    assert_eq!(core::mem::size_of::<FlowEvent>(), 104);
    assert_eq!(core::mem::size_of::<PolicyKey>(), 12);
    assert_eq!(core::mem::size_of::<Config>(), 80);
    assert_eq!(core::mem::size_of::<L7Header>(), 16);
    assert_eq!(L7_RECORD_HEADER, 120);
    assert_eq!(core::mem::size_of::<L7Record>(), 120 + MAX_CAPTURE);
}

#[test]
fn tcp_payload_is_located_by_the_data_offset() {
    let mut t = tcp(43210, 80, tcp::PSH | tcp::ACK);
    t[4..8].copy_from_slice(&7u32.to_be_bytes());
    t[12] = 0x60; // 24-byte header: one option word.
    t.extend_from_slice(&[1, 1, 1, 1]);
    t.extend_from_slice(b"GET / HTTP/1.1\r\n");
    let frame = ipv4(IPPROTO_TCP, &t);
    let p = parse(&frame, true, 0).unwrap();
    assert_eq!(p.tcp_seq, 7);
    assert_eq!(p.payload_off as usize, 14 + 20 + 24);
    assert_eq!(p.payload_len, 16);
    let head: [u8; 4] = (&frame[..]).load(p.payload_off as usize).unwrap();
    assert!(looks_like_http(head));
}

#[test]
fn a_bare_ack_has_no_payload_even_when_the_frame_is_padded() {
    let mut frame = ipv4(IPPROTO_TCP, &tcp(1, 2, tcp::ACK));
    frame.extend_from_slice(&[0; 6]); // Ethernet minimum-size padding.
    let p = parse(&frame, true, 0).unwrap();
    assert_eq!(p.payload_len, 0);
}

#[test]
fn udp_payload_length_comes_from_the_udp_header() {
    let mut u = std::vec![0x9c, 0x40, 0, 53, 0, 12, 0, 0];
    u.extend_from_slice(&[0xab, 0xcd, 1, 0]);
    let mut frame = ipv4(IPPROTO_UDP, &u);
    frame.extend_from_slice(&[0; 8]); // Trailing bytes beyond the UDP length.
    let p = parse(&frame, true, 0).unwrap();
    assert_eq!((p.sport, p.dport), (40000, 53));
    assert_eq!(p.payload_off, 14 + 20 + 8);
    assert_eq!(p.payload_len, 4);
}

#[test]
fn ip_length_zero_means_to_the_end_of_the_packet() {
    let mut frame = ipv4(IPPROTO_TCP, &tcp(1, 2, tcp::ACK));
    frame[16] = 0;
    frame[17] = 0;
    let p = parse(&frame, true, 0).unwrap();
    assert_eq!(p.payload_len, u32::MAX);
}

#[test]
fn dns_ports_and_http_heads() {
    let mut ports = [0u16; DNS_PORTS];
    ports[0] = 53;
    ports[1] = 5353;
    assert!(is_dns_port(&ports, 40000, 53));
    assert!(is_dns_port(&ports, 5353, 40000));
    assert!(!is_dns_port(&ports, 40000, 80));
    assert!(!is_dns_port(&[0; DNS_PORTS], 0, 0));
    for head in [
        b"GET ", b"POST", b"HTTP", b"DELE", b"PATC", b"OPTI", b"HEAD", b"PUT ",
    ] {
        assert!(looks_like_http(*head), "{head:?}");
    }
    for head in [b"get ", b"\0\0\0\0", b"SSH-", b"\x16\x03\x01\x02"] {
        assert!(!looks_like_http(*head), "{head:?}");
    }
    // A TLS 1.0-1.3 handshake record holding a ClientHello; not a
    // ServerHello, application data, or plain text.
    for head in [
        [22, 3, 1, 2, 0, 1],
        [22, 3, 3, 0, 200, 1],
        [22, 3, 4, 9, 9, 1],
    ] {
        assert!(looks_like_client_hello(head), "{head:?}");
    }
    for head in [
        [22, 3, 3, 0, 90, 2],
        [23, 3, 3, 0, 90, 1],
        [22, 3, 9, 0, 1, 1],
        *b"GET / ",
    ] {
        assert!(!looks_like_client_hello(head), "{head:?}");
    }
}

fn ep(identity: u32, flags: u32) -> Option<EndpointInfo> {
    Some(EndpointInfo { identity, flags })
}

const POD_HERE: u32 = endpoint_flags::LOCAL | endpoint_flags::AT_TC;

#[test]
fn a_flow_is_reported_on_each_state_change_once_then_on_every_packet_after_closing() {
    let mut st = FlowState::default();
    let syn = report_reason(&st, tcp::SYN, 0, 0);
    assert_eq!(syn, Some(emit::TCP_FLAGS));
    st.tcp_seen = tcp::SYN;
    assert_eq!(report_reason(&st, tcp::SYN, 5, 0), None, "a SYN again");
    assert_eq!(report_reason(&st, tcp::ACK | tcp::PSH, 5, 0), None);
    // A flush once the interval passed since the last report, not before.
    st.last_emit_ns = 100;
    assert_eq!(report_reason(&st, tcp::ACK, 150, 100), None);
    assert_eq!(report_reason(&st, tcp::ACK, 200, 100), Some(emit::FLUSH));
    assert_eq!(
        report_reason(&st, tcp::ACK | tcp::FIN, 150, 100),
        Some(emit::TCP_FLAGS)
    );
    // Closed: the last packets' counts are reported as they come.
    st.tcp_seen |= tcp::FIN;
    assert_eq!(report_reason(&st, tcp::ACK, 150, 100), Some(emit::FLUSH));
    assert_eq!(
        report_reason(&st, tcp::RST, 150, 100),
        Some(emit::TCP_FLAGS)
    );
}

#[test]
fn cgroup_programs_report_only_what_no_watched_interface_sees() {
    let host = ep(identity::HOST, endpoint_flags::LOCAL);
    let pod_here = ep(1000, POD_HERE);
    let pod_elsewhere = ep(1001, 0);
    let world = None;
    // A pod's own socket: TC reports it at the pod's veth.
    assert_eq!(cgroup_role(pod_here, world, false), CgroupRole::Skip);
    assert_eq!(cgroup_role(pod_here, pod_here, false), CgroupRole::Skip);
    // A socket with another node's pod address (agents sharing a kernel).
    assert_eq!(cgroup_role(pod_elsewhere, host, false), CgroupRole::Skip);
    // A host process talking to a pod watched here: TC reports it there,
    // with the process's cgroup.
    assert_eq!(cgroup_role(host, pod_here, false), CgroupRole::NameForTc);
    assert_eq!(cgroup_role(None, pod_here, false), CgroupRole::NameForTc);
    // Host traffic no watched interface sees.
    assert_eq!(cgroup_role(host, world, false), CgroupRole::Report);
    assert_eq!(cgroup_role(host, pod_elsewhere, false), CgroupRole::Report);
    assert_eq!(cgroup_role(None, None, false), CgroupRole::Report);
    // Every point on: everything.
    for (l, p) in [(pod_here, world), (host, pod_here), (pod_elsewhere, host)] {
        assert_eq!(cgroup_role(l, p, true), CgroupRole::Report);
    }
}

#[test]
fn each_l7_message_is_copied_at_one_interface_per_node() {
    use point::{TC_EGRESS, TC_INGRESS};
    let here = ep(1000, POD_HERE);
    let remote = ep(1001, 0);
    let copied = |point, reply, server| !l7_elsewhere(point, reply, server, false);
    // Client and server on this node: at the server's interface, the
    // request entering it and the response leaving it.
    assert!(copied(TC_EGRESS, false, here));
    assert!(copied(TC_INGRESS, true, here));
    assert!(
        !copied(TC_INGRESS, false, here),
        "request leaving the client"
    );
    assert!(
        !copied(TC_EGRESS, true, here),
        "response entering the client"
    );
    // The server elsewhere (another node, the world): at the client's.
    for server in [remote, None] {
        assert!(copied(TC_INGRESS, false, server));
        assert!(copied(TC_EGRESS, true, server));
    }
    // Every point on: everywhere.
    assert!(!l7_elsewhere(TC_INGRESS, false, here, true));
    assert!(!l7_elsewhere(point::CGROUP_EGRESS, false, here, false));
}

#[test]
fn policy_is_decided_for_the_isolated_end_at_its_interface() {
    let (web, db) = (v4_mapped([10, 0, 0, 1]), v4_mapped([10, 0, 0, 2]));
    let outside = v4_mapped([192, 0, 2, 7]);
    let mut m = crate::testing::ListMaps::default();
    m.endpoints.push((
        web,
        EndpointInfo {
            identity: 100,
            flags: POD_HERE,
        },
    ));
    m.endpoints.push((
        db,
        EndpointInfo {
            identity: 200,
            flags: POD_HERE | endpoint_flags::INGRESS_ISOLATED,
        },
    ));
    // db may hear from web on 5432/TCP only; the CIDR 192.0.2.0/24 is
    // identity 300, which may reach db on any TCP port.
    m.rules.push(PolicyKey {
        subject: 200,
        peer: 100,
        port: 5432,
        proto: IPPROTO_TCP,
        dir: dir::INGRESS,
    });
    m.cidrs.push((v4_mapped([192, 0, 2, 0]), 96 + 24, 300));
    m.rules.push(PolicyKey {
        subject: 200,
        peer: 300,
        port: 0,
        proto: IPPROTO_TCP,
        dir: dir::INGRESS,
    });
    let key = |src, dst, dport, proto, point| FlowKey {
        src,
        dst,
        sport: 40000,
        dport,
        proto,
        point,
        _pad: [0; 2],
    };
    use point::{CGROUP_EGRESS, TC_EGRESS, TC_INGRESS};
    assert!(policy_allows(
        &m,
        &key(web, db, 5432, IPPROTO_TCP, TC_EGRESS)
    ));
    assert!(!policy_allows(
        &m,
        &key(web, db, 5433, IPPROTO_TCP, TC_EGRESS)
    ));
    assert!(!policy_allows(
        &m,
        &key(web, db, 5432, IPPROTO_UDP, TC_EGRESS)
    ));
    assert!(policy_allows(
        &m,
        &key(outside, db, 22, IPPROTO_TCP, TC_EGRESS)
    ));
    assert!(
        !policy_allows(
            &m,
            &key(v4_mapped([8, 8, 8, 8]), db, 22, IPPROTO_TCP, TC_EGRESS)
        ),
        "world"
    );
    // web is not isolated for egress: leaving it is always allowed; db's
    // ingress is decided where packets enter db, not where they leave web.
    assert!(policy_allows(
        &m,
        &key(web, db, 5433, IPPROTO_TCP, TC_INGRESS)
    ));
    assert!(policy_allows(
        &m,
        &key(web, db, 5433, IPPROTO_TCP, CGROUP_EGRESS)
    ));
    // A wildcard peer allows everyone.
    m.rules.push(PolicyKey {
        subject: 200,
        peer: identity::ANY,
        port: 53,
        proto: IPPROTO_UDP,
        dir: dir::INGRESS,
    });
    assert!(policy_allows(
        &m,
        &key(v4_mapped([8, 8, 8, 8]), db, 53, IPPROTO_UDP, TC_EGRESS)
    ));
}
