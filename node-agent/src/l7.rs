//! L7 records from packet payloads: DNS messages and HTTP/1.x heads that the
//! kernel copied behind a flow event ([`node_agent_ebpf::L7Record`]).
//!
//! [`Tracker`] parses a payload, pairs a response with its request (DNS by
//! 5-tuple and id, HTTP in order on its connection) for the latency, redacts
//! secrets, and keeps the DNS answers as an IP-to-name cache for later
//! L3/L4 flows. It runs on the ingest thread, so it needs no locks; what it
//! counts is shared through [`Counters`].
//!
//! The kernel copies each message once per node (where it leaves a pod
//! watched here, else where it enters one, else at the host socket), so
//! pairing is per node: a request seen leaving the client's veth pairs with
//! the response seen leaving the server's. With every trace point on
//! (`--trace-points all`) the same message is copied at each point, and
//! pairing is per vantage point: each copy pairs with the response seen at
//! its own point.

pub mod dns;
pub mod http;
mod names;
pub mod tls;

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::atomic::{AtomicU64, Ordering},
};

use node_agent_ebpf::{Addr, FlowEvent, L7Header, l7, point};
use webb_proto::flow::{self, HttpHeader, L7FlowType, Layer7, layer7};

pub use names::NameCache;

/// Why a payload produced no flow, or produced one with something missing.
/// Each is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than a DNS header.
    DnsShort,
    /// A TCP segment inside a DNS message rather than at its start.
    DnsTcpSegment,
    DnsNoQuestion,
    DnsBadQuestion,
    DnsBadRecord,
    /// Not even a complete request or status line.
    HttpShort,
    /// Not HTTP/1.x after all.
    HttpBadHead,
    /// Shorter than a TLS record and ClientHello header.
    TlsShort,
    /// Not a well-formed ClientHello.
    TlsBadHello,
    /// The kernel record is shorter than its header says.
    BadRecord,
}

/// Counted events of the L7 path that are not flows: parse errors, and the
/// pairing outcomes worth knowing about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Error(Error),
    /// A retransmitted segment, already reported once.
    Retransmission,
    /// A response whose request was not seen (started before the agent, or
    /// its record was lost).
    Unmatched,
    /// A request dropped from pairing because too many were outstanding.
    PairingFull,
}

impl Count {
    pub const ALL: [Count; 13] = [
        Count::Error(Error::DnsShort),
        Count::Error(Error::DnsTcpSegment),
        Count::Error(Error::DnsNoQuestion),
        Count::Error(Error::DnsBadQuestion),
        Count::Error(Error::DnsBadRecord),
        Count::Error(Error::HttpShort),
        Count::Error(Error::HttpBadHead),
        Count::Error(Error::TlsShort),
        Count::Error(Error::TlsBadHello),
        Count::Error(Error::BadRecord),
        Count::Retransmission,
        Count::Unmatched,
        Count::PairingFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Count::Error(Error::DnsShort) => "dns_short",
            Count::Error(Error::DnsTcpSegment) => "dns_tcp_segment",
            Count::Error(Error::DnsNoQuestion) => "dns_no_question",
            Count::Error(Error::DnsBadQuestion) => "dns_bad_question",
            Count::Error(Error::DnsBadRecord) => "dns_bad_record",
            Count::Error(Error::HttpShort) => "http_short",
            Count::Error(Error::HttpBadHead) => "http_bad_head",
            Count::Error(Error::TlsShort) => "tls_short",
            Count::Error(Error::TlsBadHello) => "tls_bad_hello",
            Count::Error(Error::BadRecord) => "bad_kernel_record",
            Count::Retransmission => "retransmission",
            Count::Unmatched => "unmatched_response",
            Count::PairingFull => "pairing_full",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

/// L7 counters, shared with the server for ServerStatus.
#[derive(Default)]
pub struct Counters {
    /// Records turned into flows.
    pub flows: AtomicU64,
    /// Records that were truncated.
    pub truncated: AtomicU64,
    counts: [AtomicU64; Count::ALL.len()],
}

impl Counters {
    pub fn add(&self, c: Count) {
        self.counts[c.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, c: Count) -> u64 {
        self.counts[c.index()].load(Ordering::Relaxed)
    }

    /// Every non-zero count by name, with `truncated`.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Count::ALL
            .iter()
            .map(|c| (c.name(), self.get(*c)))
            .chain([("truncated", self.truncated.load(Ordering::Relaxed))])
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// A connection, as seen on this node (scope 0) or at one vantage point:
/// the interface for TC points, the cgroup for cgroup points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ConnKey {
    scope: u64,
    client: Addr,
    server: Addr,
    client_port: u16,
    server_port: u16,
}

impl ConnKey {
    /// The connection of an event; `from_client` says the packet goes from
    /// client to server.
    fn new(ev: &FlowEvent, from_client: bool, per_point: bool) -> Self {
        let k = &ev.key;
        let scope = match k.point {
            _ if !per_point => 0,
            point::CGROUP_EGRESS | point::CGROUP_INGRESS => ev.cgroup_id | 1 << 63,
            _ => u64::from(ev.ifindex),
        };
        if from_client {
            Self {
                scope,
                client: k.src,
                server: k.dst,
                client_port: k.sport,
                server_port: k.dport,
            }
        } else {
            Self {
                scope,
                client: k.dst,
                server: k.src,
                client_port: k.dport,
                server_port: k.sport,
            }
        }
    }
}

struct PendingHttp {
    ts_ns: u64,
    method: String,
    url: String,
}

#[derive(Default)]
struct Conn {
    pending: VecDeque<PendingHttp>,
    /// Sequence numbers of the last request and response segments, to skip
    /// retransmissions.
    last_seq: [Option<u32>; 2],
    last_ns: u64,
}

/// Outstanding requests per connection, and connections and DNS queries
/// tracked at once; beyond these, pairing gives up (counted), flows do not.
const MAX_PIPELINE: usize = 64;
const MAX_CONNS: usize = 65_536;
const MAX_DNS_PENDING: usize = 65_536;
/// Pairing state older than this is dropped.
const DNS_TIMEOUT_NS: u64 = 30_000_000_000;
const CONN_IDLE_NS: u64 = 300_000_000_000;

/// What the tracker makes of one record: the L7 section and summary of its
/// flow.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub l7: Layer7,
    pub summary: String,
    /// A response (`is_reply` in the flow).
    pub response: bool,
}

pub struct Tracker {
    pub redaction: http::Redaction,
    dns: HashMap<(ConnKey, u16), u64>,
    conns: HashMap<ConnKey, Conn>,
    pub names: NameCache,
    pub counters: std::sync::Arc<Counters>,
    /// Pair per vantage point, not per node: the kernel copies each
    /// message at every point (`--trace-points all`).
    pub per_point: bool,
}

impl Tracker {
    pub fn new(redaction: http::Redaction, counters: std::sync::Arc<Counters>) -> Self {
        Self {
            redaction,
            dns: HashMap::new(),
            conns: HashMap::new(),
            names: NameCache::default(),
            counters,
            per_point: false,
        }
    }

    /// Parses one kernel record; `None` when it yields no flow (counted).
    pub fn record(&mut self, ev: &FlowEvent, hdr: &L7Header, payload: &[u8]) -> Option<Record> {
        let cut = hdr.captured < hdr.payload_len;
        let result = match hdr.proto {
            l7::DNS_UDP => self.dns(ev, payload, false, cut),
            l7::DNS_TCP => self.dns(ev, payload, true, cut),
            l7::HTTP => self.http(ev, hdr, payload),
            l7::TLS => self.tls(hdr, payload),
            _ => Err(Count::Error(Error::BadRecord)),
        };
        match result {
            Ok(r) => {
                self.counters.flows.fetch_add(1, Ordering::Relaxed);
                if r.l7.webb_truncated {
                    self.counters.truncated.fetch_add(1, Ordering::Relaxed);
                }
                Some(r)
            }
            Err(c) => {
                self.counters.add(c);
                None
            }
        }
    }

    fn dns(
        &mut self,
        ev: &FlowEvent,
        payload: &[u8],
        tcp: bool,
        cut: bool,
    ) -> Result<Record, Count> {
        let m = dns::parse(payload, tcp, cut).map_err(Count::Error)?;
        let key = (ConnKey::new(ev, !m.response, self.per_point), m.id);
        let qtypes = m.qtypes.join(",");
        let mut latency_ns = 0;
        let summary = if m.response {
            match self.dns.remove(&key) {
                Some(ts) => latency_ns = ev.ts_ns.saturating_sub(ts).max(1),
                None => self.counters.add(Count::Unmatched),
            }
            if m.rcode == 0 {
                self.names.learn(&key.0.client, &m, ev.ts_ns);
            }
            let answer = if m.rcode != 0 {
                format!("RCode: {}", dns::rcode_name(m.rcode))
            } else {
                let ips: Vec<String> = m.ips.iter().map(ToString::to_string).collect();
                let mut a = format!("{:?}", ips.join(","));
                if !m.cnames.is_empty() {
                    a.push_str(&format!(" CNAMEs: {:?}", m.cnames.join(",")));
                }
                a
            };
            format!(
                "DNS Answer {answer} TTL: {} (Proxy {} {qtypes})",
                m.ttl, m.query
            )
        } else {
            if self.dns.len() >= MAX_DNS_PENDING {
                self.sweep(ev.ts_ns);
            }
            if self.dns.len() < MAX_DNS_PENDING {
                // A retry keeps the first attempt's time: the latency is what
                // the client waited.
                self.dns.entry(key).or_insert(ev.ts_ns);
            } else {
                self.counters.add(Count::PairingFull);
            }
            format!("DNS Query {} {qtypes}", m.query)
        };
        Ok(Record {
            l7: Layer7 {
                r#type: if m.response {
                    L7FlowType::Response
                } else {
                    L7FlowType::Request
                } as i32,
                latency_ns,
                record: Some(layer7::Record::Dns(flow::Dns {
                    query: m.query,
                    ips: m.ips.iter().map(ToString::to_string).collect(),
                    ttl: m.ttl,
                    cnames: m.cnames,
                    observation_source: "webb".to_owned(),
                    rcode: m.rcode,
                    qtypes: m.qtypes,
                    rrtypes: m.rrtypes,
                })),
                webb_truncated: m.truncated,
                webb_tls: None,
            },
            summary,
            response: m.response,
        })
    }

    fn http(&mut self, ev: &FlowEvent, hdr: &L7Header, payload: &[u8]) -> Result<Record, Count> {
        let parsed = http::parse(payload).map_err(Count::Error)?;
        let truncated = parsed.truncated || hdr.captured < hdr.payload_len;
        let response = matches!(parsed.head, http::Head::Response { .. });
        let key = ConnKey::new(ev, !response, self.per_point);
        let side = usize::from(response);
        if !self.conns.contains_key(&key) && self.conns.len() >= MAX_CONNS {
            self.sweep(ev.ts_ns);
        }
        let tracked = self.conns.len() < MAX_CONNS || self.conns.contains_key(&key);
        let mut scratch = Conn::default();
        let conn = if tracked {
            self.conns.entry(key).or_default()
        } else {
            &mut scratch
        };
        if conn.last_seq[side] == Some(hdr.tcp_seq) {
            return Err(Count::Retransmission);
        }
        conn.last_seq[side] = Some(hdr.tcp_seq);
        conn.last_ns = ev.ts_ns;

        let (http, latency_ns, summary) = match parsed.head {
            http::Head::Request {
                method,
                target,
                protocol,
                mut headers,
            } => {
                let server = server_address(ev);
                let url = self.redaction.url(&http::url(&target, &headers, &server));
                self.redaction.headers(&mut headers);
                if conn.pending.len() >= MAX_PIPELINE || !tracked {
                    conn.pending.pop_front();
                    self.counters.add(Count::PairingFull);
                }
                if tracked {
                    conn.pending.push_back(PendingHttp {
                        ts_ns: ev.ts_ns,
                        method: method.clone(),
                        url: url.clone(),
                    });
                }
                let summary = format!("{protocol} {method} {url}");
                (
                    flow::Http {
                        code: 0,
                        method,
                        url,
                        protocol: protocol.to_owned(),
                        headers: to_headers(headers),
                    },
                    0,
                    summary,
                )
            }
            http::Head::Response {
                code,
                protocol,
                mut headers,
            } => {
                self.redaction.headers(&mut headers);
                // 1xx responses (but 101, the last before a protocol switch)
                // precede the final response to the same request.
                let interim = (100..200).contains(&code) && code != 101;
                let request = if interim {
                    conn.pending.front().map(|p| PendingHttp {
                        ts_ns: p.ts_ns,
                        method: p.method.clone(),
                        url: p.url.clone(),
                    })
                } else {
                    conn.pending.pop_front()
                };
                let (latency_ns, summary, method, url) = match request {
                    Some(r) => {
                        let latency = ev.ts_ns.saturating_sub(r.ts_ns).max(1);
                        let summary = format!(
                            "{protocol} {code} {}ms ({} {})",
                            latency / 1_000_000,
                            r.method,
                            r.url
                        );
                        (latency, summary, r.method, r.url)
                    }
                    None => {
                        self.counters.add(Count::Unmatched);
                        (
                            0,
                            format!("{protocol} {code} (request not seen)"),
                            String::new(),
                            String::new(),
                        )
                    }
                };
                (
                    flow::Http {
                        code: u32::from(code),
                        method,
                        url,
                        protocol: protocol.to_owned(),
                        headers: to_headers(headers),
                    },
                    latency_ns,
                    summary,
                )
            }
        };
        Ok(Record {
            l7: Layer7 {
                r#type: if response {
                    L7FlowType::Response
                } else {
                    L7FlowType::Request
                } as i32,
                latency_ns,
                record: Some(layer7::Record::Http(http)),
                webb_truncated: truncated,
                webb_tls: None,
            },
            summary,
            response,
        })
    }

    /// A ClientHello: one request flow carrying what the client offered.
    fn tls(&mut self, hdr: &L7Header, payload: &[u8]) -> Result<Record, Count> {
        let h = tls::parse(payload).map_err(Count::Error)?;
        let truncated = h.truncated || hdr.captured < hdr.payload_len;
        let mut summary = format!("TLS ClientHello {}", h.version);
        if !h.server_name.is_empty() {
            summary.push_str(&format!(" SNI {}", h.server_name));
        }
        if !h.alpn.is_empty() {
            summary.push_str(&format!(" ALPN {}", h.alpn.join(",")));
        }
        Ok(Record {
            l7: Layer7 {
                r#type: L7FlowType::Request as i32,
                latency_ns: 0,
                record: None,
                webb_truncated: truncated,
                webb_tls: Some(flow::WebbTlsClientHello {
                    server_name: h.server_name,
                    alpn: h.alpn,
                    version: h.version,
                }),
            },
            summary,
            response: false,
        })
    }

    /// Drops pairing state that can no longer pair: DNS queries unanswered
    /// for 30 s, connections idle for 5 minutes, expired names.
    pub fn sweep(&mut self, now_ns: u64) {
        self.dns
            .retain(|_, ts| now_ns.saturating_sub(*ts) < DNS_TIMEOUT_NS);
        self.conns
            .retain(|_, c| now_ns.saturating_sub(c.last_ns) < CONN_IDLE_NS);
        self.names.sweep(now_ns);
    }
}

fn to_headers(headers: Vec<(String, String)>) -> Vec<HttpHeader> {
    headers
        .into_iter()
        .map(|(key, value)| HttpHeader { key, value })
        .collect()
}

/// `ip:port` of the packet's server side, for a request without a Host.
fn server_address(ev: &FlowEvent) -> String {
    let ip = to_ip(&ev.key.dst, ev.ip_version);
    match ip {
        IpAddr::V4(_) => format!("{ip}:{}", ev.key.dport),
        IpAddr::V6(_) => format!("[{ip}]:{}", ev.key.dport),
    }
}

pub fn to_ip(a: &Addr, version: u8) -> IpAddr {
    if version == 4 {
        IpAddr::V4(std::net::Ipv4Addr::new(a[12], a[13], a[14], a[15]))
    } else {
        IpAddr::V6(std::net::Ipv6Addr::from(*a))
    }
}

#[cfg(test)]
mod tests;
