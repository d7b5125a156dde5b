//! L7 parse-rate benchmark: kernel L7 records (flow event, header, payload)
//! through the agent's real decoder, one core, as the ingest thread runs
//! them: DNS queries and answers (hickory-proto) and HTTP request and
//! response heads (httparse), each paired with its request and turned into
//! a Hubble `Flow`, and TLS ClientHellos (tls-parser) read for their server
//! name.
//!
//! `cargo bench -p webb-agent --bench l7`
//!
//! The DNS messages are encoded by hickory-proto, the HTTP heads are what
//! curl and Python's http.server send; 5-tuples, DNS ids and names vary.

use std::{hint::black_box, str::FromStr as _, time::Instant};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RData, Record, RecordType, rdata},
};
use node_agent_ebpf::{FlowEvent, FlowKey, L7Header, emit, kind, l7, point, v4_mapped};
use webb_agent::decode::{Decoded, Decoder, l7_record_bytes};

mod common;

/// The same allocator as the webb-agent binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ENDPOINTS: &str = "
host_ips: [10.99.0.1]
endpoints:
  - {namespace: shop, pod: frontend-1, labels: {app: frontend}, workload: {kind: Deployment, name: frontend}, ips: [10.99.0.10]}
  - {namespace: shop, pod: cart-1, labels: {app: cart}, workload: {kind: Deployment, name: cart}, ips: [10.99.0.11]}
  - {namespace: kube-system, pod: coredns-1, labels: {k8s-app: kube-dns}, ips: [10.99.0.53]}
";

fn decoder() -> Decoder {
    common::decoder(ENDPOINTS)
}

fn record(
    ts_ns: u64,
    client_port: u16,
    (server, server_port): ([u8; 4], u16),
    from_client: bool,
    proto: u8,
    seq: u32,
    payload: &[u8],
) -> Vec<u8> {
    let client = [10, 99, 0, 10];
    let (src, dst, sport, dport) = if from_client {
        (client, server, client_port, server_port)
    } else {
        (server, client, server_port, client_port)
    };
    let ev = FlowEvent {
        ts_ns,
        key: FlowKey {
            src: v4_mapped(src),
            dst: v4_mapped(dst),
            sport,
            dport,
            proto: if proto == l7::HTTP || proto == l7::TLS {
                6
            } else {
                17
            },
            point: if from_client {
                point::TC_INGRESS
            } else {
                point::TC_EGRESS
            },
            _pad: [0; 2],
        },
        ifindex: 7,
        kind: kind::TRACE,
        emit: emit::L7,
        ip_version: 4,
        ..Default::default()
    };
    let hdr = L7Header {
        tcp_seq: seq,
        payload_len: payload.len() as u32,
        captured: payload.len() as u32,
        proto,
        _pad: [0; 3],
    };
    l7_record_bytes(&ev, &hdr, payload)
}

fn dns_records(pairs: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(2 * pairs as usize);
    for i in 0..pairs {
        let id = i as u16;
        let name = Name::from_str(&format!("svc-{}.shop.svc.cluster.local.", i % 97)).unwrap();
        let mut q = Message::new(id, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(name.clone(), RecordType::A));
        let mut a = Message::new(id, MessageType::Response, OpCode::Query);
        a.add_query(Query::query(name.clone(), RecordType::A));
        a.add_answer(Record::from_rdata(
            name,
            30,
            RData::A(rdata::A::new(10, 96, (i % 200) as u8, 7)),
        ));
        let port = 30_000 + (i % 20_000) as u16;
        let ts = 1_000_000 + i * 10_000;
        out.push(record(
            ts,
            port,
            ([10, 99, 0, 53], 53),
            true,
            l7::DNS_UDP,
            0,
            &q.to_vec().unwrap(),
        ));
        out.push(record(
            ts + 500_000,
            port,
            ([10, 99, 0, 53], 53),
            false,
            l7::DNS_UDP,
            0,
            &a.to_vec().unwrap(),
        ));
    }
    out
}

fn http_records(pairs: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(2 * pairs as usize);
    for i in 0..pairs {
        let req = format!(
            "GET /api/v1/items/{}?page={} HTTP/1.1\r\nHost: cart.shop.svc:8080\r\nUser-Agent: curl/8.5.0\r\n\
             Accept: */*\r\nAuthorization: Bearer eyJhbGciOi.{i}\r\nX-Request-Id: {i:016x}\r\n\r\n",
            i % 1000,
            i % 7
        );
        let resp = format!(
            "HTTP/1.1 {} OK\r\nServer: SimpleHTTP/0.6 Python/3.11\r\nDate: Sun, 22 Nov 2026 09:00:00 GMT\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            [200, 200, 200, 404, 500][(i % 5) as usize],
            100 + i % 50
        );
        let port = 30_000 + (i % 2_000) as u16;
        let ts = 1_000_000 + i * 10_000;
        let seq = (i / 2_000) as u32 * 1000 + 1;
        out.push(record(
            ts,
            port,
            ([10, 99, 0, 11], 8080),
            true,
            l7::HTTP,
            seq,
            req.as_bytes(),
        ));
        out.push(record(
            ts + 3_000_000,
            port,
            ([10, 99, 0, 11], 8080),
            false,
            l7::HTTP,
            seq,
            resp.as_bytes(),
        ));
    }
    out
}

/// ClientHellos of about 500 bytes (what curl and browsers send before
/// their post-quantum key shares), each to another server name.
fn tls_records(n: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let hello = webb_agent::l7::tls::client_hello(
                &format!("api-{}.shop.example.com", i % 500),
                &["h2", "http/1.1"],
                &[0x0a0a, 0x0304, 0x0303],
                300,
            );
            record(
                1_000_000 + i * 10_000,
                30_000 + (i % 2_000) as u16,
                ([10, 99, 0, 11], 443),
                true,
                l7::TLS,
                1,
                &hello,
            )
        })
        .collect()
}

/// Decodes every record `rounds` times with a fresh decoder per round;
/// returns records per second and checks each became a flow.
fn rate(records: &[Vec<u8>], rounds: u32) -> f64 {
    let mut best = 0f64;
    for _ in 0..rounds {
        let mut d = decoder();
        let start = Instant::now();
        let mut flows = 0usize;
        for r in records {
            if let Decoded::Flow(f) = d.decode_record(black_box(r)) {
                flows += 1;
                black_box(f);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(flows, records.len(), "every record must become a flow");
        best = best.max(records.len() as f64 / secs);
    }
    best
}

fn main() {
    // `cargo bench` passes --bench; nothing to configure.
    let dns = dns_records(100_000);
    let http = http_records(100_000);
    let dns_rate = rate(&dns, 5);
    let http_rate = rate(&http, 5);
    println!(
        "l7/dns: {:.0} messages/s (queries and answers, paired, into flows; best of 5 x {})",
        dns_rate,
        dns.len()
    );
    println!(
        "l7/http: {:.0} heads/s (requests and responses, paired, redacted, into flows; best of 5 x {})",
        http_rate,
        http.len()
    );
    let tls = tls_records(200_000);
    println!(
        "l7/tls: {:.0} ClientHellos/s (SNI, ALPN and versions read, into flows; best of 5 x {}, {} bytes each)",
        rate(&tls, 5),
        tls.len(),
        tls[0].len()
    );
    // Requests alone, the unit.
    let requests: Vec<Vec<u8>> = http.iter().step_by(2).cloned().collect();
    println!(
        "l7/http-requests: {:.0} request heads/s (best of 5 x {})",
        rate(&requests, 5),
        requests.len()
    );
}
