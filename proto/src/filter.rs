//! The one flow filter engine, used by the agent, the relay, the CLI (for
//! `--input-file`) and the TUI alike.
//!
//! Semantics follow Hubble's `GetFlowsRequest`: the whitelist is a list of
//! [`FlowFilter`]s OR-ed together (an empty whitelist lets everything through),
//! the blacklist likewise, and a flow passes when it matches some whitelist
//! filter and no blacklist filter. Inside one `FlowFilter` the fields are
//! AND-ed, and the values of one repeated field are OR-ed.
//!
//! Filters are compiled once ([`FlowFilters::compile`]): regular expressions,
//! CIDRs and label selectors are parsed up front, so a bad filter is an error
//! for the request, never a silent non-match.

use std::net::IpAddr;

use ipnet::IpNet;
use regex::Regex;

mod cel;

use crate::flow::{
    Endpoint, EventTypeFilter, Flow, FlowFilter, HttpHeader, NetworkInterface, TcpFlags, Verdict,
    Workload, layer4, layer7,
};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FilterError {
    #[error("{field}: {value:?} is not an IP address or CIDR")]
    BadIp { field: &'static str, value: String },
    #[error("{field}: {value:?} is not a valid regular expression: {reason}")]
    BadRegex {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("{field}: {value:?} is not a port number (0-65535)")]
    BadPort { field: &'static str, value: String },
    #[error("http_status_code: {value:?} is not a status code or a prefix like \"5+\" or \"40+\"")]
    BadStatus { value: String },
    #[error("{field}: {value:?} is not a label selector: {reason}")]
    BadSelector {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "protocol: {value:?} is not one of tcp, udp, sctp, icmp, icmpv4, icmpv6, vrrp, igmp, dns, http, kafka"
    )]
    BadProtocol { value: String },
    #[error("experimental.cel_expression: {value:?}: {reason}")]
    BadCel { value: String, reason: String },
    /// What Hubble's filter refuses beyond one value's syntax.
    #[error("{field}: {reason}")]
    Refused { field: &'static str, reason: String },
}

/// A compiled whitelist/blacklist pair.
#[derive(Debug, Default, Clone)]
pub struct FlowFilters {
    whitelist: Vec<CompiledFilter>,
    blacklist: Vec<CompiledFilter>,
}

impl FlowFilters {
    pub fn compile(
        whitelist: &[FlowFilter],
        blacklist: &[FlowFilter],
    ) -> Result<Self, FilterError> {
        Ok(Self {
            whitelist: whitelist
                .iter()
                .map(CompiledFilter::new)
                .collect::<Result<_, _>>()?,
            blacklist: blacklist
                .iter()
                .map(CompiledFilter::new)
                .collect::<Result<_, _>>()?,
        })
    }

    /// True when no filter is set, so every flow passes.
    pub fn is_empty(&self) -> bool {
        self.whitelist.is_empty() && self.blacklist.is_empty()
    }

    /// Whether a response that is not a flow (lost events, node status)
    /// passes, as Hubble's file reader decides: it filters such a record as
    /// a missing flow, which every getter reads as empty (so `--not
    /// --verdict X` or `--to-label '!app'` let it through), except the
    /// filters that refuse a missing flow outright: IP version, verdict,
    /// traffic direction and UUID (so `--not --verdict VERDICT_UNKNOWN`
    /// keeps them too).
    pub fn matches_non_flow(&self) -> bool {
        let empty = Flow::default();
        let nil = |f: &CompiledFilter| {
            f.ip_version.is_empty()
                && f.verdict.is_empty()
                && f.traffic_direction.is_empty()
                && f.uuid.is_empty()
                && f.matches(&empty)
        };
        (self.whitelist.is_empty() || self.whitelist.iter().any(nil))
            && !self.blacklist.iter().any(nil)
    }

    pub fn matches(&self, flow: &Flow) -> bool {
        (self.whitelist.is_empty() || self.whitelist.iter().any(|f| f.matches(flow)))
            && !self.blacklist.iter().any(|f| f.matches(flow))
    }
}

/// What a block of stored responses is known to hold, so that a query whose
/// filters cannot match it skips it unread: the verdicts seen (a bit per
/// value below 31, bit 31 for any other), Bloom filters of the L4 ports and
/// of the endpoints' namespaces, and whether it holds anything but flows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub verdicts: u32,
    pub ports: [u64; 2],
    pub namespaces: u64,
    pub non_flows: bool,
}

/// Two bit positions in a 128-bit filter (or, folded, a 64-bit one).
fn bloom_bits(bytes: &[u8]) -> (u32, u32) {
    // FNV-1a: stable across builds and versions, which the files need.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ((h & 127) as u32, ((h >> 7) & 127) as u32)
}

fn verdict_bit(v: i32) -> u32 {
    1 << u32::try_from(v).unwrap_or(31).min(31)
}

impl Summary {
    /// Adds what a stored flow holds.
    pub fn add(&mut self, flow: &Flow) {
        self.verdicts |= verdict_bit(flow.verdict);
        let (sport, dport) = l4_ports(flow);
        for p in [sport, dport].into_iter().flatten() {
            let (a, b) = bloom_bits(&p.to_le_bytes());
            for bit in [a, b] {
                self.ports[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        for e in [&flow.source, &flow.destination].into_iter().flatten() {
            self.add_namespace(&e.namespace);
        }
    }

    fn add_namespace(&mut self, ns: &str) {
        let (a, b) = bloom_bits(ns.as_bytes());
        self.namespaces |= (1 << (a % 64)) | (1 << (b % 64));
    }

    fn may_have_port(&self, p: u16) -> bool {
        let (a, b) = bloom_bits(&p.to_le_bytes());
        [a, b]
            .iter()
            .all(|bit| self.ports[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    fn may_have_namespace(&self, ns: &str) -> bool {
        let (a, b) = bloom_bits(ns.as_bytes());
        let mask = (1 << (a % 64)) | (1 << (b % 64));
        self.namespaces & mask == mask
    }
}

/// What one stored response is known to hold, exactly where [`Summary`]
/// is a Bloom filter: kept beside each response of a block, so that a
/// query decodes only the responses whose key may pass. The verdict
/// (255 for any value outside 0..255), the L4 ports, and 16-bit hashes of
/// the source's and destination's namespaces.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ItemKey {
    flags: u8,
    verdict: u8,
    sport: u16,
    dport: u16,
    src_ns: u16,
    dst_ns: u16,
}

const KEY_NON_FLOW: u8 = 1;
const KEY_SPORT: u8 = 2;
const KEY_DPORT: u8 = 4;

fn ns_hash(ns: &str) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ns.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 48) as u16
}

impl ItemKey {
    /// Bytes per key on disk.
    pub const LEN: usize = 10;

    pub fn of_flow(flow: &Flow) -> Self {
        let (sport, dport) = l4_ports(flow);
        let ns = |e: &Option<Endpoint>| ns_hash(e.as_ref().map_or("", |e| e.namespace.as_str()));
        Self {
            flags: if sport.is_some() { KEY_SPORT } else { 0 }
                | if dport.is_some() { KEY_DPORT } else { 0 },
            verdict: u8::try_from(flow.verdict).unwrap_or(255),
            sport: sport.unwrap_or(0),
            dport: dport.unwrap_or(0),
            src_ns: ns(&flow.source),
            dst_ns: ns(&flow.destination),
        }
    }

    /// The same key with these L4 ports (a flow whose ports are kept
    /// apart from the rest of it, as the agent's compact ring keeps them).
    pub fn with_ports(self, sport: u16, dport: u16) -> Self {
        Self {
            flags: self.flags | KEY_SPORT | KEY_DPORT,
            sport,
            dport,
            ..self
        }
    }

    /// The key of a response that is not a flow (lost events, node status).
    pub fn non_flow() -> Self {
        Self {
            flags: KEY_NON_FLOW,
            ..Self::default()
        }
    }

    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = self.flags;
        b[1] = self.verdict;
        b[2..4].copy_from_slice(&self.sport.to_le_bytes());
        b[4..6].copy_from_slice(&self.dport.to_le_bytes());
        b[6..8].copy_from_slice(&self.src_ns.to_le_bytes());
        b[8..10].copy_from_slice(&self.dst_ns.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; Self::LEN]) -> Self {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            flags: b[0],
            verdict: b[1],
            sport: u16_at(2),
            dport: u16_at(4),
            src_ns: u16_at(6),
            dst_ns: u16_at(8),
        }
    }
}

impl FlowFilters {
    /// Whether the response with this key may pass. False only when it
    /// certainly cannot (as [`FlowFilters::may_match`] for a block); a
    /// response that is not a flow always may, as the observer passes it.
    pub fn may_match_key(&self, k: &ItemKey) -> bool {
        if self.whitelist.is_empty() || k.flags & KEY_NON_FLOW != 0 {
            return true;
        }
        self.whitelist.iter().any(|f| f.may_match_key(k))
    }
}

/// What Hubble's filter builders refuse in a filter whose values each
/// parse: an HTTP field beside an event type filter that cannot match L7
/// (129) events, and empty pod, service and cluster names.
fn check_as_hubble(f: &FlowFilter) -> Result<(), FilterError> {
    let l7_ok = f.event_type.is_empty() || f.event_type.iter().any(|t| t.r#type == 129);
    for (field, set) in [
        ("http_status_code", !f.http_status_code.is_empty()),
        ("http_method", !f.http_method.is_empty()),
        ("http_path", !f.http_path.is_empty()),
        ("http_url", !f.http_url.is_empty()),
        ("http_header", !f.http_header.is_empty()),
    ] {
        if set && !l7_ok {
            return Err(FilterError::Refused {
                field,
                reason: "filtering by it requires the event type filter to only match 'l7' events"
                    .into(),
            });
        }
    }
    for (field, names) in [
        ("source_pod", &f.source_pod),
        ("destination_pod", &f.destination_pod),
        ("source_service", &f.source_service),
        ("destination_service", &f.destination_service),
        ("source_cluster_name", &f.source_cluster_name),
        ("destination_cluster_name", &f.destination_cluster_name),
    ] {
        if names.iter().any(String::is_empty) {
            return Err(FilterError::Refused {
                field,
                reason: "invalid filter, name must not be empty".into(),
            });
        }
    }
    Ok(())
}

impl CompiledFilter {
    fn may_match_key(&self, k: &ItemKey) -> bool {
        let pods = |m: &[PodMatch], hash: u16| {
            m.is_empty()
                || m.iter()
                    .any(|p| p.namespace.is_empty() || ns_hash(&p.namespace) == hash)
        };
        let port = |ps: &PortSet, flag: u8, p: u16| {
            ps.is_empty() || (k.flags & flag != 0 && ps.contains(p))
        };
        (self.verdict.is_empty()
            || self
                .verdict
                .iter()
                .any(|v| k.verdict == 255 || i32::from(k.verdict) == *v))
            && port(&self.source_port, KEY_SPORT, k.sport)
            && port(&self.destination_port, KEY_DPORT, k.dport)
            && pods(&self.source_pod, k.src_ns)
            && pods(&self.destination_pod, k.dst_ns)
    }
}

impl FlowFilters {
    /// Whether anything in a block with this summary may pass. False only
    /// when it certainly cannot: every whitelist filter asks for a verdict,
    /// port or pod namespace the block does not hold. (A blacklist never
    /// rules a block out: it says what to leave, not what to find.)
    pub fn may_match(&self, s: &Summary) -> bool {
        if self.whitelist.is_empty() || (s.non_flows && self.matches_non_flow()) {
            return true;
        }
        self.whitelist.iter().any(|f| f.may_match(s))
    }
}

impl CompiledFilter {
    fn may_match(&self, s: &Summary) -> bool {
        let pods = |m: &[PodMatch]| {
            m.is_empty()
                || m.iter()
                    .any(|p| p.namespace.is_empty() || s.may_have_namespace(&p.namespace))
        };
        let ports = |ps: &PortSet| ps.is_empty() || ps.list.iter().any(|p| s.may_have_port(*p));
        (self.verdict.is_empty()
            || self
                .verdict
                .iter()
                .any(|v| s.verdicts & verdict_bit(*v) != 0))
            && ports(&self.source_port)
            && ports(&self.destination_port)
            && pods(&self.source_pod)
            && pods(&self.destination_pod)
    }
}

/// The ports a filter asks for: the list, and once it is longer than a
/// few, a bitmap of all 65,536 (a 1%-selective query names hundreds of
/// ports and is tested against every flow of a million-flow ring; a scan
/// of the list was a third of its time).
#[derive(Debug, Clone, Default)]
struct PortSet {
    list: Vec<u16>,
    bits: Option<Box<[u64; 1024]>>,
}

impl PortSet {
    fn new(list: Vec<u16>) -> Self {
        let bits = (list.len() > 8).then(|| {
            let mut b = Box::new([0u64; 1024]);
            for p in &list {
                b[usize::from(*p >> 6)] |= 1 << (p & 63);
            }
            b
        });
        Self { list, bits }
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn contains(&self, p: u16) -> bool {
        match &self.bits {
            Some(b) => b[usize::from(p >> 6)] >> (p & 63) & 1 != 0,
            None => self.list.contains(&p),
        }
    }
}

/// One `FlowFilter` with its patterns parsed. Every check is a list of
/// alternatives; an empty list means the field is not constrained.
#[derive(Debug, Clone, Default)]
struct CompiledFilter {
    uuid: Vec<String>,
    source_ip: Vec<IpMatch>,
    source_ip_xlated: Vec<IpMatch>,
    destination_ip: Vec<IpMatch>,
    source_pod: Vec<PodMatch>,
    destination_pod: Vec<PodMatch>,
    source_fqdn: Vec<Regex>,
    destination_fqdn: Vec<Regex>,
    source_label: Vec<Selector>,
    destination_label: Vec<Selector>,
    source_service: Vec<PodMatch>,
    destination_service: Vec<PodMatch>,
    source_workload: Vec<Workload>,
    destination_workload: Vec<Workload>,
    source_cluster_name: Vec<String>,
    destination_cluster_name: Vec<String>,
    traffic_direction: Vec<i32>,
    verdict: Vec<i32>,
    drop_reason_desc: Vec<i32>,
    interface: Vec<NetworkInterface>,
    event_type: Vec<EventTypeFilter>,
    http_status_code: Vec<StatusMatch>,
    protocol: Vec<Protocol>,
    source_port: PortSet,
    destination_port: PortSet,
    reply: Vec<bool>,
    dns_query: Vec<Regex>,
    source_identity: Vec<u32>,
    destination_identity: Vec<u32>,
    http_method: Vec<String>,
    http_path: Vec<Regex>,
    http_url: Vec<Regex>,
    http_header: Vec<HttpHeader>,
    tcp_flags: Vec<TcpFlags>,
    node_name: Vec<Regex>,
    node_labels: Vec<Selector>,
    ip_version: Vec<i32>,
    trace_id: Vec<String>,
    ip_trace_id: Vec<u64>,
    encrypted: Vec<bool>,
    cel: Option<cel::CelFilter>,
    tls_sni: Vec<Regex>,
    tls_version: Vec<String>,
}

/// Passes when the alternatives are empty or any of them matches.
fn any_of<T>(alternatives: &[T], mut f: impl FnMut(&T) -> bool) -> bool {
    alternatives.is_empty() || alternatives.iter().any(&mut f)
}

impl CompiledFilter {
    fn new(f: &FlowFilter) -> Result<Self, FilterError> {
        check_as_hubble(f)?;
        let exprs = f
            .experimental
            .as_ref()
            .map_or(&[][..], |e| &e.cel_expression[..]);
        let cel = cel::CelFilter::compile(exprs).map_err(|reason| FilterError::BadCel {
            value: exprs.join(" | "),
            reason,
        })?;
        Ok(Self {
            cel,
            tls_sni: fqdns("webb_tls_sni", &f.webb_tls_sni)?,
            tls_version: f
                .webb_tls_version
                .iter()
                .map(|v| tls_version_name(v.trim()))
                .collect(),
            uuid: f.uuid.clone(),
            source_ip: ips("source_ip", &f.source_ip)?,
            source_ip_xlated: ips("source_ip_xlated", &f.source_ip_xlated)?,
            destination_ip: ips("destination_ip", &f.destination_ip)?,
            source_pod: f.source_pod.iter().map(|p| PodMatch::new(p)).collect(),
            destination_pod: f.destination_pod.iter().map(|p| PodMatch::new(p)).collect(),
            source_fqdn: fqdns("source_fqdn", &f.source_fqdn)?,
            destination_fqdn: fqdns("destination_fqdn", &f.destination_fqdn)?,
            source_label: selectors("source_label", &f.source_label)?,
            destination_label: selectors("destination_label", &f.destination_label)?,
            source_service: f.source_service.iter().map(|p| PodMatch::new(p)).collect(),
            destination_service: f
                .destination_service
                .iter()
                .map(|p| PodMatch::new(p))
                .collect(),
            source_workload: f.source_workload.clone(),
            destination_workload: f.destination_workload.clone(),
            source_cluster_name: f.source_cluster_name.clone(),
            destination_cluster_name: f.destination_cluster_name.clone(),
            traffic_direction: f.traffic_direction.clone(),
            verdict: f.verdict.clone(),
            drop_reason_desc: f.drop_reason_desc.clone(),
            interface: f.interface.clone(),
            event_type: f.event_type.clone(),
            http_status_code: f
                .http_status_code
                .iter()
                .map(|s| StatusMatch::parse(s))
                .collect::<Result<_, _>>()?,
            protocol: f
                .protocol
                .iter()
                .map(|p| Protocol::parse(p))
                .collect::<Result<_, _>>()?,
            source_port: PortSet::new(ports("source_port", &f.source_port)?),
            destination_port: PortSet::new(ports("destination_port", &f.destination_port)?),
            reply: f.reply.clone(),
            dns_query: regexes("dns_query", &f.dns_query)?,
            source_identity: f.source_identity.clone(),
            destination_identity: f.destination_identity.clone(),
            http_method: f.http_method.clone(),
            http_path: regexes("http_path", &f.http_path)?,
            http_url: regexes("http_url", &f.http_url)?,
            http_header: f.http_header.clone(),
            tcp_flags: f.tcp_flags.clone(),
            node_name: f
                .node_name
                .iter()
                .map(|n| glob("node_name", n))
                .collect::<Result<_, _>>()?,
            node_labels: selectors("node_labels", &f.node_labels)?,
            ip_version: f.ip_version.clone(),
            trace_id: f.trace_id.clone(),
            ip_trace_id: f.ip_trace_id.clone(),
            encrypted: f.encrypted.clone(),
        })
    }

    fn matches(&self, flow: &Flow) -> bool {
        let ip = flow.ip.as_ref();
        let src = flow.source.as_ref();
        let dst = flow.destination.as_ref();
        let http = match flow.l7.as_ref().and_then(|l| l.record.as_ref()) {
            Some(layer7::Record::Http(h)) => Some(h),
            _ => None,
        };
        let dns = match flow.l7.as_ref().and_then(|l| l.record.as_ref()) {
            Some(layer7::Record::Dns(d)) => Some(d),
            _ => None,
        };
        let (sport, dport) = l4_ports(flow);

        any_of(&self.uuid, |u| *u == flow.uuid)
            && any_of(&self.source_ip, |m| {
                ip.is_some_and(|ip| m.matches(&ip.source))
            })
            && any_of(&self.source_ip_xlated, |m| {
                ip.is_some_and(|ip| m.matches(&ip.source_xlated))
            })
            && any_of(&self.destination_ip, |m| {
                ip.is_some_and(|ip| m.matches(&ip.destination))
            })
            && any_of(&self.source_pod, |m| src.is_some_and(|e| m.matches_pod(e)))
            && any_of(&self.destination_pod, |m| {
                dst.is_some_and(|e| m.matches_pod(e))
            })
            && any_of(&self.source_fqdn, |r| {
                flow.source_names.iter().any(|n| r.is_match(n))
            })
            && any_of(&self.destination_fqdn, |r| {
                flow.destination_names.iter().any(|n| r.is_match(n))
            })
            // A missing endpoint has no labels (so `!app` selects it) and a
            // flow without IP header no IP version, as on Hubble's protobuf.
            && any_of(&self.source_label, |s| {
                s.matches(src.map_or(&[][..], |e| &e.labels[..]))
            })
            && any_of(&self.destination_label, |s| {
                s.matches(dst.map_or(&[][..], |e| &e.labels[..]))
            })
            && any_of(&self.source_service, |m| {
                flow.source_service
                    .as_ref()
                    .is_some_and(|s| m.matches(&s.namespace, &s.name))
            })
            && any_of(&self.destination_service, |m| {
                flow.destination_service
                    .as_ref()
                    .is_some_and(|s| m.matches(&s.namespace, &s.name))
            })
            && any_of(&self.source_workload, |w| {
                src.is_some_and(|e| workload_matches(w, e))
            })
            && any_of(&self.destination_workload, |w| {
                dst.is_some_and(|e| workload_matches(w, e))
            })
            && any_of(&self.source_cluster_name, |c| {
                src.is_some_and(|e| e.cluster_name == *c)
            })
            && any_of(&self.destination_cluster_name, |c| {
                dst.is_some_and(|e| e.cluster_name == *c)
            })
            && any_of(&self.traffic_direction, |d| *d == flow.traffic_direction)
            && any_of(&self.verdict, |v| *v == flow.verdict)
            && any_of(&self.drop_reason_desc, |r| {
                flow.verdict == Verdict::Dropped as i32 && *r == flow.drop_reason_desc
            })
            && any_of(&self.interface, |i| {
                flow.interface.as_ref().is_some_and(|fi| {
                    (i.index == 0 || i.index == fi.index)
                        && (i.name.is_empty() || i.name == fi.name)
                })
            })
            && any_of(&self.event_type, |t| {
                flow.event_type.as_ref().is_some_and(|et| {
                    (t.r#type == 0 || et.r#type == t.r#type)
                        && (!t.match_sub_type || et.sub_type == t.sub_type)
                })
            })
            && any_of(&self.http_status_code, |s| {
                http.is_some_and(|h| s.matches(h.code))
            })
            && any_of(&self.protocol, |p| p.matches(flow))
            && (self.source_port.is_empty() || sport.is_some_and(|p| self.source_port.contains(p)))
            && (self.destination_port.is_empty()
                || dport.is_some_and(|p| self.destination_port.contains(p)))
            // No is_reply is not a reply, but only on a drop.
            && any_of(&self.reply, |r| match flow.is_reply {
                Some(v) => v.value == *r,
                None => flow.verdict == Verdict::Dropped as i32 && !*r,
            })
            && any_of(&self.dns_query, |r| {
                dns.is_some_and(|d| r.is_match(&d.query))
            })
            && any_of(&self.source_identity, |id| {
                src.is_some_and(|e| e.identity == *id)
            })
            && any_of(&self.destination_identity, |id| {
                dst.is_some_and(|e| e.identity == *id)
            })
            && any_of(&self.http_method, |m| {
                http.is_some_and(|h| h.method.eq_ignore_ascii_case(m))
            })
            && any_of(&self.http_path, |r| {
                http.is_some_and(|h| url_path(&h.url).is_some_and(|p| r.is_match(&p)))
            })
            && any_of(&self.http_url, |r| http.is_some_and(|h| r.is_match(&h.url)))
            && any_of(&self.http_header, |want| {
                http.is_some_and(|h| {
                    h.headers.iter().any(|got| {
                        got.key.eq_ignore_ascii_case(&want.key) && got.value == want.value
                    })
                })
            })
            && any_of(&self.tcp_flags, |want| {
                tcp_flags(flow).is_some_and(|got| flags_contain(got, want))
            })
            && any_of(&self.node_name, |r| {
                !flow.node_name.is_empty() && r.is_match(&cluster_node_name(&flow.node_name))
            })
            && any_of(&self.node_labels, |s| s.matches(&flow.node_labels))
            && any_of(&self.ip_version, |v| ip.map_or(0, |ip| ip.ip_version) == *v)
            // A flow without them has the empty trace ID and IP trace 0.
            && any_of(&self.trace_id, |t| {
                flow.trace_context
                    .as_ref()
                    .and_then(|c| c.parent.as_ref())
                    .map_or("", |p| &p.trace_id)
                    == t
            })
            && any_of(&self.ip_trace_id, |t| {
                flow.ip_trace_id.as_ref().map_or(0, |i| i.trace_id) == *t
            })
            && any_of(&self.encrypted, |e| ip.is_some_and(|ip| ip.encrypted) == *e)
            && self.cel.as_ref().is_none_or(|c| c.matches(flow))
            && any_of(&self.tls_sni, |r| {
                tls(flow).is_some_and(|t| r.is_match(&t.server_name))
            })
            && any_of(&self.tls_version, |v| tls(flow).is_some_and(|t| t.version == *v))
    }
}

fn ips(field: &'static str, values: &[String]) -> Result<Vec<IpMatch>, FilterError> {
    values.iter().map(|v| IpMatch::parse(field, v)).collect()
}

fn ports(field: &'static str, values: &[String]) -> Result<Vec<u16>, FilterError> {
    values
        .iter()
        .map(|v| {
            // Go's ParseUint(v, 10, 16): digits only, no sign or space.
            v.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| v.parse::<u16>().ok())
                .flatten()
                .ok_or_else(|| FilterError::BadPort {
                    field,
                    value: v.clone(),
                })
        })
        .collect()
}

fn regexes(field: &'static str, values: &[String]) -> Result<Vec<Regex>, FilterError> {
    values
        .iter()
        .map(|v| {
            Regex::new(v).map_err(|e| FilterError::BadRegex {
                field,
                value: v.clone(),
                reason: e.to_string(),
            })
        })
        .collect()
}

fn selectors(field: &'static str, values: &[String]) -> Result<Vec<Selector>, FilterError> {
    values.iter().map(|v| Selector::parse(field, v)).collect()
}

/// FQDN patterns: `*` stands for one DNS label or part of one (Cilium's
/// matchPattern), matching is case-insensitive and ignores a trailing dot.
/// A TLS ClientHello a flow carries (webb's extension).
fn tls(flow: &Flow) -> Option<&crate::flow::WebbTlsClientHello> {
    flow.l7.as_ref()?.webb_tls.as_ref()
}

/// "1.3", "tls1.3", "TLS 1.3" all name TLS 1.3, as the flow spells it.
fn tls_version_name(v: &str) -> String {
    let lower = v.to_ascii_lowercase();
    let number = lower
        .trim_start_matches("tls")
        .trim_start_matches(['v', ' ', '_', '-']);
    if number.starts_with(|c: char| c.is_ascii_digit()) {
        format!("TLS {number}")
    } else {
        v.to_owned()
    }
}

/// FQDN patterns as Hubble's filter reads them: trimmed, one trailing dot
/// dropped, lowercased; then only `-0-9_a-z`, `.` and `*` (any run of
/// `-.0-9a-z`) are allowed, and the whole name must match, case and all.
fn fqdns(field: &'static str, values: &[String]) -> Result<Vec<Regex>, FilterError> {
    values
        .iter()
        .map(|v| anchored(field, v, fqdn_pattern(v)))
        .collect()
}

/// One FQDN pattern as a regex body, or why Hubble refuses it.
fn fqdn_pattern(pattern: &str) -> Result<String, String> {
    let p = pattern.trim();
    let p = p.strip_suffix('.').unwrap_or(p).to_lowercase();
    if p.is_empty() {
        return Err("empty pattern".into());
    }
    if p.ends_with('.') {
        return Err("multiple trailing dots in pattern".into());
    }
    let mut re = String::with_capacity(p.len() * 2);
    for c in p.chars() {
        match c {
            '.' => re.push_str("\\."),
            '*' => re.push_str("[-.0-9a-z]*"),
            '-' | '0'..='9' | '_' | 'a'..='z' => re.push(c),
            _ => return Err(format!("{c:?}: invalid rune in pattern")),
        }
    }
    Ok(re)
}

/// Node name patterns as Hubble's filter reads them: `[CLUSTER/]NODE`,
/// each part an FQDN pattern, an empty or missing part matching any name;
/// matched against `cluster/node`, a node name without a cluster being in
/// Cilium's default cluster (`default`).
fn glob(field: &'static str, value: &str) -> Result<Regex, FilterError> {
    const ANY: &str = "(?:[-0-9_a-z]+(?:\\.[-0-9_a-z]+)*)";
    let body = (|| {
        if value.is_empty() {
            return Err("empty pattern".to_owned());
        }
        let (cluster, node) = match value.split('/').collect::<Vec<_>>()[..] {
            [node] => ("", node),
            [cluster, node] => (cluster, node),
            _ => return Err("too many slashes in pattern".to_owned()),
        };
        let part = |p: &str| {
            if p.is_empty() {
                Ok(ANY.to_owned())
            } else {
                fqdn_pattern(p)
            }
        };
        Ok(format!("{}/{}", part(cluster)?, part(node)?))
    })();
    anchored(field, value, body)
}

/// The node name a node name pattern is matched against.
fn cluster_node_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains('/') {
        name.into()
    } else {
        format!("default/{name}").into()
    }
}

/// A pattern's regex body, matched against the whole text.
fn anchored(
    field: &'static str,
    value: &str,
    body: Result<String, String>,
) -> Result<Regex, FilterError> {
    let bad = |reason: String| FilterError::BadRegex {
        field,
        value: value.to_owned(),
        reason,
    };
    Regex::new(&format!("^(?:{})$", body.map_err(bad)?)).map_err(|e| bad(e.to_string()))
}

/// An IP filter as Hubble's: with a `/` a prefix, else an address, which
/// matches the flow's address as written (Hubble compares the strings).
#[derive(Debug, Clone)]
enum IpMatch {
    Exact(String),
    Net(IpNet),
}

impl IpMatch {
    fn parse(field: &'static str, value: &str) -> Result<Self, FilterError> {
        let bad = || FilterError::BadIp {
            field,
            value: value.to_owned(),
        };
        if value.contains('/') {
            value
                .parse::<IpNet>()
                .map(|n| Self::Net(n.trunc()))
                .map_err(|_| bad())
        } else {
            value.parse::<IpAddr>().map_err(|_| bad())?;
            Ok(Self::Exact(value.to_owned()))
        }
    }

    fn matches(&self, ip: &str) -> bool {
        match self {
            _ if ip.is_empty() => false,
            Self::Exact(want) => want == ip,
            Self::Net(net) => ip.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
        }
    }
}

/// Hubble's `[namespace/][name-prefix]`: `shop/cart` (a pod or service of
/// shop whose name starts with cart), `shop/` (anything in shop), `cart` (in
/// the namespace `default`, as Hubble reads it), `/` (anything in any
/// namespace: `-A`). An endpoint with neither a namespace nor a name (world,
/// host) never matches.
#[derive(Debug, Clone)]
struct PodMatch {
    /// Empty: any namespace.
    namespace: String,
    prefix: String,
}

impl PodMatch {
    fn new(value: &str) -> Self {
        match value.split_once('/') {
            Some((ns, prefix)) => Self {
                namespace: ns.to_owned(),
                prefix: prefix.split('/').next().unwrap_or("").to_owned(),
            },
            None => Self {
                namespace: "default".to_owned(),
                prefix: value.to_owned(),
            },
        }
    }

    fn matches(&self, namespace: &str, name: &str) -> bool {
        if namespace.is_empty() && name.is_empty() {
            return false;
        }
        (self.namespace.is_empty() || self.namespace == namespace) && name.starts_with(&self.prefix)
    }

    fn matches_pod(&self, e: &Endpoint) -> bool {
        self.matches(&e.namespace, &e.pod_name)
    }
}

fn workload_matches(want: &Workload, e: &Endpoint) -> bool {
    e.workloads.iter().any(|w| {
        (want.name.is_empty() || want.name == w.name)
            && (want.kind.is_empty() || want.kind == w.kind)
    })
}

/// `200` (exact) or `5+` / `40+` (prefix of the decimal code).
#[derive(Debug, Clone)]
enum StatusMatch {
    Exact(u32),
    Prefix(String),
}

impl StatusMatch {
    /// Hubble's two forms: `[1-5][0-9][0-9]`, or `[1-5][0-9]?+`.
    fn parse(value: &str) -> Result<Self, FilterError> {
        let b = value.as_bytes();
        let class = |i: usize| b.get(i).is_some_and(|c| (b'1'..=b'5').contains(c));
        let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
        match b.len() {
            3 if class(0) && digit(1) && digit(2) => Ok(Self::Exact(value.parse().unwrap_or(0))),
            2 | 3 if class(0) && value.ends_with('+') && (b.len() == 2 || digit(1)) => {
                Ok(Self::Prefix(value[..b.len() - 1].to_owned()))
            }
            _ => Err(FilterError::BadStatus {
                value: value.to_owned(),
            }),
        }
    }

    fn matches(&self, code: u32) -> bool {
        // Requests carry no status code; they never match a status filter.
        if code == 0 {
            return false;
        }
        match self {
            Self::Exact(want) => *want == code,
            // Hubble compares with the code written as %03d.
            Self::Prefix(p) => format!("{code:03}").starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    IcmpV4,
    IcmpV6,
    Vrrp,
    Igmp,
    Dns,
    Http,
    Kafka,
}

impl Protocol {
    fn parse(value: &str) -> Result<Self, FilterError> {
        Ok(match value.trim().to_ascii_lowercase().as_str() {
            "tcp" => Self::Tcp,
            "udp" => Self::Udp,
            "sctp" => Self::Sctp,
            "icmp" => Self::Icmp,
            "icmpv4" => Self::IcmpV4,
            "icmpv6" => Self::IcmpV6,
            "vrrp" => Self::Vrrp,
            "igmp" => Self::Igmp,
            "dns" => Self::Dns,
            "http" => Self::Http,
            "kafka" => Self::Kafka,
            _ => {
                return Err(FilterError::BadProtocol {
                    value: value.to_owned(),
                });
            }
        })
    }

    fn matches(self, flow: &Flow) -> bool {
        let l4 = flow.l4.as_ref().and_then(|l| l.protocol.as_ref());
        let l7 = flow.l7.as_ref().and_then(|l| l.record.as_ref());
        match self {
            Self::Tcp => matches!(l4, Some(layer4::Protocol::Tcp(_))),
            Self::Udp => matches!(l4, Some(layer4::Protocol::Udp(_))),
            Self::Sctp => matches!(l4, Some(layer4::Protocol::Sctp(_))),
            Self::Icmp => matches!(
                l4,
                Some(layer4::Protocol::IcmPv4(_) | layer4::Protocol::IcmPv6(_))
            ),
            Self::IcmpV4 => matches!(l4, Some(layer4::Protocol::IcmPv4(_))),
            Self::IcmpV6 => matches!(l4, Some(layer4::Protocol::IcmPv6(_))),
            Self::Vrrp => matches!(l4, Some(layer4::Protocol::Vrrp(_))),
            Self::Igmp => matches!(l4, Some(layer4::Protocol::Igmp(_))),
            Self::Dns => matches!(l7, Some(layer7::Record::Dns(_))),
            Self::Http => matches!(l7, Some(layer7::Record::Http(_))),
            // Kafka records are deprecated in Hubble but still on the wire.
            #[allow(deprecated)]
            Self::Kafka => matches!(l7, Some(layer7::Record::Kafka(_))),
        }
    }
}

fn l4_ports(flow: &Flow) -> (Option<u16>, Option<u16>) {
    // As Hubble reads them: the low 16 bits.
    let port = |p: u32| Some(p as u16);
    match flow.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(layer4::Protocol::Tcp(t)) => (port(t.source_port), port(t.destination_port)),
        Some(layer4::Protocol::Udp(u)) => (port(u.source_port), port(u.destination_port)),
        Some(layer4::Protocol::Sctp(s)) => (port(s.source_port), port(s.destination_port)),
        _ => (None, None),
    }
}

fn tcp_flags(flow: &Flow) -> Option<&TcpFlags> {
    match flow.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(layer4::Protocol::Tcp(t)) => t.flags.as_ref(),
        _ => None,
    }
}

/// Every flag set in `want` is set in `got`.
fn flags_contain(got: &TcpFlags, want: &TcpFlags) -> bool {
    let pairs = [
        (want.fin, got.fin),
        (want.syn, got.syn),
        (want.rst, got.rst),
        (want.psh, got.psh),
        (want.ack, got.ack),
        (want.urg, got.urg),
        (want.ece, got.ece),
        (want.cwr, got.cwr),
        (want.ns, got.ns),
    ];
    pairs.iter().all(|&(w, g)| !w || g)
}

/// The path an HTTP path filter matches: the URL read as Go's
/// `url.ParseRequestURI` reads it (Hubble's filter does), its path
/// percent-decoded (`http://host:80/a%20b?q` -> `/a b`). None when Go
/// refuses the URL (a control character, no scheme and no leading `/`, a
/// bad host or port, a bad `%` escape): such a flow matches no path, as in
/// Hubble. A URL with a scheme and no `/` after it has the empty path.
fn url_path(url: &str) -> Option<std::borrow::Cow<'_, str>> {
    if url.is_empty() || url.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return None;
    }
    if url == "*" {
        return Some("*".into());
    }
    // Go's getScheme: letters, then digits, `+`, `-`, `.`, up to a `:`.
    let mut scheme = "";
    let mut rest = url;
    for (i, c) in url.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return None,
            b':' => {
                (scheme, rest) = (&url[..i], &url[i + 1..]);
                break;
            }
            _ => break,
        }
    }
    let rest = match rest.strip_suffix('?') {
        Some(r) if !r.contains('?') => r,
        _ => rest.split_once('?').map_or(rest, |(p, _)| p),
    };
    if !rest.starts_with('/') {
        // A rootless URL with a scheme is opaque: it has no path.
        return (!scheme.is_empty()).then(|| "".into());
    }
    let mut path = rest;
    if !scheme.is_empty()
        && let Some(after) = rest.strip_prefix("//")
    {
        let (authority, p) = after.find('/').map_or((after, ""), |i| after.split_at(i));
        if !valid_authority(authority) {
            return None;
        }
        path = p;
    }
    percent_decode(path)
}

/// Go's parseAuthority, as far as it refuses: userinfo before the last `@`,
/// then a host (`[v6]` or a name) with an optional `:digits` port, whose
/// characters Go allows in a host.
fn valid_authority(authority: &str) -> bool {
    let host = match authority.rsplit_once('@') {
        Some((user, host)) => {
            let ok = |c: u8| c.is_ascii_alphanumeric() || b"-._:~!$&'()*+,;=%@".contains(&c);
            if !user.bytes().all(ok) || percent_decode(user).is_none() {
                return false;
            }
            host
        }
        None => authority,
    };
    let port_ok = |p: &str| {
        p.is_empty()
            || p.strip_prefix(':')
                .is_some_and(|d| d.bytes().all(|c| c.is_ascii_digit()))
    };
    let name = if let Some(v6) = host.strip_prefix('[') {
        let Some(i) = v6.rfind(']') else {
            return false;
        };
        if !port_ok(&v6[i + 1..]) {
            return false;
        }
        &v6[..i]
    } else {
        if let Some(i) = host.rfind(':')
            && !port_ok(&host[i..])
        {
            return false;
        }
        host
    };
    let allowed =
        |c: u8| c >= 0x80 || c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]<>\"%".contains(&c);
    name.bytes().all(allowed) && percent_decode(name).is_some()
}

/// Go's unescape of a path: `%XX` decoded (invalid UTF-8 as U+FFFD), None on
/// a `%` without two hex digits after it.
fn percent_decode(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !s.contains('%') {
        return Some(s.into());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let hi = hex(*b.get(i + 1)?)?;
            let lo = hex(*b.get(i + 2)?)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned().into())
}

/// A label selector as Hubble reads one (its filter translates the keys,
/// then Kubernetes' selector parser reads the result): comma-separated
/// requirements `key`, `!key`, `key=v`, `key==v`, `key!=v`, `key in (a,b)`,
/// `key notin (a,b)`, `key>1`, `key<1`, over Cilium label strings
/// (`source:key=value`, e.g. `k8s:app=frontend`). A key without a source
/// (`app`) matches any source. Keys and values are checked as Kubernetes
/// checks label keys and values.
#[derive(Debug, Clone)]
struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone)]
struct Requirement {
    /// `any` matches every source.
    source: String,
    key: String,
    op: Op,
}

#[derive(Debug, Clone)]
enum Op {
    Exists,
    NotExists,
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

/// The selector lexer's tokens (Kubernetes' labels package).
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    Greater,
    Ident(String),
    In,
    Less,
    NotEquals,
    NotIn,
    OpenPar,
    Error(String),
}

impl Tok {
    fn keyword(s: &str) -> Option<Tok> {
        Some(match s {
            ")" => Tok::ClosedPar,
            "," => Tok::Comma,
            "!" => Tok::DoesNotExist,
            "==" => Tok::DoubleEquals,
            "=" => Tok::Equals,
            ">" => Tok::Greater,
            "in" => Tok::In,
            "<" => Tok::Less,
            "!=" => Tok::NotEquals,
            "notin" => Tok::NotIn,
            "(" => Tok::OpenPar,
            _ => return None,
        })
    }

    /// How the parser names the token in its errors.
    fn text(&self) -> String {
        match self {
            Tok::End => String::new(),
            Tok::ClosedPar => ")".into(),
            Tok::Comma => ",".into(),
            Tok::DoesNotExist => "!".into(),
            Tok::DoubleEquals => "==".into(),
            Tok::Equals => "=".into(),
            Tok::Greater => ">".into(),
            Tok::Ident(s) | Tok::Error(s) => s.clone(),
            Tok::In => "in".into(),
            Tok::Less => "<".into(),
            Tok::NotEquals => "!=".into(),
            Tok::NotIn => "notin".into(),
            Tok::OpenPar => "(".into(),
        }
    }

    /// In a value position `in` and `notin` are plain words.
    fn into_value(self) -> Tok {
        match self {
            Tok::In => Tok::Ident("in".into()),
            Tok::NotIn => Tok::Ident("notin".into()),
            t => t,
        }
    }
}

fn lex(s: &str) -> Vec<Tok> {
    let b = s.as_bytes();
    let special = |c: u8| matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<');
    let space = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && space(b[i]) {
            i += 1;
        }
        if i >= b.len() || b[i] == 0 {
            out.push(Tok::End);
            return out;
        }
        if special(b[i]) {
            // The longest run of special characters that is a token.
            let start = i;
            let mut last: Option<(Tok, usize)> = None;
            while i < b.len() && special(b[i]) {
                if let Some(t) = Tok::keyword(&s[start..=i]) {
                    last = Some((t, i + 1));
                } else if last.is_some() {
                    break;
                }
                i += 1;
            }
            match last {
                Some((t, end)) => {
                    i = end;
                    out.push(t);
                }
                None => {
                    out.push(Tok::Error(format!(
                        "error expected: keyword found '{}'",
                        &s[start..i]
                    )));
                }
            }
        } else {
            let start = i;
            while i < b.len() && b[i] != 0 && !special(b[i]) && !space(b[i]) {
                i += 1;
            }
            let w = &s[start..i];
            out.push(Tok::keyword(w).unwrap_or_else(|| Tok::Ident(w.to_owned())));
        }
    }
}

/// Hubble's key translation: each requirement's key gets its source as a
/// dotted prefix (`k8s:app` -> `k8s.app`, `app` -> `any.app`).
fn translate_selector(sel: &str) -> String {
    let chars: Vec<char> = sel.chars().collect();
    let mut out = String::with_capacity(sel.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == '!') {
            out.push(chars[i]);
            i += 1;
        }
        let start = i;
        while i < chars.len() && !(chars[i].is_whitespace() || matches!(chars[i], '=' | '!' | ','))
        {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        let key = if key.contains(':') {
            key
        } else {
            format!("any:{key}")
        };
        out.push_str(&key.replacen(':', ".", 1));
        let mut nesting = 0i32;
        while i < chars.len() {
            let c = chars[i];
            out.push(c);
            i += 1;
            match c {
                '(' => nesting += 1,
                ')' => nesting -= 1,
                ',' if nesting == 0 => break,
                _ => {}
            }
        }
    }
    out
}

/// Kubernetes' IsQualifiedName: `[prefix/]name`, the prefix a DNS-1123
/// subdomain, the name 1-63 characters of `[-A-Za-z0-9_.]` starting and
/// ending alphanumeric.
fn qualified_name_error(k: &str) -> Option<String> {
    let (prefix, name) = match k.split('/').collect::<Vec<_>>()[..] {
        [name] => (None, name),
        [prefix, name] => (Some(prefix), name),
        _ => {
            return Some(format!(
                "{k:?}: a qualified name must be NAME or PREFIX/NAME"
            ));
        }
    };
    if let Some(p) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if p.is_empty() || p.len() > 253 || !p.split('.').all(label_ok) {
            return Some(format!("{k:?}: prefix part must be a DNS-1123 subdomain"));
        }
    }
    if name.is_empty() || name.len() > 63 || !label_value_ok(name) {
        return Some(format!(
            "{k:?}: name part must be 1-63 characters, alphanumeric, '-', '_' or '.', starting and ending alphanumeric"
        ));
    }
    None
}

/// Kubernetes' IsValidLabelValue, for a non-empty value: 63 characters at
/// most, `[-A-Za-z0-9_.]`, starting and ending alphanumeric.
fn label_value_ok(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Kubernetes' selector parser over the lexed tokens.
struct SelectorParser {
    toks: Vec<Tok>,
    pos: usize,
}

impl SelectorParser {
    /// The next token as a value position reads it.
    fn peek(&self) -> Tok {
        self.toks
            .get(self.pos)
            .cloned()
            .unwrap_or(Tok::End)
            .into_value()
    }

    fn next(&mut self) -> Tok {
        let t = self.peek();
        self.pos += 1;
        t
    }

    /// The next token read as an operator (`in` and `notin` are keywords).
    fn next_operator(&mut self) -> Tok {
        let t = self.toks.get(self.pos).cloned().unwrap_or(Tok::End);
        self.pos += 1;
        t
    }

    /// `[!]key [op values]`.
    fn requirement(&mut self) -> Result<Requirement, String> {
        let mut t = self.next();
        let negated = t == Tok::DoesNotExist;
        if negated {
            t = self.next();
        }
        let Tok::Ident(key) = t else {
            return Err(format!("found '{}', expected: identifier", t.text()));
        };
        if let Some(e) = qualified_name_error(&key) {
            return Err(e);
        }
        let op = if negated {
            Op::NotExists
        } else if matches!(self.peek(), Tok::End | Tok::Comma) {
            Op::Exists
        } else {
            self.operation()?
        };
        // `source.key`: the source before the first dot.
        let (source, key) = key.split_once('.').unwrap_or(("", &key));
        Ok(Requirement {
            source: if source.is_empty() {
                "any".into()
            } else {
                source.to_owned()
            },
            key: key.to_owned(),
            op,
        })
    }

    /// An operator and its values, checked as Kubernetes checks them.
    fn operation(&mut self) -> Result<Op, String> {
        let op = self.next_operator();
        let values = match op {
            Tok::In | Tok::NotIn => self.set()?,
            Tok::Equals | Tok::DoubleEquals | Tok::NotEquals | Tok::Greater | Tok::Less => {
                match self.peek() {
                    Tok::End | Tok::Comma => vec![String::new()],
                    _ => match self.next() {
                        Tok::Ident(v) => vec![v],
                        t => return Err(format!("found '{}', expected: identifier", t.text())),
                    },
                }
            }
            t => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    t.text()
                ));
            }
        };
        if let Some(bad) = values.iter().find(|v| !v.is_empty() && !label_value_ok(v)) {
            return Err(format!(
                "{bad:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
            ));
        }
        let int = || {
            values
                .first()
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| "for 'Gt', 'Lt' operators, the value must be an integer".to_owned())
        };
        Ok(match op {
            Tok::In | Tok::Equals | Tok::DoubleEquals => Op::In(values),
            Tok::NotIn | Tok::NotEquals => Op::NotIn(values),
            Tok::Greater => Op::Gt(int()?),
            _ => Op::Lt(int()?),
        })
    }

    /// `(a, b, ...)`: `()` is the empty value, and so is an empty place
    /// between commas.
    fn set(&mut self) -> Result<Vec<String>, String> {
        let t = self.next();
        if t != Tok::OpenPar {
            return Err(format!("found '{}' expected: '('", t.text()));
        }
        let mut set: Vec<String> = Vec::new();
        let add = |set: &mut Vec<String>, v: String| {
            if !set.contains(&v) {
                set.push(v);
            }
        };
        match self.peek() {
            Tok::ClosedPar => {
                self.pos += 1;
                add(&mut set, String::new());
                return Ok(set);
            }
            Tok::Ident(_) | Tok::Comma => {}
            t => {
                return Err(format!(
                    "found '{}', expected: ',', ')' or identifier",
                    t.text()
                ));
            }
        }
        loop {
            match self.next() {
                Tok::Ident(v) => {
                    add(&mut set, v);
                    match self.peek() {
                        Tok::Comma => continue,
                        Tok::ClosedPar => break,
                        t => return Err(format!("found '{}', expected: ',' or ')'", t.text())),
                    }
                }
                Tok::Comma => {
                    if set.is_empty() {
                        add(&mut set, String::new());
                    }
                    match self.peek() {
                        Tok::ClosedPar => {
                            add(&mut set, String::new());
                            break;
                        }
                        Tok::Comma => add(&mut set, String::new()),
                        _ => {}
                    }
                }
                t => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        t.text()
                    ));
                }
            }
        }
        let t = self.next();
        if t != Tok::ClosedPar {
            return Err(format!("found '{}', expected: ')'", t.text()));
        }
        Ok(set)
    }
}

impl Selector {
    fn parse(field: &'static str, value: &str) -> Result<Self, FilterError> {
        let err = |reason: String| FilterError::BadSelector {
            field,
            value: value.to_owned(),
            reason,
        };
        let mut p = SelectorParser {
            toks: lex(&translate_selector(value)),
            pos: 0,
        };
        let mut requirements = Vec::new();
        loop {
            match p.peek() {
                Tok::Ident(_) | Tok::DoesNotExist => {}
                Tok::End => break,
                t => {
                    return Err(err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        t.text()
                    )));
                }
            }
            requirements.push(p.requirement().map_err(err)?);
            match p.next() {
                Tok::End => break,
                Tok::Comma => {
                    let t = p.peek();
                    if !matches!(t, Tok::Ident(_) | Tok::DoesNotExist) {
                        return Err(err(format!(
                            "found '{}', expected: identifier after ','",
                            t.text()
                        )));
                    }
                }
                t => {
                    return Err(err(format!(
                        "found '{}', expected: ',' or 'end of string'",
                        t.text()
                    )));
                }
            }
        }
        Ok(Self { requirements })
    }

    fn matches(&self, labels: &[String]) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        // Cilium's label array: parsed, sorted by key (the first match wins).
        let mut parsed: Vec<(&str, &str, &str)> = labels.iter().map(|l| parse_label(l)).collect();
        parsed.sort_by(|a, b| a.1.cmp(b.1));
        self.requirements.iter().all(|r| {
            let value = parsed
                .iter()
                .find(|(src, key, _)| (r.source == "any" || r.source == *src) && *key == r.key)
                .map(|(_, _, v)| *v);
            match &r.op {
                Op::Exists => value.is_some(),
                Op::NotExists => value.is_none(),
                Op::In(set) => value.is_some_and(|v| set.iter().any(|s| s == v)),
                Op::NotIn(set) => value.is_none_or(|v| !set.iter().any(|s| s == v)),
                Op::Gt(n) => value
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                Op::Lt(n) => value
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }
}

/// Cilium's ParseLabel: (source, key, value) of `source:key=value`; no
/// source is `unspec`, `$key` and `reserved.key` are reserved.
fn parse_label(l: &str) -> (&str, &str, &str) {
    let (src, next) = if let Some(rest) = l.strip_prefix('$') {
        ("reserved", rest)
    } else if let Some((src, rest)) = l.split_once(':') {
        (src, rest)
    } else if let Some(rest) = l.strip_prefix("reserved.") {
        ("reserved", rest)
    } else {
        ("", l)
    };
    let src = if src.is_empty() { "unspec" } else { src };
    match next.find('=') {
        None => (src, next, ""),
        Some(0) if src == "reserved" => (src, &next[1..], ""),
        Some(i) => (src, &next[..i], &next[i + 1..]),
    }
}

#[cfg(test)]
mod tests;
