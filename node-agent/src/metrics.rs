//! Prometheus metrics with Hubble's names and labels, served as OpenMetrics
//! text on `--metrics-listen` (default `:9965`, Hubble's port).
//!
//! The ingest thread calls [`Metrics::observe`] once per batch of flows. The
//! series live in plain maps keyed by interned label values (no allocation
//! per flow once a series exists), behind one lock taken once per batch. A
//! scrape encodes them through prometheus-client's collector interface,
//! beside the agent's own `webb_*` metrics.
//!
//! Most flows repeat an earlier flow's labels exactly: same endpoints, same
//! verdict, same flags, same port. For L3/L4 flows the store remembers, per
//! [`FlowSig`] (the flow's label-deciding fields, with its endpoints by
//! identity), which series every family bumped, and bumps them again without
//! rebuilding a label string. Only a new signature takes the label path.
//!
//! Cardinality is bounded: context labels come from endpoint metadata (raw
//! IPs only when `ip` is asked for), and each family holds at most
//! `--metrics-max-series` series; further label sets are counted in one
//! series whose labels all read `other`, and in
//! `webb_metrics_series_folded_total{family}`.

pub mod options;

use std::{
    borrow::Cow,
    fmt::Write as _,
    sync::{Arc, Mutex, atomic::Ordering},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, text::encode},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use webb_proto::{
    flow::{
        DropReason, Endpoint, Flow, FlowType, IpVersion, L7FlowType, LostEventSource, Verdict,
        layer4::Protocol, layer7,
    },
    names,
};

use rustc_hash::FxHashMap as HashMap;

use crate::observer::Hub;
use options::{Context, Handler, Kind, Part};

/// Prometheus' default buckets, which Hubble's histograms use.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Labels a series can have at most (two contexts and four of its own).
const MAX_LABELS: usize = 6;
type Key = [u32; MAX_LABELS];

#[derive(Clone, Copy)]
enum Shape {
    Counter,
    Histogram,
}

/// One metric family: its name (without `_total`), help, own labels.
struct Spec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    shape: Shape,
}

const FLOWS: Spec = Spec {
    name: "hubble_flows_processed",
    help: "Total number of flows processed",
    labels: &["type", "subtype", "verdict"],
    shape: Shape::Counter,
};
const DROP: Spec = Spec {
    name: "hubble_drop",
    help: "Number of drops",
    labels: &["reason", "protocol"],
    shape: Shape::Counter,
};
const TCP: Spec = Spec {
    name: "hubble_tcp_flags",
    help: "TCP flag occurrences",
    labels: &["flag", "family"],
    shape: Shape::Counter,
};
const ICMP: Spec = Spec {
    name: "hubble_icmp",
    help: "Number of ICMP messages",
    labels: &["family", "type"],
    shape: Shape::Counter,
};
const PORTS: Spec = Spec {
    name: "hubble_port_distribution",
    help: "Numbers of packets distributed by destination port",
    labels: &["protocol", "port"],
    shape: Shape::Counter,
};
const DNS_QUERIES: Spec = Spec {
    name: "hubble_dns_queries",
    help: "Number of DNS queries observed",
    labels: &["rcode", "qtypes", "ips_returned"],
    shape: Shape::Counter,
};
const DNS_QUERIES_Q: Spec = Spec {
    labels: &["rcode", "qtypes", "ips_returned", "query"],
    ..DNS_QUERIES
};
const DNS_RESPONSES: Spec = Spec {
    name: "hubble_dns_responses",
    help: "Number of DNS responses observed",
    labels: &["rcode", "qtypes", "ips_returned"],
    shape: Shape::Counter,
};
const DNS_RESPONSES_Q: Spec = Spec {
    labels: &["rcode", "qtypes", "ips_returned", "query"],
    ..DNS_RESPONSES
};
const DNS_TYPES: Spec = Spec {
    name: "hubble_dns_response_types",
    help: "Number of DNS response types",
    labels: &["type", "qtypes"],
    shape: Shape::Counter,
};
const DNS_DURATION: Spec = Spec {
    name: "webb_dns_query_duration_seconds",
    help: "Time from a DNS query to its response, as seen in the packets",
    labels: &["rcode"],
    shape: Shape::Histogram,
};
const HTTP_REQUESTS: Spec = Spec {
    name: "hubble_http_requests",
    help: "Count of HTTP requests",
    labels: &["method", "protocol", "reporter"],
    shape: Shape::Counter,
};
const HTTP_RESPONSES: Spec = Spec {
    name: "hubble_http_responses",
    help: "Count of HTTP responses",
    labels: &["method", "status", "reporter"],
    shape: Shape::Counter,
};
const HTTP_DURATION: Spec = Spec {
    name: "hubble_http_request_duration_seconds",
    help: "Quantiles of HTTP request duration in seconds",
    labels: &["method", "reporter"],
    shape: Shape::Histogram,
};

enum Value {
    Counter(u64),
    /// Per-bucket (not cumulative) counts, then sum and count.
    Histogram([u64; BUCKETS.len()], f64, u64),
}

struct Family {
    spec: &'static Spec,
    /// Context label names first, then the spec's.
    label_names: Vec<&'static str>,
    source: Option<Context>,
    destination: Option<Context>,
    /// Label values -> position in `values`. Series are never removed, so a
    /// position stays valid for the memo.
    series: HashMap<Key, usize>,
    values: Vec<(Key, Value)>,
    folded: u64,
}

/// What decides an L3/L4 flow's labels in every family, read without
/// touching a string. Endpoints count by identity (the agent hands out one
/// shared `Endpoint` per pod); the memo keeps them alive, so an address in
/// a signature cannot be reused by another endpoint while it is remembered.
#[derive(PartialEq, Eq, Hash)]
struct FlowSig {
    source: usize,
    destination: usize,
    event: [i32; 2],
    verdict: i32,
    drop_reason: i32,
    flow_type: i32,
    /// Protocol, destination port or ICMP type, TCP flag bits or ICMP code.
    l4: [u32; 3],
    /// `is_reply`: 0 unset, 1 false, 2 true.
    reply: u8,
    v6: bool,
}

impl FlowSig {
    fn of(f: &Flow) -> Self {
        let et = f.event_type.unwrap_or_default();
        let l4 = match l4(f) {
            Some(Protocol::Tcp(t)) => {
                let fl = t.flags.unwrap_or_default();
                let bits = u32::from(fl.syn)
                    | u32::from(fl.ack) << 1
                    | u32::from(fl.fin) << 2
                    | u32::from(fl.rst) << 3;
                [1, t.destination_port, bits]
            }
            Some(Protocol::Udp(u)) => [2, u.destination_port, 0],
            Some(Protocol::Sctp(s)) => [3, s.destination_port, 0],
            Some(Protocol::IcmPv4(i)) => [4, i.r#type, i.code],
            Some(Protocol::IcmPv6(i)) => [5, i.r#type, i.code],
            _ => [0; 3],
        };
        Self {
            source: f.source.as_ref().map_or(0, Endpoint::addr),
            destination: f.destination.as_ref().map_or(0, Endpoint::addr),
            event: [et.r#type, et.sub_type],
            verdict: f.verdict,
            drop_reason: f.drop_reason_desc,
            flow_type: f.r#type,
            l4,
            reply: f.is_reply.map_or(0, |r| 1 + u8::from(r.value)),
            v6: f
                .ip
                .as_ref()
                .is_some_and(|ip| ip.ip_version == IpVersion::IPv6 as i32),
        }
    }
}

/// One counter increment the memo replays: family, series position, and
/// whether it went to the family's `other` series.
#[derive(Clone, Copy)]
struct Bump {
    family: usize,
    slot: usize,
    folded: bool,
}

struct Memo {
    bumps: Vec<Bump>,
    /// Keeps the signature's endpoint addresses from being reused.
    _endpoints: (Option<Endpoint>, Option<Endpoint>),
}

/// Signatures remembered before the memo starts over.
const MEMO_CAPACITY: usize = 16_384;

/// Label values as small integers.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
    strings: Vec<String>,
}

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        let id = self.strings.len() as u32;
        self.ids.insert(s.to_owned(), id);
        self.strings.push(s.to_owned());
        id
    }

    fn get(&self, id: u32) -> &str {
        self.strings.get(id as usize).map_or("", String::as_str)
    }
}

struct Store {
    /// Each handler with the index of its first family in `families`.
    handlers: Vec<(Handler, usize)>,
    families: Vec<Family>,
    strings: Interner,
    other: u32,
    max_series: usize,
    scratch: String,
    /// Off when a context reads more than the endpoints (DNS names, IPs).
    memo_on: bool,
    memo: HashMap<FlowSig, Memo>,
    /// The bumps of the flow being counted the slow way, to remember.
    recording: Option<Vec<Bump>>,
}

/// `(program, run time ns, runs)` of the kernel programs.
pub type ProgramStats = Arc<dyn Fn() -> Vec<(String, u64, u64)> + Send + Sync>;

/// The agent's metrics: the Hubble families `--metrics` enables, and its own.
pub struct Metrics {
    store: Mutex<Store>,
    hub: Arc<Hub>,
    programs: Option<ProgramStats>,
    flow_store: Option<Arc<crate::store::FlowStore>>,
    exporter: Option<Arc<crate::export::Counters>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn family(spec: &'static Spec, h: &Handler) -> Family {
    let mut label_names = Vec::new();
    if h.source.is_some() {
        label_names.push("source");
    }
    if h.destination.is_some() {
        label_names.push("destination");
    }
    label_names.extend_from_slice(spec.labels);
    Family {
        spec,
        label_names,
        source: h.source.clone(),
        destination: h.destination.clone(),
        series: HashMap::default(),
        values: Vec::new(),
        folded: 0,
    }
}

impl Metrics {
    pub fn new(handlers: Vec<Handler>, max_series: usize, hub: Arc<Hub>) -> Self {
        let mut families = Vec::new();
        let mut indexed = Vec::with_capacity(handlers.len());
        for h in handlers {
            let specs: &[&'static Spec] = match (h.kind, h.dns_query) {
                (Kind::Flow, _) => &[&FLOWS],
                (Kind::Drop, _) => &[&DROP],
                (Kind::Tcp, _) => &[&TCP],
                (Kind::Icmp, _) => &[&ICMP],
                (Kind::PortDistribution, _) => &[&PORTS],
                (Kind::Dns, false) => &[&DNS_QUERIES, &DNS_RESPONSES, &DNS_TYPES, &DNS_DURATION],
                (Kind::Dns, true) => &[&DNS_QUERIES_Q, &DNS_RESPONSES_Q, &DNS_TYPES, &DNS_DURATION],
                (Kind::Http, _) => &[&HTTP_REQUESTS, &HTTP_RESPONSES, &HTTP_DURATION],
            };
            let first = families.len();
            families.extend(specs.iter().map(|s| family(s, &h)));
            indexed.push((h, first));
        }
        let mut strings = Interner::default();
        let other = strings.id("other");
        let memo_on = families.iter().all(|f| {
            [&f.source, &f.destination]
                .into_iter()
                .flatten()
                .all(|c| !c.0.iter().any(|p| matches!(p, Part::Dns | Part::Ip)))
        });
        Self {
            store: Mutex::new(Store {
                handlers: indexed,
                families,
                strings,
                other,
                max_series: max_series.max(1),
                scratch: String::new(),
                memo_on,
                memo: HashMap::default(),
                recording: None,
            }),
            hub,
            programs: None,
            flow_store: None,
            exporter: None,
        }
    }

    /// The label path for every flow (tests compare it with the memo's).
    #[cfg(test)]
    fn without_memo(self) -> Self {
        if let Ok(mut st) = self.store.lock() {
            st.memo_on = false;
        }
        self
    }

    /// Signatures the memo holds.
    #[cfg(test)]
    fn memo_len(&self) -> usize {
        self.store.lock().map_or(0, |st| st.memo.len())
    }

    /// Adds the flow exporter's counters at scrape.
    pub fn with_exporter(mut self, counters: Option<Arc<crate::export::Counters>>) -> Self {
        self.exporter = counters;
        self
    }

    /// Adds the flow store's window and fault counters at scrape.
    pub fn with_flow_store(mut self, store: Option<Arc<crate::store::FlowStore>>) -> Self {
        self.flow_store = store;
        self
    }

    /// Adds the kernel programs' run time and count (bpf_stats) at scrape.
    pub fn with_program_stats(mut self, stats: ProgramStats) -> Self {
        self.programs = Some(stats);
        self
    }

    /// Counts a batch of flows.
    pub fn observe<'a>(&self, flows: impl IntoIterator<Item = &'a Flow>) {
        let mut st = match self.store.lock() {
            Ok(s) => s,
            Err(e) => e.into_inner(),
        };
        if st.families.is_empty() {
            return;
        }
        for f in flows {
            st.observe(f);
        }
    }

    /// The OpenMetrics text of every family.
    pub fn encode(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

impl Store {
    fn observe(&mut self, f: &Flow) {
        // L7 flows carry strings (methods, names) in their labels: always
        // the label path.
        if !self.memo_on || f.l7.is_some() {
            return self.observe_labels(f);
        }
        let sig = FlowSig::of(f);
        if let Some(memo) = self.memo.get(&sig) {
            for b in &memo.bumps {
                if let Some(fam) = self.families.get_mut(b.family) {
                    fam.folded += u64::from(b.folded);
                    if let Some((_, Value::Counter(c))) = fam.values.get_mut(b.slot) {
                        *c += 1;
                    }
                }
            }
            return;
        }
        self.recording = Some(Vec::new());
        self.observe_labels(f);
        let Some(bumps) = self.recording.take() else {
            return;
        };
        if self.memo.len() >= MEMO_CAPACITY {
            self.memo.clear();
        }
        let endpoints = (f.source.clone(), f.destination.clone());
        self.memo.insert(
            sig,
            Memo {
                bumps,
                _endpoints: endpoints,
            },
        );
    }

    fn observe_labels(&mut self, f: &Flow) {
        // What every handler asks of the flow, worked out once.
        let verdict = Verdict::try_from(f.verdict).unwrap_or_default();
        let family_ip = match f.ip.as_ref().map(|ip| ip.ip_version) {
            Some(v) if v == IpVersion::IPv6 as i32 => "IPv6",
            _ => "IPv4",
        };
        // Taken out for the loop (no allocation): each update needs the
        // interner and the family at once.
        let handlers = std::mem::take(&mut self.handlers);
        for (h, fi) in &handlers {
            self.observe_handler(h, *fi, f, verdict, family_ip);
        }
        self.handlers = handlers;
    }

    fn observe_handler(
        &mut self,
        h: &Handler,
        fi: usize,
        f: &Flow,
        verdict: Verdict,
        family_ip: &str,
    ) {
        match h.kind {
            Kind::Flow => {
                let (ty, subtype) = type_and_subtype(f);
                let verdict = verdict.as_str_name();
                self.count(fi, f, &[ty, &subtype, verdict], 1.0);
            }
            Kind::Drop => {
                if verdict == Verdict::Dropped {
                    let reason = DropReason::try_from(f.drop_reason_desc)
                        .map_or("DROP_REASON_UNKNOWN", |r| r.as_str_name());
                    self.count(fi, f, &[reason, protocol(f)], 1.0);
                }
            }
            Kind::Tcp => {
                if verdict == Verdict::Dropped {
                    return;
                }
                if let Some(Protocol::Tcp(t)) = l4(f)
                    && let Some(fl) = &t.flags
                {
                    if fl.syn {
                        let flag = if fl.ack { "SYN-ACK" } else { "SYN" };
                        self.count(fi, f, &[flag, family_ip], 1.0);
                    }
                    if fl.fin {
                        self.count(fi, f, &["FIN", family_ip], 1.0);
                    }
                    if fl.rst {
                        self.count(fi, f, &["RST", family_ip], 1.0);
                    }
                }
            }
            Kind::Icmp => {
                let text = match l4(f) {
                    Some(Protocol::IcmPv4(i)) => {
                        crate::decode::icmpv4_text(i.r#type as u8, i.code as u8)
                    }
                    Some(Protocol::IcmPv6(i)) => {
                        crate::decode::icmpv6_text(i.r#type as u8, i.code as u8)
                    }
                    _ => return,
                };
                self.count(fi, f, &[family_ip, &text], 1.0);
            }
            Kind::PortDistribution => {
                let reply = f.is_reply.is_some_and(|r| r.value);
                if reply || verdict != Verdict::Forwarded || f.r#type != FlowType::L3L4 as i32 {
                    return;
                }
                let port = match l4(f) {
                    Some(Protocol::Tcp(t)) => t.destination_port,
                    Some(Protocol::Udp(u)) => u.destination_port,
                    Some(Protocol::Sctp(s)) => s.destination_port,
                    _ => return,
                };
                let mut buf = [0u8; 10];
                let port = u32_str(port, &mut buf);
                self.count(fi, f, &[protocol(f), port], 1.0);
            }
            Kind::Dns => {
                let Some(l7) = &f.l7 else { return };
                let Some(layer7::Record::Dns(d)) = &l7.record else {
                    return;
                };
                if h.ignore_aaaa && d.qtypes.iter().any(|q| q == "AAAA") {
                    return;
                }
                let qtypes = d.qtypes.join(",");
                let query = d.query.as_str();
                if l7.r#type == L7FlowType::Request as i32 {
                    let mut labels = vec!["", qtypes.as_str(), ""];
                    if h.dns_query {
                        labels.push(query);
                    }
                    self.count(fi, f, &labels, 1.0);
                } else {
                    let rcode = rcode_name(d.rcode);
                    let ips = itoa_buf(d.ips.len() as u32);
                    let mut labels = vec![rcode, qtypes.as_str(), ips.as_str()];
                    if h.dns_query {
                        labels.push(query);
                    }
                    self.count(fi + 1, f, &labels, 1.0);
                    for t in &d.rrtypes {
                        self.count(fi + 2, f, &[t, qtypes.as_str()], 1.0);
                    }
                    if l7.latency_ns > 0 {
                        self.count(fi + 3, f, &[rcode], l7.latency_ns as f64 / 1e9);
                    }
                }
            }
            Kind::Http => {
                let Some(l7) = &f.l7 else { return };
                let Some(layer7::Record::Http(http)) = &l7.record else {
                    return;
                };
                let reporter =
                    match webb_proto::flow::TrafficDirection::try_from(f.traffic_direction) {
                        Ok(webb_proto::flow::TrafficDirection::Egress) => "client",
                        Ok(webb_proto::flow::TrafficDirection::Ingress) => "server",
                        _ => "unknown",
                    };
                if l7.r#type == L7FlowType::Request as i32 {
                    self.count(
                        fi,
                        f,
                        &[http.method.as_str(), http.protocol.as_str(), reporter],
                        1.0,
                    );
                } else {
                    let status = itoa_buf(http.code);
                    self.count(
                        fi + 1,
                        f,
                        &[http.method.as_str(), status.as_str(), reporter],
                        1.0,
                    );
                    if l7.latency_ns > 0 {
                        self.count(
                            fi + 2,
                            f,
                            &[http.method.as_str(), reporter],
                            l7.latency_ns as f64 / 1e9,
                        );
                    }
                }
            }
        }
    }

    /// Adds one observation to family `fi` (for a histogram, of `value`).
    fn count(&mut self, fi: usize, f: &Flow, labels: &[&str], value: f64) {
        let Store {
            families,
            strings,
            scratch,
            other,
            max_series,
            recording,
            ..
        } = self;
        let Some(fam) = families.get_mut(fi) else {
            return;
        };
        let mut key: Key = [0; MAX_LABELS];
        let mut n = 0;
        for (ctx, source) in [
            (fam.source.as_ref(), true),
            (fam.destination.as_ref(), false),
        ] {
            let Some(ctx) = ctx else { continue };
            let ep = if source {
                f.source.as_ref()
            } else {
                f.destination.as_ref()
            };
            context_value(scratch, ctx, ep, f, source);
            key[n] = strings.id(scratch);
            n += 1;
        }
        for l in labels.iter().take(MAX_LABELS - n) {
            key[n] = strings.id(l);
            n += 1;
        }
        let folded = !fam.series.contains_key(&key) && fam.series.len() >= *max_series;
        if folded {
            fam.folded += 1;
            key = [0; MAX_LABELS];
            key[..fam.label_names.len()].fill(*other);
        }
        let shape = fam.spec.shape;
        let values = &mut fam.values;
        let slot = *fam.series.entry(key).or_insert_with(|| {
            values.push((
                key,
                match shape {
                    Shape::Counter => Value::Counter(0),
                    Shape::Histogram => Value::Histogram([0; BUCKETS.len()], 0.0, 0),
                },
            ));
            values.len() - 1
        });
        if let Some(bumps) = recording {
            match shape {
                Shape::Counter => bumps.push(Bump {
                    family: fi,
                    slot,
                    folded,
                }),
                // Not replayable without its value: do not remember this flow.
                Shape::Histogram => *recording = None,
            }
        }
        let Some((_, entry)) = values.get_mut(slot) else {
            return;
        };
        match entry {
            Value::Counter(c) => *c += 1,
            Value::Histogram(b, sum, count) => {
                if let Some(i) = BUCKETS.iter().position(|le| value <= *le) {
                    b[i] += 1;
                }
                *sum += value;
                *count += 1;
            }
        }
    }
}

fn l4(f: &Flow) -> Option<&Protocol> {
    f.l4.as_ref()?.protocol.as_ref()
}

fn protocol(f: &Flow) -> &'static str {
    match l4(f) {
        Some(Protocol::Tcp(_)) => "TCP",
        Some(Protocol::Udp(_)) => "UDP",
        Some(Protocol::Sctp(_)) => "SCTP",
        Some(Protocol::IcmPv4(_)) => "ICMPv4",
        Some(Protocol::IcmPv6(_)) => "ICMPv6",
        _ => "Unknown",
    }
}

/// Hubble's `type` and `subtype` of the flows metric.
fn type_and_subtype(f: &Flow) -> (&'static str, Cow<'static, str>) {
    let et = f.event_type.unwrap_or_default();
    match et.r#type {
        names::EVENT_L7 => {
            let sub = match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
                Some(layer7::Record::Dns(_)) => "DNS",
                Some(layer7::Record::Http(_)) => "HTTP",
                _ => "",
            };
            ("L7", Cow::Borrowed(sub))
        }
        names::EVENT_DROP => ("Drop", Cow::Borrowed("")),
        names::EVENT_CAPTURE => ("Capture", Cow::Borrowed("")),
        names::EVENT_TRACE => (
            "Trace",
            Cow::Borrowed(names::trace_point_name(et.sub_type).unwrap_or("")),
        ),
        names::EVENT_POLICY_VERDICT => ("PolicyVerdict", Cow::Borrowed("")),
        t => ("Unknown", Cow::Owned(t.to_string())),
    }
}

/// The RCODE text of Hubble's DNS metrics.
fn rcode_name(rcode: u32) -> &'static str {
    match rcode {
        0 => "No Error",
        1 => "Format Error",
        2 => "Server Failure",
        3 => "Non-Existent Domain",
        4 => "Not Implemented",
        5 => "Query Refused",
        _ => "Unknown",
    }
}

fn itoa_buf(n: u32) -> String {
    let mut buf = [0u8; 10];
    u32_str(n, &mut buf).to_owned()
}

/// A number as text in a stack buffer.
fn u32_str(mut n: u32, buf: &mut [u8; 10]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

/// Writes the context label of one side into `out`: the first non-empty of
/// the context's alternatives.
fn context_value(out: &mut String, ctx: &Context, ep: Option<&Endpoint>, f: &Flow, source: bool) {
    out.clear();
    for part in &ctx.0 {
        out.clear();
        match (part, ep) {
            (Part::Namespace, Some(e)) => out.push_str(&e.namespace),
            (Part::Pod, Some(e)) if !e.pod_name.is_empty() => {
                let _ = write!(out, "{}/{}", e.namespace, e.pod_name);
            }
            (Part::PodName, Some(e)) => out.push_str(&e.pod_name),
            (Part::Workload, Some(e)) => {
                if let Some(w) = e.workloads.first() {
                    let _ = write!(out, "{}/{}", e.namespace, w.name);
                }
            }
            (Part::WorkloadName, Some(e)) => {
                if let Some(w) = e.workloads.first() {
                    out.push_str(&w.name);
                }
            }
            (Part::App, Some(e)) => {
                let app = e.labels.iter().find_map(|l| {
                    let l = l.strip_prefix("k8s:").unwrap_or(l);
                    l.strip_prefix("app=")
                        .or_else(|| l.strip_prefix("app.kubernetes.io/name="))
                });
                if let Some(a) = app {
                    out.push_str(a);
                }
            }
            (Part::ReservedIdentity, Some(e)) => {
                if let Some(n) = names::reserved_identity_name(e.identity)
                    && e.identity != 0
                {
                    let _ = write!(out, "reserved:{n}");
                }
            }
            (Part::Dns, _) => {
                let names = if source {
                    &f.source_names
                } else {
                    &f.destination_names
                };
                if let Some(n) = names.first() {
                    out.push_str(n);
                }
            }
            (Part::Ip, _) => {
                if let Some(ip) = &f.ip {
                    out.push_str(if source { &ip.source } else { &ip.destination });
                }
            }
            _ => {}
        }
        if !out.is_empty() {
            return;
        }
    }
}

/// One unlabelled counter.
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(m)
}

/// One unlabelled gauge.
fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value as i64).encode(m)
}

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let st = match self.store.lock() {
            Ok(s) => s,
            Err(e) => e.into_inner(),
        };
        // Handlers of one kind (say, `flow` and `flow:sourceContext=...`)
        // share a family name: their series go under one descriptor.
        let mut done: Vec<&str> = Vec::new();
        for first in &st.families {
            if done.contains(&first.spec.name) {
                continue;
            }
            done.push(first.spec.name);
            let ty = match first.spec.shape {
                Shape::Counter => MetricType::Counter,
                Shape::Histogram => MetricType::Histogram,
            };
            let mut m = enc.encode_descriptor(first.spec.name, first.spec.help, None, ty)?;
            for fam in st
                .families
                .iter()
                .filter(|f| f.spec.name == first.spec.name)
            {
                for (key, value) in &fam.values {
                    let labels: Vec<(&str, &str)> = fam
                        .label_names
                        .iter()
                        .zip(key.iter())
                        .map(|(n, id)| (*n, st.strings.get(*id)))
                        .collect();
                    let mut s = m.encode_family(&labels)?;
                    match value {
                        Value::Counter(c) => ConstCounter::new(*c).encode(s)?,
                        Value::Histogram(b, sum, count) => {
                            // Per-bucket counts: the encoder accumulates them.
                            let finite: u64 = b.iter().sum();
                            let buckets: Vec<(f64, u64)> = BUCKETS
                                .iter()
                                .zip(b)
                                .map(|(le, n)| (*le, *n))
                                .chain([(f64::INFINITY, count - finite)])
                                .collect();
                            s.encode_histogram::<Vec<(&str, &str)>>(*sum, *count, &buckets, None)?;
                        }
                    }
                }
            }
        }

        let c = &self.hub.counters;
        let mut m = enc.encode_descriptor(
            "hubble_lost_events",
            "Number of lost events",
            None,
            MetricType::Counter,
        )?;
        for (source, i) in [
            (
                "perf_event_ring_buffer",
                LostEventSource::PerfEventRingBuffer,
            ),
            (
                "observer_events_queue",
                LostEventSource::ObserverEventsQueue,
            ),
            ("hubble_ring_buffer", LostEventSource::HubbleRingBuffer),
        ] {
            let n = c.lost_by_source[i as usize].load(Ordering::Relaxed);
            ConstCounter::new(n).encode(m.encode_family(&[("source", source)])?)?;
        }

        let ring = self.hub.status();
        for (name, help, value) in [
            (
                "webb_flows_seen",
                "Flows the agent has decoded and stored since it started",
                ring.seen_flows,
            ),
            (
                "webb_datapath_packets",
                "Packets the datapath programs saw",
                c.packets.load(Ordering::Relaxed),
            ),
            (
                "webb_datapath_malformed_packets",
                "Packets whose headers could not be parsed (passed unharmed)",
                c.malformed_packets.load(Ordering::Relaxed),
            ),
            (
                "webb_datapath_non_ip_packets",
                "Packets that were not IPv4 or IPv6",
                c.non_ip_packets.load(Ordering::Relaxed),
            ),
            (
                "webb_policy_drops",
                "Packets dropped by policy",
                c.policy_drops.load(Ordering::Relaxed),
            ),
            (
                "webb_l7_flows",
                "DNS and HTTP records turned into L7 flows",
                c.l7.flows.load(Ordering::Relaxed),
            ),
        ] {
            counter(&mut enc, name, help, value)?;
        }
        let mut m = enc.encode_descriptor(
            "webb_l7_events",
            "L7 payloads that gave no flow or an incomplete one, by reason",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in c.l7.snapshot() {
            ConstCounter::new(n).encode(m.encode_family(&[("reason", reason)])?)?;
        }
        for (name, help, value) in [
            ("webb_ring_flows", "Flows in the ring", ring.num_flows),
            (
                "webb_ring_capacity",
                "Flows the ring holds at most",
                ring.max_flows,
            ),
        ] {
            gauge(&mut enc, name, help, value)?;
        }
        if let Some(fs) = &self.flow_store {
            let st = fs.status();
            let fc = fs.counters();
            for (name, help, value) in [
                (
                    "webb_flow_store_flows",
                    "Flows in the on-disk flow store",
                    st.items,
                ),
                (
                    "webb_flow_store_bytes",
                    "Bytes the flow store holds on disk",
                    st.bytes,
                ),
                (
                    "webb_flow_store_oldest_flow_seconds",
                    "Unix time of the oldest flow in the flow store",
                    st.oldest.map_or(0, |t| t.seconds.max(0) as u64),
                ),
            ] {
                gauge(&mut enc, name, help, value)?;
            }
            for (name, help, value) in [
                (
                    "webb_flow_store_not_stored",
                    "Flows the flow store could not write (disk full, write errors); they stayed in the ring",
                    fc.not_stored.load(Ordering::Relaxed),
                ),
                (
                    "webb_flow_store_write_errors",
                    "Failed block writes",
                    fc.write_errors.load(Ordering::Relaxed),
                ),
                (
                    "webb_flow_store_corrupt_blocks",
                    "Stored blocks that did not check and were skipped",
                    fc.corrupt_blocks.load(Ordering::Relaxed),
                ),
            ] {
                counter(&mut enc, name, help, value)?;
            }
        }
        if let Some(ec) = &self.exporter {
            for (name, help, value) in [
                (
                    "webb_export_flows",
                    "Flows (and lost-event records) written by the flow exporter",
                    ec.exported.load(Ordering::Relaxed),
                ),
                (
                    "webb_export_dropped",
                    "Flows the exporter could not write (its writer behind, or a failed write)",
                    ec.dropped.load(Ordering::Relaxed),
                ),
                (
                    "webb_export_write_errors",
                    "Failed writes to the export file",
                    ec.write_errors.load(Ordering::Relaxed),
                ),
                (
                    "webb_export_rotations",
                    "Times the export file was rotated",
                    ec.rotations.load(Ordering::Relaxed),
                ),
            ] {
                counter(&mut enc, name, help, value)?;
            }
        }
        if let Some(stats) = &self.programs {
            let stats = stats();
            // All zero while kernel.bpf_stats_enabled is 0: not reported.
            if stats.iter().any(|(_, _, runs)| *runs > 0) {
                let mut m = enc.encode_descriptor(
                    "webb_bpf_program_runs",
                    "Runs of each kernel program (with kernel.bpf_stats_enabled=1)",
                    None,
                    MetricType::Counter,
                )?;
                for (name, _, runs) in &stats {
                    let l = [("program", name.as_str())];
                    ConstCounter::new(*runs).encode(m.encode_family(&l)?)?;
                }
                let mut m = enc.encode_descriptor(
                    "webb_bpf_program_run_seconds",
                    "Time spent in each kernel program (with kernel.bpf_stats_enabled=1); divide by runs for the cost per packet",
                    None,
                    MetricType::Counter,
                )?;
                for (name, ns, _) in &stats {
                    let l = [("program", name.as_str())];
                    ConstCounter::new(*ns as f64 / 1e9).encode(m.encode_family(&l)?)?;
                }
            }
        }
        let mut m = enc.encode_descriptor(
            "webb_metrics_series_folded",
            "Observations counted in a family's `other` series because it had reached --metrics-max-series",
            None,
            MetricType::Counter,
        )?;
        for fam in &st.families {
            ConstCounter::new(fam.folded).encode(m.encode_family(&[("family", fam.spec.name)])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
