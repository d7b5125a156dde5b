//! Top talkers: flows summed per pair of ends, mergeable across nodes.
//!
//! An agent feeds its history, in time order, to an [`Aggregator`] and
//! answers `webb.analysis.Analysis/Top` with the sums ([`TopResponse`]);
//! webb-relay [`merge`]s the nodes' answers; `webb top` turns each pair into
//! figures with [`Figures::of`]. Everything a node sends adds up: counts
//! are sums, latencies a log histogram, so a merged answer is the answer
//! one node holding every flow would give.
//!
//! A pair is oriented as its connection: the initiator is the source, the
//! responder the destination; a reply (`is_reply`) and an L7 response count
//! with their request. Packets and bytes are the sums of the counts each
//! report carries (`webb_packets`, `webb_bytes`: the flow's traffic at its
//! observation point since its previous report), kept apart by direction
//! and by the side that saw the packet (sent: from-endpoint, to-stack;
//! delivered: to-endpoint, from-stack), so that a packet seen leaving one
//! pod and entering another, on one node or two, is not counted twice:
//! [`Figures`] takes the larger side per direction. (With the agent's
//! `--trace-points all`, a debugging mode, TC and the cgroup programs both
//! report a pod's packets, and a side counts them twice.)

use std::{collections::HashMap, fmt::Write as _};

use crate::{
    analysis::{TopCounts, TopKey, TopPair, TopRequest, TopResponse, TopValue},
    flow::{
        DropReason, Endpoint, Flow, FlowType, L7FlowType, TraceObservationPoint, Verdict, layer4,
        layer7,
    },
    wkt::Timestamp,
};

/// The most pairs one answer holds; flows of further pairs are counted as
/// left out. A cluster's distinct pairs by workload are far fewer.
pub const MAX_PAIRS: usize = 100_000;

/// Histogram buckets per power of two (relative error under 1/16).
const SUB: u32 = 16;
const SUB_BITS: u32 = 4;

/// The latency histogram's bucket for `us` microseconds: exact below 16,
/// then 16 buckets per power of two.
pub fn bucket(us: u64) -> u32 {
    if us < u64::from(SUB) {
        return us as u32;
    }
    let e = 63 - us.leading_zeros();
    let sub = ((us >> (e - SUB_BITS)) & u64::from(SUB - 1)) as u32;
    (e - SUB_BITS + 1) * SUB + sub
}

/// The smallest latency (microseconds) in bucket `b`.
pub fn bucket_lower(b: u32) -> u64 {
    if b < SUB {
        return u64::from(b);
    }
    let e = b / SUB + SUB_BITS - 1;
    let sub = u64::from(b % SUB);
    (u64::from(SUB) + sub) << (e - SUB_BITS)
}

/// The keys a request asks for, workload when none.
pub fn keys(req: &[i32]) -> Vec<TopKey> {
    let keys: Vec<TopKey> = req
        .iter()
        .filter_map(|k| TopKey::try_from(*k).ok())
        .filter(|k| *k != TopKey::Unspecified)
        .collect();
    if keys.is_empty() {
        vec![TopKey::Workload]
    } else {
        keys
    }
}

#[derive(Clone, Default)]
struct Acc {
    keys: Vec<TopValue>,
    flows: u64,
    counts: [TopCounts; 4],
    drops: u64,
    errors: u64,
    responses: u64,
    latency: std::collections::BTreeMap<u32, u64>,
}

/// Sums flows into pairs; see the module docs.
pub struct Aggregator {
    by: Vec<TopKey>,
    pairs: HashMap<String, Acc>,
    key: String,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    counted: u64,
    flows_left_out: u64,
}

/// Which of a pair's four counters a packet report adds to.
fn counter(reversed: bool, point: i32) -> usize {
    let delivered = point == TraceObservationPoint::ToEndpoint as i32
        || point == TraceObservationPoint::FromStack as i32;
    usize::from(reversed) * 2 + usize::from(delivered)
}

fn end_ip(flow: &Flow, source: bool) -> &str {
    flow.ip
        .as_ref()
        .map_or("", |ip| if source { &ip.source } else { &ip.destination })
}

/// A flow's end as `webb top --by workload` names it: namespace/workload,
/// else namespace/pod, else the address.
pub fn workload_name(flow: &Flow, source: bool) -> String {
    let mut out = String::new();
    write_end(&mut out, TopKey::Workload, flow, source);
    out
}

/// The flow's responder port, `5432/TCP` (`ICMPv4` for ICMP); `reversed`
/// when the flow is the connection's reply.
pub fn port_name(flow: &Flow, reversed: bool) -> String {
    let mut out = String::new();
    write_pair(&mut out, TopKey::Port, flow, reversed);
    out
}

/// The end's name for `key`, written into `out`.
fn write_end(out: &mut String, key: TopKey, flow: &Flow, source: bool) {
    let ep: Option<&Endpoint> = if source {
        flow.source.as_ref()
    } else {
        flow.destination.as_ref()
    };
    let pod = ep.filter(|e| !e.pod_name.is_empty());
    match key {
        TopKey::Workload => match pod {
            Some(e) => {
                let name = e.workloads.first().map_or(&e.pod_name, |w| &w.name);
                let _ = write!(out, "{}/{}", e.namespace, name);
            }
            None => out.push_str(end_ip(flow, source)),
        },
        TopKey::Pod => match pod {
            Some(e) => {
                let _ = write!(out, "{}/{}", e.namespace, e.pod_name);
            }
            None => out.push_str(end_ip(flow, source)),
        },
        TopKey::Namespace => match ep.filter(|e| !e.namespace.is_empty()) {
            Some(e) => out.push_str(&e.namespace),
            None => {
                let reserved = ep.and_then(|e| {
                    e.labels
                        .iter()
                        .find(|l| l.starts_with("reserved:"))
                        .map(String::as_str)
                });
                out.push_str(reserved.unwrap_or("reserved:world"));
            }
        },
        TopKey::Fqdn => {
            let names = if source {
                &flow.source_names
            } else {
                &flow.destination_names
            };
            match (names.first(), pod) {
                (Some(n), _) => out.push_str(n),
                (None, Some(e)) => {
                    let _ = write!(out, "{}/{}", e.namespace, e.pod_name);
                }
                (None, None) => out.push_str(end_ip(flow, source)),
            }
        }
        _ => {}
    }
}

/// The pair-wide value for `key` (node, responder port, drop reason).
fn write_pair(out: &mut String, key: TopKey, flow: &Flow, reversed: bool) {
    match key {
        TopKey::Node => out.push_str(&flow.node_name),
        TopKey::Port => {
            let l4 = flow.l4.as_ref().and_then(|l| l.protocol.as_ref());
            let port = |s: u32, d: u32| if reversed { s } else { d };
            match l4 {
                Some(layer4::Protocol::Tcp(t)) => {
                    let _ = write!(out, "{}/TCP", port(t.source_port, t.destination_port));
                }
                Some(layer4::Protocol::Udp(u)) => {
                    let _ = write!(out, "{}/UDP", port(u.source_port, u.destination_port));
                }
                Some(layer4::Protocol::Sctp(s)) => {
                    let _ = write!(out, "{}/SCTP", port(s.source_port, s.destination_port));
                }
                Some(layer4::Protocol::IcmPv4(_)) => out.push_str("ICMPv4"),
                Some(layer4::Protocol::IcmPv6(_)) => out.push_str("ICMPv6"),
                Some(_) | None => {}
            }
        }
        TopKey::Reason if flow.verdict == Verdict::Dropped as i32 => {
            match DropReason::try_from(flow.drop_reason_desc) {
                Ok(DropReason::Unknown) | Err(_) if !flow.webb_kernel_drop_reason.is_empty() => {
                    out.push_str(&flow.webb_kernel_drop_reason)
                }
                Ok(r) => out.push_str(r.as_str_name()),
                Err(_) => {
                    let _ = write!(out, "{}", flow.drop_reason_desc);
                }
            }
        }
        _ => {}
    }
}

fn pair_wide(key: TopKey) -> bool {
    matches!(key, TopKey::Node | TopKey::Port | TopKey::Reason)
}

/// Whether the flow reports the connection's other direction.
fn is_reversed(flow: &Flow) -> bool {
    if flow.r#type == FlowType::L7 as i32
        && let Some(l7) = &flow.l7
    {
        return l7.r#type == L7FlowType::Response as i32;
    }
    flow.is_reply.is_some_and(|r| r.value)
}

impl Aggregator {
    pub fn new(by: Vec<TopKey>) -> Self {
        Self {
            by,
            pairs: HashMap::new(),
            key: String::with_capacity(128),
            first: None,
            last: None,
            counted: 0,
            flows_left_out: 0,
        }
    }

    /// Counts a flow of the window.
    pub fn add(&mut self, flow: &Flow) {
        let reversed = is_reversed(flow);
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        for k in &self.by {
            if pair_wide(*k) {
                write_pair(&mut key, *k, flow, reversed);
            } else {
                write_end(&mut key, *k, flow, !reversed);
                key.push('\u{1f}');
                write_end(&mut key, *k, flow, reversed);
            }
            key.push('\u{1e}');
        }
        if let Some(t) = flow.time {
            self.first = Some(self.first.map_or(t, |f| f.min(t)));
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
        if !self.pairs.contains_key(key.as_str()) {
            if self.pairs.len() >= MAX_PAIRS {
                self.flows_left_out += 1;
                self.key = key;
                return;
            }
            let keys = self.values(&key);
            self.pairs.insert(
                key.clone(),
                Acc {
                    keys,
                    ..Default::default()
                },
            );
        }
        self.counted += 1;
        let Some(acc) = self.pairs.get_mut(key.as_str()) else {
            self.key = key;
            return;
        };
        self.key = key;
        acc.flows += 1;
        // Dropped packets went nowhere: they are drops, not traffic.
        if flow.verdict != Verdict::Dropped as i32 {
            let c = &mut acc.counts[counter(reversed, flow.trace_observation_point)];
            c.packets += flow.webb_packets;
            c.bytes += flow.webb_bytes;
        }
        if flow.verdict == Verdict::Dropped as i32 {
            acc.drops += 1;
        }
        if let Some(l7) = &flow.l7
            && l7.r#type == L7FlowType::Response as i32
        {
            acc.responses += 1;
            let failed = match &l7.record {
                Some(layer7::Record::Http(h)) => h.code >= 500,
                Some(layer7::Record::Dns(d)) => d.rcode != 0,
                _ => false,
            };
            if failed {
                acc.errors += 1;
            }
            if l7.latency_ns > 0 {
                *acc.latency.entry(bucket(l7.latency_ns / 1000)).or_default() += 1;
            }
        }
    }

    /// The structured values of a rendered key.
    fn values(&self, key: &str) -> Vec<TopValue> {
        self.by
            .iter()
            .zip(key.split('\u{1e}'))
            .map(|(k, v)| {
                if pair_wide(*k) {
                    TopValue {
                        pair: v.to_owned(),
                        ..Default::default()
                    }
                } else {
                    let (s, d) = v.split_once('\u{1f}').unwrap_or((v, ""));
                    TopValue {
                        source: s.to_owned(),
                        destination: d.to_owned(),
                        pair: String::new(),
                    }
                }
            })
            .collect()
    }

    /// The answer so far, the aggregator counting on (a dashboard's view).
    pub fn snapshot(&self) -> TopResponse {
        TopResponse {
            pairs: self.pairs.values().cloned().map(Acc::into_pair).collect(),
            first: self.first,
            last: self.last,
            flows_counted: self.counted,
            flows_left_out: self.flows_left_out,
            ..Default::default()
        }
    }

    /// The answer: every pair's sums.
    pub fn finish(self) -> TopResponse {
        TopResponse {
            pairs: self.pairs.into_values().map(Acc::into_pair).collect(),
            first: self.first,
            last: self.last,
            flows_counted: self.counted,
            flows_left_out: self.flows_left_out,
            ..Default::default()
        }
    }
}

impl Acc {
    fn into_pair(self) -> TopPair {
        let [fs, fd, rs, rd] = self.counts;
        TopPair {
            keys: self.keys,
            flows: self.flows,
            forward_sent: Some(fs),
            forward_delivered: Some(fd),
            reverse_sent: Some(rs),
            reverse_delivered: Some(rd),
            drops: self.drops,
            errors: self.errors,
            responses: self.responses,
            latency_buckets: self.latency,
        }
    }
}

fn add_counts(into: &mut Option<TopCounts>, from: &Option<TopCounts>) {
    if let Some(f) = from {
        let i = into.get_or_insert_with(TopCounts::default);
        i.packets += f.packets;
        i.bytes += f.bytes;
    }
}

/// Several nodes' answers as one: pairs with equal keys summed.
pub fn merge(answers: impl IntoIterator<Item = TopResponse>) -> TopResponse {
    let mut m = Merger::default();
    for a in answers {
        m.add(a);
    }
    m.finish()
}

/// [`merge`], one answer at a time (the relay merges each node's answer as
/// it arrives, while slower nodes are still answering).
#[derive(Default)]
pub struct Merger {
    out: TopResponse,
    /// By the keys' hash, to the pairs of `out` with it: keys are compared,
    /// never copied (a 100-node answer has hundreds of thousands).
    index: HashMap<u64, Vec<usize>, rustc_hash::FxBuildHasher>,
}

impl Merger {
    pub fn add(&mut self, a: TopResponse) {
        use std::hash::BuildHasher as _;
        let out = &mut self.out;
        out.first = match (out.first, a.first) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        out.last = out.last.max(a.last);
        out.flows_counted += a.flows_counted;
        out.flows_gone += a.flows_gone;
        out.flows_left_out += a.flows_left_out;
        out.nodes.extend(a.nodes);
        out.unavailable_nodes.extend(a.unavailable_nodes);
        for p in a.pairs {
            let h = rustc_hash::FxBuildHasher.hash_one(&p.keys);
            let slot = self.index.entry(h).or_default();
            match slot.iter().copied().find(|&i| out.pairs[i].keys == p.keys) {
                Some(i) => {
                    let q = &mut out.pairs[i];
                    q.flows += p.flows;
                    add_counts(&mut q.forward_sent, &p.forward_sent);
                    add_counts(&mut q.forward_delivered, &p.forward_delivered);
                    add_counts(&mut q.reverse_sent, &p.reverse_sent);
                    add_counts(&mut q.reverse_delivered, &p.reverse_delivered);
                    q.drops += p.drops;
                    q.errors += p.errors;
                    q.responses += p.responses;
                    for (b, n) in p.latency_buckets {
                        *q.latency_buckets.entry(b).or_default() += n;
                    }
                }
                None => {
                    slot.push(out.pairs.len());
                    out.pairs.push(p);
                }
            }
        }
    }

    pub fn finish(self) -> TopResponse {
        self.out
    }
}

/// The Top answer of a server that has no Analysis service (a Hubble agent
/// or relay): its flows of the window, read with GetFlows and summed here.
/// Costs the flows' transfer; gives the same sums.
pub async fn over_get_flows<T>(
    client: &mut crate::observer::observer_client::ObserverClient<T>,
    req: &TopRequest,
) -> Result<TopResponse, tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    use crate::observer::{GetFlowsRequest, get_flows_response::ResponseTypes};
    let until = req
        .until
        .unwrap_or_else(|| Timestamp::from(std::time::SystemTime::now()));
    let flows = GetFlowsRequest {
        since: req.since,
        until: Some(until),
        whitelist: req.whitelist.clone(),
        blacklist: req.blacklist.clone(),
        // Every flow of the window: 0 with since is "all in range";
        // without it, as `hubble observe --all` asks.
        number: if req.since.is_some() { 0 } else { u64::MAX },
        ..Default::default()
    };
    let mut stream = client.get_flows(flows).await?.into_inner();
    let mut agg = Aggregator::new(keys(&req.by));
    let mut nodes = std::collections::BTreeSet::new();
    let mut gone = 0;
    while let Some(item) = stream.message().await? {
        match item.response_types {
            Some(ResponseTypes::Flow(f)) => {
                nodes.insert(item.node_name);
                agg.add(&f)
            }
            Some(ResponseTypes::LostEvents(l)) => gone += l.num_events_lost,
            _ => {}
        }
    }
    let mut answer = agg.finish();
    answer.flows_gone = gone;
    answer.nodes = nodes.into_iter().collect();
    Ok(answer)
}

/// What `webb top` shows of a pair.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
    pub errors: u64,
    pub responses: u64,
    /// The 95th percentile L7 latency, microseconds (the middle of its
    /// histogram bucket); None without a timed response.
    pub p95_us: Option<u64>,
}

impl Figures {
    pub fn of(p: &TopPair) -> Self {
        let c = |x: &Option<TopCounts>| x.unwrap_or_default();
        let (fs, fd, rs, rd) = (
            c(&p.forward_sent),
            c(&p.forward_delivered),
            c(&p.reverse_sent),
            c(&p.reverse_delivered),
        );
        Self {
            flows: p.flows,
            packets: fs.packets.max(fd.packets) + rs.packets.max(rd.packets),
            bytes: fs.bytes.max(fd.bytes) + rs.bytes.max(rd.bytes),
            drops: p.drops,
            errors: p.errors,
            responses: p.responses,
            p95_us: quantile(&p.latency_buckets, 0.95),
        }
    }
}

/// The `q` quantile of a latency histogram, in microseconds.
pub fn quantile(buckets: &std::collections::BTreeMap<u32, u64>, q: f64) -> Option<u64> {
    let total: u64 = buckets.values().sum();
    if total == 0 {
        return None;
    }
    let mut sorted: Vec<(u32, u64)> = buckets.iter().map(|(b, n)| (*b, *n)).collect();
    sorted.sort_unstable();
    // The smallest latency with at least q of the responses at or below it.
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (b, n) in sorted {
        seen += n;
        if seen >= rank {
            let (lo, hi) = (bucket_lower(b), bucket_lower(b + 1));
            return Some(lo + (hi - lo) / 2);
        }
    }
    None
}

#[cfg(test)]
mod tests;
