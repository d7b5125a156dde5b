use std::{net::Ipv4Addr, str::FromStr as _, sync::Arc};

use hickory_proto::{
    op::{Message as DnsMessage, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, Record as DnsRecord, RecordType, rdata},
};
use node_agent_ebpf::{FlowKey, IPPROTO_TCP, IPPROTO_UDP, v4_mapped};

use super::*;

const CLIENT: [u8; 4] = [10, 0, 0, 10];
const SERVER: [u8; 4] = [10, 0, 0, 53];

fn event(ts_ns: u64, from_client: bool, proto: u8, server_port: u16) -> FlowEvent {
    let (src, dst, sport, dport) = if from_client {
        (CLIENT, SERVER, 40000, server_port)
    } else {
        (SERVER, CLIENT, server_port, 40000)
    };
    FlowEvent {
        ts_ns,
        ifindex: 7,
        key: FlowKey {
            src: v4_mapped(src),
            dst: v4_mapped(dst),
            sport,
            dport,
            proto,
            point: if from_client {
                point::TC_INGRESS
            } else {
                point::TC_EGRESS
            },
            _pad: [0; 2],
        },
        ip_version: 4,
        emit: node_agent_ebpf::emit::L7,
        ..Default::default()
    }
}

fn header(proto: u8, payload: &[u8], seq: u32) -> L7Header {
    L7Header {
        tcp_seq: seq,
        payload_len: payload.len() as u32,
        captured: payload.len() as u32,
        proto,
        _pad: [0; 3],
    }
}

fn tracker() -> Tracker {
    Tracker::new(http::Redaction::default(), Arc::new(Counters::default()))
}

fn dns_query(id: u16, name: &str, t: RecordType) -> Vec<u8> {
    let mut m = DnsMessage::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_str(name).unwrap(), t));
    m.to_vec().unwrap()
}

fn dns_answer(id: u16, name: &str, rcode: ResponseCode, answers: Vec<DnsRecord>) -> Vec<u8> {
    let mut m = DnsMessage::new(id, MessageType::Response, OpCode::Query);
    m.metadata.response_code = rcode;
    m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
    for a in answers {
        m.add_answer(a);
    }
    m.to_vec().unwrap()
}

fn a_record(name: &str, ip: [u8; 4], ttl: u32) -> DnsRecord {
    DnsRecord::from_rdata(
        Name::from_str(name).unwrap(),
        ttl,
        RData::A(rdata::A(Ipv4Addr::from(ip))),
    )
}

fn dns_of(r: &Record) -> &flow::Dns {
    match &r.l7.record {
        Some(layer7::Record::Dns(d)) => d,
        other => panic!("not DNS: {other:?}"),
    }
}

fn http_of(r: &Record) -> &flow::Http {
    match &r.l7.record {
        Some(layer7::Record::Http(h)) => h,
        other => panic!("not HTTP: {other:?}"),
    }
}

#[test]
fn a_dns_answer_is_paired_with_its_query_and_names_the_address() {
    let mut t = tracker();
    let q = dns_query(0x1234, "api.shop.svc.", RecordType::A);
    let ev = event(1_000_000, true, IPPROTO_UDP, 53);
    let req = t.record(&ev, &header(l7::DNS_UDP, &q, 0), &q).unwrap();
    assert_eq!(req.summary, "DNS Query api.shop.svc. A");
    assert!(!req.response);
    assert_eq!(req.l7.r#type, L7FlowType::Request as i32);

    let answer = dns_answer(
        0x1234,
        "api.shop.svc.",
        ResponseCode::NoError,
        vec![a_record("api.shop.svc.", [10, 0, 0, 7], 30)],
    );
    let ev = event(4_000_000, false, IPPROTO_UDP, 53);
    let resp = t
        .record(&ev, &header(l7::DNS_UDP, &answer, 0), &answer)
        .unwrap();
    assert_eq!(
        resp.summary,
        r#"DNS Answer "10.0.0.7" TTL: 30 (Proxy api.shop.svc. A)"#
    );
    assert_eq!(resp.l7.latency_ns, 3_000_000);
    let d = dns_of(&resp);
    assert_eq!((d.rcode, d.ttl), (0, 30));
    assert_eq!(d.ips, ["10.0.0.7"]);
    assert_eq!(d.rrtypes, ["A"]);
    assert_eq!(d.qtypes, ["A"]);

    let client = v4_mapped(CLIENT);
    let ip = "10.0.0.7".parse().unwrap();
    assert_eq!(t.names.lookup(&client, &ip, 5_000_000), ["api.shop.svc"]);
    // Only for the client that asked, and only until the TTL ends.
    assert!(
        t.names
            .lookup(&v4_mapped(SERVER), &ip, 5_000_000)
            .is_empty()
    );
    assert!(t.names.lookup(&client, &ip, 40_000_000_000).is_empty());
}

#[test]
fn nxdomain_and_cnames() {
    let mut t = tracker();
    let nx = dns_answer(9, "nope.example.", ResponseCode::NXDomain, vec![]);
    let ev = event(1, false, IPPROTO_UDP, 53);
    let r = t.record(&ev, &header(l7::DNS_UDP, &nx, 0), &nx).unwrap();
    assert_eq!(
        r.summary,
        "DNS Answer RCode: NXDOMAIN TTL: 0 (Proxy nope.example. A)"
    );
    assert_eq!(dns_of(&r).rcode, 3);
    // No query was seen for it.
    assert_eq!(t.counters.get(Count::Unmatched), 1);

    let cname = DnsRecord::from_rdata(
        Name::from_str("www.example.").unwrap(),
        60,
        RData::CNAME(rdata::CNAME(Name::from_str("web.example.").unwrap())),
    );
    let ans = dns_answer(
        10,
        "www.example.",
        ResponseCode::NoError,
        vec![cname, a_record("web.example.", [10, 0, 0, 8], 20)],
    );
    let r = t.record(&ev, &header(l7::DNS_UDP, &ans, 0), &ans).unwrap();
    let d = dns_of(&r);
    assert_eq!(d.cnames, ["web.example."]);
    assert_eq!(d.rrtypes, ["CNAME", "A"]);
    assert_eq!(d.ttl, 20);
    let ip = "10.0.0.8".parse().unwrap();
    assert_eq!(
        t.names.lookup(&v4_mapped(CLIENT), &ip, 2),
        ["www.example", "web.example"]
    );
}

#[test]
fn dns_cut_at_the_capture_length_keeps_what_it_has() {
    let mut t = tracker();
    let ans = dns_answer(
        11,
        "two.example.",
        ResponseCode::NoError,
        vec![
            a_record("two.example.", [10, 0, 0, 1], 5),
            a_record("two.example.", [10, 0, 0, 2], 5),
        ],
    );
    let cut = &ans[..ans.len() - 3];
    let mut h = header(l7::DNS_UDP, &ans, 0);
    h.captured = cut.len() as u32;
    let r = t
        .record(&event(1, false, IPPROTO_UDP, 53), &h, cut)
        .unwrap();
    assert!(r.l7.webb_truncated);
    assert_eq!(dns_of(&r).ips, ["10.0.0.1"]);
    assert_eq!(t.counters.truncated.load(Ordering::Relaxed), 1);

    // The same bytes without the cut: the message itself is broken.
    let h = header(l7::DNS_UDP, cut, 0);
    assert!(
        t.record(&event(1, false, IPPROTO_UDP, 53), &h, cut)
            .is_none()
    );
    assert_eq!(t.counters.get(Count::Error(Error::DnsBadRecord)), 1);
}

#[test]
fn dns_over_tcp_has_a_length_prefix() {
    let mut t = tracker();
    let q = dns_query(5, "tcp.example.", RecordType::AAAA);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    let ev = event(1, true, IPPROTO_TCP, 53);
    let r = t
        .record(&ev, &header(l7::DNS_TCP, &framed, 1), &framed)
        .unwrap();
    assert_eq!(r.summary, "DNS Query tcp.example. AAAA");
    // A segment from the middle of a message is not a message.
    let mid = [0u8, 3, 1, 2, 3];
    assert!(t.record(&ev, &header(l7::DNS_TCP, &mid, 2), &mid).is_none());
    assert_eq!(t.counters.get(Count::Error(Error::DnsTcpSegment)), 1);
}

#[test]
fn malformed_dns_is_counted_by_reason() {
    let mut t = tracker();
    let ev = event(1, true, IPPROTO_UDP, 53);
    for (bytes, reason) in [
        (&[1u8, 2, 3][..], Error::DnsShort),
        (&[0u8; 12][..], Error::DnsNoQuestion),
        (
            &[0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0xff][..],
            Error::DnsBadQuestion,
        ),
    ] {
        assert!(
            t.record(&ev, &header(l7::DNS_UDP, bytes, 0), bytes)
                .is_none()
        );
        assert_eq!(t.counters.get(Count::Error(reason)), 1, "{reason:?}");
    }
}

#[test]
fn pipelined_http_responses_pair_in_order() {
    let mut t = tracker();
    let get = b"GET /items HTTP/1.1\r\nHost: cart:8080\r\n\r\n";
    let post = b"POST /checkout HTTP/1.1\r\nHost: cart:8080\r\nContent-Length: 0\r\n\r\n";
    let r1 = t
        .record(
            &event(1_000_000, true, IPPROTO_TCP, 8080),
            &header(l7::HTTP, get, 1),
            get,
        )
        .unwrap();
    assert_eq!(r1.summary, "HTTP/1.1 GET http://cart:8080/items");
    assert_eq!(http_of(&r1).headers[0].key, "Host");
    t.record(
        &event(2_000_000, true, IPPROTO_TCP, 8080),
        &header(l7::HTTP, post, 100),
        post,
    )
    .unwrap();

    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let err = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";
    let a = t
        .record(
            &event(5_000_000, false, IPPROTO_TCP, 8080),
            &header(l7::HTTP, ok, 1),
            ok,
        )
        .unwrap();
    let b = t
        .record(
            &event(9_000_000, false, IPPROTO_TCP, 8080),
            &header(l7::HTTP, err, 50),
            err,
        )
        .unwrap();
    assert_eq!(a.summary, "HTTP/1.1 200 4ms (GET http://cart:8080/items)");
    assert_eq!(a.l7.latency_ns, 4_000_000);
    assert!(a.response);
    let hb = http_of(&b);
    assert_eq!((hb.code, hb.method.as_str()), (500, "POST"));
    assert_eq!(hb.url, "http://cart:8080/checkout");
    assert_eq!(b.l7.latency_ns, 7_000_000);
}

#[test]
fn an_interim_response_does_not_consume_the_request() {
    let mut t = tracker();
    let put = b"PUT /f HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n";
    t.record(
        &event(1, true, IPPROTO_TCP, 80),
        &header(l7::HTTP, put, 1),
        put,
    )
    .unwrap();
    let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
    let done = b"HTTP/1.1 201 Created\r\n\r\n";
    let c = t
        .record(
            &event(5, false, IPPROTO_TCP, 80),
            &header(l7::HTTP, cont, 1),
            cont,
        )
        .unwrap();
    assert_eq!(http_of(&c).method, "PUT");
    let d = t
        .record(
            &event(9, false, IPPROTO_TCP, 80),
            &header(l7::HTTP, done, 30),
            done,
        )
        .unwrap();
    assert_eq!((http_of(&d).code, d.l7.latency_ns), (201, 8));
}

#[test]
fn secrets_are_redacted_by_default_and_on_request_only() {
    let req = b"GET /search?q=shoes&token=abc HTTP/1.1\r\nHost: shop\r\n\
        Authorization: Bearer s3cret\r\nCookie: sid=1\r\nUser-Agent: curl/8\r\n\r\n";
    let mut t = tracker();
    let r = t
        .record(
            &event(1, true, IPPROTO_TCP, 80),
            &header(l7::HTTP, req, 1),
            req,
        )
        .unwrap();
    let h = http_of(&r);
    assert_eq!(
        h.url,
        "http://shop/search?q=HUBBLE_REDACTED&token=HUBBLE_REDACTED"
    );
    let value = |k: &str| {
        h.headers
            .iter()
            .find(|x| x.key == k)
            .map(|x| x.value.clone())
            .unwrap()
    };
    assert_eq!(value("Authorization"), http::REDACTED);
    assert_eq!(value("Cookie"), http::REDACTED);
    assert_eq!(value("User-Agent"), "curl/8");
    assert!(!r.summary.contains("abc"));

    let mut keep = tracker();
    keep.redaction = http::Redaction {
        url_query: false,
        userinfo: false,
        headers_deny: Default::default(),
        headers_allow: Some(["host".to_owned()].into()),
    };
    let r = keep
        .record(
            &event(1, true, IPPROTO_TCP, 80),
            &header(l7::HTTP, req, 1),
            req,
        )
        .unwrap();
    let h = http_of(&r);
    assert!(h.url.ends_with("?q=shoes&token=abc"));
    // With an allow list, everything else is hidden.
    assert_eq!(h.headers[0].value, "shop");
    assert_eq!(h.headers[3].value, http::REDACTED);

    let r = http::Redaction::default();
    assert_eq!(
        r.url("http://bob:pw@example.com/x?a=1#frag"),
        "http://bob:HUBBLE_REDACTED@example.com/x?a=HUBBLE_REDACTED#frag"
    );
    assert_eq!(
        r.url("http://example.com/x?flag"),
        "http://example.com/x?flag"
    );
}

#[test]
fn a_head_cut_short_keeps_its_complete_lines() {
    let mut t = tracker();
    let full = b"GET /a HTTP/1.1\r\nHost: h\r\nX-Long: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let cut = &full[..40];
    let mut h = header(l7::HTTP, full, 1);
    h.captured = cut.len() as u32;
    let r = t.record(&event(1, true, IPPROTO_TCP, 80), &h, cut).unwrap();
    assert!(r.l7.webb_truncated);
    let http = http_of(&r);
    assert_eq!(http.url, "http://h/a");
    assert_eq!(http.headers.len(), 1);
}

#[test]
fn retransmissions_and_garbage_are_counted_not_shown() {
    let mut t = tracker();
    let get = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    let ev = event(1, true, IPPROTO_TCP, 80);
    assert!(t.record(&ev, &header(l7::HTTP, get, 7), get).is_some());
    assert!(t.record(&ev, &header(l7::HTTP, get, 7), get).is_none());
    assert_eq!(t.counters.get(Count::Retransmission), 1);

    for junk in [
        &b"GET"[..],
        b"GET \x00\x01 HTTP/9\r\n\r\n",
        b"HTTP/1.1 abc\r\n\r\n",
    ] {
        assert!(t.record(&ev, &header(l7::HTTP, junk, 9), junk).is_none());
    }
    assert_eq!(t.counters.get(Count::Error(Error::HttpShort)), 1);
    assert_eq!(t.counters.get(Count::Error(Error::HttpBadHead)), 2);
    assert_eq!(t.counters.flows.load(Ordering::Relaxed), 1);
}

#[test]
fn a_response_without_its_request_still_shows() {
    let mut t = tracker();
    let ok = b"HTTP/1.0 404 Not Found\r\n\r\n";
    let r = t
        .record(
            &event(1, false, IPPROTO_TCP, 80),
            &header(l7::HTTP, ok, 1),
            ok,
        )
        .unwrap();
    assert_eq!(r.summary, "HTTP/1.0 404 (request not seen)");
    assert_eq!(r.l7.latency_ns, 0);
    assert_eq!(t.counters.get(Count::Unmatched), 1);
}

#[test]
fn pairing_state_expires() {
    let mut t = tracker();
    let q = dns_query(1, "a.", RecordType::A);
    t.record(
        &event(0, true, IPPROTO_UDP, 53),
        &header(l7::DNS_UDP, &q, 0),
        &q,
    )
    .unwrap();
    let get = b"GET / HTTP/1.1\r\n\r\n";
    t.record(
        &event(0, true, IPPROTO_TCP, 80),
        &header(l7::HTTP, get, 1),
        get,
    )
    .unwrap();
    t.sweep(DNS_TIMEOUT_NS + CONN_IDLE_NS);
    assert!(t.dns.is_empty() && t.conns.is_empty());
}
