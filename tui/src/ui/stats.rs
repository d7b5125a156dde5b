//! What the dashboard's panels count, updated once per flow: who talks to
//! whom (`peer`), latency histograms, per-second series, and the drop, DNS
//! and HTTP summaries. Time is the flows' own time, so that a file replayed
//! at any speed shows the rates it was recorded with.

use rustc_hash::FxHashMap;
use webb_proto::flow::{DropReason, Endpoint, Flow, L7FlowType, Verdict, layer7::Record};

/// Keys beyond this many (query names, dropped pairs, routes) are counted
/// as "other" instead of kept, so that a scan cannot grow memory unbounded.
pub const MAX_KEYS: usize = 5_000;

/// The entry for `key`, made if fewer than `MAX_KEYS` are kept; otherwise
/// None, counted in `not_kept`.
fn bounded_entry<'a, K: std::hash::Hash + Eq, V: Default>(
    map: &'a mut FxHashMap<K, V>,
    key: K,
    not_kept: &mut u64,
) -> Option<&'a mut V> {
    if map.len() < MAX_KEYS || map.contains_key(&key) {
        Some(map.entry(key).or_default())
    } else {
        *not_kept += 1;
        None
    }
}

/// Names the workload an endpoint belongs to, as the graph's nodes do:
/// `namespace/workload` (or `namespace/pod`), `host`, or `world` for
/// anything outside the cluster. Writes into `out` to save an allocation
/// per flow.
pub fn peer(e: Option<&Endpoint>, out: &mut String) {
    out.clear();
    let Some(e) = e else {
        out.push_str("world");
        return;
    };
    // Cilium's reserved identities: 1 is the host, 2 the world. Other
    // reserved endpoints are recognised by their label.
    match e.identity {
        1 => return out.push_str("host"),
        2 => return out.push_str("world"),
        _ => {}
    }
    if e.identity < 256 && e.labels.iter().any(|l| l == "reserved:host") {
        out.push_str("host");
        return;
    }
    let name = e
        .workloads
        .first()
        .map(|w| w.name.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or(e.pod_name.as_str());
    if name.is_empty() {
        out.push_str("world");
        return;
    }
    if !e.namespace.is_empty() {
        out.push_str(&e.namespace);
        out.push('/');
    }
    out.push_str(name);
}

/// The client and server of a flow: replies travel from server to client,
/// so they are turned around to count against the connection's direction.
pub fn client_server(f: &Flow) -> (Option<&Endpoint>, Option<&Endpoint>) {
    if is_reply(f) {
        (f.destination.as_ref(), f.source.as_ref())
    } else {
        (f.source.as_ref(), f.destination.as_ref())
    }
}

pub fn is_reply(f: &Flow) -> bool {
    #[allow(deprecated)]
    f.is_reply.map_or(f.reply, |r| r.value)
}

/// The namespace part of a peer name (`shop` of `shop/web`), if it has one.
pub fn namespace_of(peer: &str) -> Option<&str> {
    peer.split_once('/').map(|(ns, _)| ns)
}

/// Whether an endpoint belongs to a graph node: a peer name, or a whole
/// namespace written `ns/*`.
pub fn peer_matches(node: &str, e: Option<&Endpoint>, scratch: &mut String) -> bool {
    if let Some(ns) = node.strip_suffix("/*") {
        return e.is_some_and(|e| e.namespace == ns);
    }
    peer(e, scratch);
    scratch == node
}

/// A latency histogram: four buckets per power of two (about 19 % wide),
/// from 1 ns to about 18 minutes. Adding is a few instructions, and two
/// histograms merge by adding their counts.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u32; Self::BUCKETS]>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; Self::BUCKETS]),
            total: 0,
        }
    }
}

impl Histogram {
    const BUCKETS: usize = 4 * 40;

    fn bucket(ns: u64) -> usize {
        if ns < 8 {
            return ns as usize;
        }
        let log = 63 - ns.leading_zeros() as usize;
        let quarter = ((ns >> (log - 2)) & 3) as usize;
        (log * 4 + quarter).min(Self::BUCKETS - 1)
    }

    /// The middle of a bucket's range.
    fn value(bucket: usize) -> u64 {
        if bucket < 8 {
            return bucket as u64;
        }
        let (log, quarter) = (bucket / 4, (bucket % 4) as u64);
        let low = (4 + quarter) << (log - 2);
        let high = (5 + quarter) << (log - 2);
        low + (high - low) / 2
    }

    pub fn add(&mut self, ns: u64) {
        let b = Self::bucket(ns);
        self.counts[b] = self.counts[b].saturating_add(1);
        self.total += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q`-quantile (0.0..=1.0) in nanoseconds, or None when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (b, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Some(Self::value(b));
            }
        }
        None
    }
}

/// Counts per second over the last `N` seconds of flow time.
#[derive(Clone, Copy)]
pub struct Series<const N: usize> {
    counts: [u32; N],
    /// The newest second counted.
    last: i64,
}

impl<const N: usize> Default for Series<N> {
    fn default() -> Self {
        Self {
            counts: [0; N],
            last: i64::MIN,
        }
    }
}

impl<const N: usize> Series<N> {
    fn slot(sec: i64) -> usize {
        sec.rem_euclid(N as i64) as usize
    }

    pub fn add(&mut self, sec: i64) {
        if sec > self.last {
            let gap = if self.last == i64::MIN {
                N as i64
            } else {
                (sec - self.last).min(N as i64)
            };
            for k in 0..gap {
                self.counts[Self::slot(sec - k)] = 0;
            }
            self.last = sec;
        } else if self.last - sec >= N as i64 {
            // Older than the window: too late to count.
            return;
        }
        let s = Self::slot(sec);
        self.counts[s] = self.counts[s].saturating_add(1);
    }

    /// The count of second `sec`, 0 outside the window.
    pub fn at(&self, sec: i64) -> u32 {
        if self.last == i64::MIN || sec > self.last || self.last - sec >= N as i64 {
            0
        } else {
            self.counts[Self::slot(sec)]
        }
    }

    /// Mean per second over the `secs` seconds up to and including `now`.
    pub fn rate(&self, now: i64, secs: i64) -> f64 {
        let secs = secs.clamp(1, N as i64);
        let sum: u64 = (0..secs).map(|k| u64::from(self.at(now - k))).sum();
        sum as f64 / secs as f64
    }

    /// The last `n` seconds up to `now`, oldest first (for sparklines).
    pub fn recent(&self, now: i64, n: usize) -> Vec<u64> {
        let n = n.min(N) as i64;
        (0..n).rev().map(|k| u64::from(self.at(now - k))).collect()
    }
}

pub fn flow_second(f: &Flow) -> Option<i64> {
    f.time.as_ref().map(|t| t.seconds)
}

/// What a dropped flow was dropped for: the kernel's reason when the kernel
/// dropped it (more precise), otherwise Hubble's drop reason.
pub fn drop_reason(f: &Flow) -> String {
    if !f.webb_kernel_drop_reason.is_empty() {
        return f.webb_kernel_drop_reason.clone();
    }
    match DropReason::try_from(f.drop_reason_desc) {
        Ok(DropReason::Unknown) | Err(_) => {
            #[allow(deprecated)]
            let code = f.drop_reason;
            if code == 0 {
                "UNKNOWN".into()
            } else {
                DropReason::try_from(code as i32)
                    .map(|r| r.as_str_name().to_owned())
                    .unwrap_or_else(|_| format!("DROP_REASON_{code}"))
            }
        }
        Ok(r) => r.as_str_name().to_owned(),
    }
}

/// The policies that denied a flow, as `namespace/name` (or just the name
/// of a cluster-wide policy).
pub fn denied_by(f: &Flow) -> String {
    let names: Vec<String> = f
        .ingress_denied_by
        .iter()
        .chain(&f.egress_denied_by)
        .map(|p| {
            if p.namespace.is_empty() {
                p.name.clone()
            } else {
                format!("{}/{}", p.namespace, p.name)
            }
        })
        .collect();
    names.join(",")
}

#[derive(Default, Clone)]
pub struct ReasonStats {
    pub count: u64,
    pub series: Series<64>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DropPair {
    pub source: String,
    pub destination: String,
    /// Destination port, 0 when the protocol has none.
    pub port: u32,
    pub protocol: &'static str,
    pub reason: String,
}

#[derive(Default, Clone)]
pub struct PairStats {
    pub count: u64,
    /// The policy that denied it, when one did.
    pub policy: String,
}

/// Drops by reason over time and by pair.
#[derive(Default)]
pub struct Drops {
    pub total: u64,
    pub series: Series<64>,
    pub reasons: FxHashMap<String, ReasonStats>,
    pub pairs: FxHashMap<DropPair, PairStats>,
    /// Drops whose pair was not kept because `MAX_KEYS` pairs were.
    pub pairs_not_kept: u64,
}

fn port_and_protocol(f: &Flow) -> (u32, &'static str) {
    use webb_proto::flow::layer4::Protocol;
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => (t.destination_port, "TCP"),
        Some(Protocol::Udp(u)) => (u.destination_port, "UDP"),
        Some(Protocol::Sctp(s)) => (s.destination_port, "SCTP"),
        Some(Protocol::IcmPv4(_)) => (0, "ICMPv4"),
        Some(Protocol::IcmPv6(_)) => (0, "ICMPv6"),
        _ => (0, ""),
    }
}

impl Drops {
    pub fn add(&mut self, f: &Flow, sec: Option<i64>, scratch: &mut String) {
        self.total += 1;
        let reason = drop_reason(f);
        if let Some(s) = sec {
            self.series.add(s);
        }
        let r = self.reasons.entry(reason.clone()).or_default();
        r.count += 1;
        if let Some(s) = sec {
            r.series.add(s);
        }
        // Drops are reported in the packet's direction (a dropped reply
        // is still a packet from its source).
        peer(f.source.as_ref(), scratch);
        let source = scratch.clone();
        peer(f.destination.as_ref(), scratch);
        let (port, protocol) = port_and_protocol(f);
        let key = DropPair {
            source,
            destination: scratch.clone(),
            port,
            protocol,
            reason,
        };
        if let Some(p) = bounded_entry(&mut self.pairs, key, &mut self.pairs_not_kept) {
            if p.count == 0 {
                p.policy = denied_by(f);
            }
            p.count += 1;
        }
    }

    /// Reasons, most drops first.
    pub fn top_reasons(&self) -> Vec<(&str, &ReasonStats)> {
        let mut v: Vec<_> = self.reasons.iter().map(|(k, v)| (k.as_str(), v)).collect();
        v.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        v
    }

    /// The `n` pairs with the most drops.
    pub fn top_pairs(&self, n: usize) -> Vec<(&DropPair, &PairStats)> {
        top_n(self.pairs.iter(), n, |(k, v)| {
            (
                v.count,
                std::cmp::Reverse((&k.source, &k.destination, k.port)),
            )
        })
    }
}

/// The `n` largest items by `key`, largest first, without sorting them all.
pub fn top_n<T, K: Ord>(items: impl Iterator<Item = T>, n: usize, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut v: Vec<T> = items.collect();
    if n == 0 {
        return Vec::new();
    }
    if v.len() > n {
        v.select_nth_unstable_by(n - 1, |a, b| key(b).cmp(&key(a)));
        v.truncate(n);
    }
    v.sort_by_key(|a| std::cmp::Reverse(key(a)));
    v
}

#[derive(Default)]
pub struct NameStats {
    pub queries: u64,
    pub responses: u64,
    pub nxdomain: u64,
    pub servfail: u64,
    pub latency: Histogram,
}

/// DNS: queries and answers by name, response codes, latency.
#[derive(Default)]
pub struct Dns {
    pub queries: u64,
    pub responses: u64,
    /// Responses by RCODE (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, ...).
    pub rcodes: std::collections::BTreeMap<u32, u64>,
    pub latency: Histogram,
    /// By query name and type (`web.shop.lab. A`).
    pub names: FxHashMap<String, NameStats>,
    pub names_not_kept: u64,
}

pub fn rcode_name(rcode: u32) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

impl Dns {
    fn add(&mut self, dns: &webb_proto::flow::Dns, kind: L7FlowType, latency: u64) {
        let mut key = dns.query.clone();
        for t in &dns.qtypes {
            key.push(' ');
            key.push_str(t);
        }
        let name = bounded_entry(&mut self.names, key, &mut self.names_not_kept);
        match kind {
            L7FlowType::Request => {
                self.queries += 1;
                if let Some(n) = name {
                    n.queries += 1;
                }
            }
            L7FlowType::Response => {
                self.responses += 1;
                *self.rcodes.entry(dns.rcode).or_default() += 1;
                if latency > 0 {
                    self.latency.add(latency);
                }
                if let Some(n) = name {
                    n.responses += 1;
                    n.nxdomain += u64::from(dns.rcode == 3);
                    n.servfail += u64::from(dns.rcode == 2);
                    if latency > 0 {
                        n.latency.add(latency);
                    }
                }
            }
            _ => {}
        }
    }
}

#[derive(Default)]
pub struct RouteStats {
    pub responses: u64,
    pub errors: u64,
    pub latency: Histogram,
}

#[derive(Default)]
pub struct ServiceStats {
    /// Responses by status class: index 1 = 1xx ... 5 = 5xx, 0 = other.
    pub classes: [u64; 6],
    pub requests: u64,
    /// By `METHOD /path` with ids folded (`GET /users/:id`).
    pub routes: FxHashMap<String, RouteStats>,
    /// TLS ClientHellos to it (webb's extension: no decryption).
    pub tls: u64,
    /// Their server names (SNI; `-` for none) and highest offered versions.
    pub tls_names: FxHashMap<String, TlsName>,
}

#[derive(Default)]
pub struct TlsName {
    pub hellos: u64,
    /// The newest hello's highest offered version and ALPN protocols.
    pub version: String,
    pub alpn: String,
}

impl ServiceStats {
    pub fn responses(&self) -> u64 {
        self.classes.iter().sum()
    }
}

/// HTTP and TLS (the L7 tab): status classes by service (the server's
/// workload), latency by route, ClientHellos by server name.
#[derive(Default)]
pub struct Http {
    pub services: FxHashMap<String, ServiceStats>,
    pub routes_not_kept: u64,
}

/// The path of a URL without its query, with segments that look like ids
/// (numbers, UUIDs, long hex) folded to `:id` so that routes stay few.
pub fn route(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = if url.contains("://") {
        rest.find('/').map_or("/", |i| &rest[i..])
    } else {
        rest
    };
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let id_like = !seg.is_empty()
            && (seg.bytes().all(|b| b.is_ascii_digit())
                || (seg.len() >= 8 && seg.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')));
        out.push_str(if id_like { ":id" } else { seg });
    }
    if out.is_empty() { "/".into() } else { out }
}

impl Http {
    fn add_tls(&mut self, server: &str, hello: &webb_proto::flow::WebbTlsClientHello) {
        let service = match self.services.get_mut(server) {
            Some(s) => s,
            None => self.services.entry(server.to_owned()).or_default(),
        };
        service.tls += 1;
        let name = if hello.server_name.is_empty() {
            "-".to_owned()
        } else {
            hello.server_name.clone()
        };
        if let Some(n) = bounded_entry(&mut service.tls_names, name, &mut self.routes_not_kept) {
            n.hellos += 1;
            n.version.clone_from(&hello.version);
            n.alpn = hello.alpn.join(",");
        }
    }

    fn add(&mut self, server: &str, http: &webb_proto::flow::Http, kind: L7FlowType, latency: u64) {
        let service = match self.services.get_mut(server) {
            Some(s) => s,
            None => self.services.entry(server.to_owned()).or_default(),
        };
        match kind {
            L7FlowType::Request => service.requests += 1,
            L7FlowType::Response => {
                let class = (http.code / 100) as usize;
                service.classes[if (1..=5).contains(&class) { class } else { 0 }] += 1;
                let key = format!("{} {}", http.method, route(&http.url));
                let r = bounded_entry(&mut service.routes, key, &mut self.routes_not_kept);
                if let Some(r) = r {
                    r.responses += 1;
                    r.errors += u64::from(http.code >= 500);
                    if latency > 0 {
                        r.latency.add(latency);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Every panel's counts.
#[derive(Default)]
pub struct Stats {
    pub drops: Drops,
    pub dns: Dns,
    pub http: Http,
    /// The newest flow second seen: "now" for rates and sparklines.
    pub now: i64,
    scratch: String,
}

impl Stats {
    pub fn add(&mut self, f: &Flow) {
        let sec = flow_second(f);
        if let Some(s) = sec {
            self.now = self.now.max(s);
        }
        if f.verdict == Verdict::Dropped as i32 {
            self.drops.add(f, sec, &mut self.scratch);
        }
        let Some(l7) = &f.l7 else { return };
        if let Some(hello) = &l7.webb_tls {
            let (_, server) = client_server(f);
            peer(server, &mut self.scratch);
            self.http.add_tls(&self.scratch, hello);
            return;
        }
        let kind = L7FlowType::try_from(l7.r#type).unwrap_or_default();
        match &l7.record {
            Some(Record::Dns(d)) => self.dns.add(d, kind, l7.latency_ns),
            Some(Record::Http(h)) => {
                let (_, server) = client_server(f);
                peer(server, &mut self.scratch);
                self.http.add(&self.scratch, h, kind, l7.latency_ns);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_a_bucket() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.add(ms * 1_000_000);
        }
        let p50 = h.quantile(0.5).unwrap() as f64 / 1e6;
        let p99 = h.quantile(0.99).unwrap() as f64 / 1e6;
        assert!((45.0..=56.0).contains(&p50), "p50 {p50}");
        assert!((88.0..=112.0).contains(&p99), "p99 {p99}");
        assert_eq!(Histogram::default().quantile(0.5), None);
        let mut m = Histogram::default();
        m.merge(&h);
        assert_eq!(m.count(), 100);
        // Every bucket's value falls back into the same bucket (values
        // below 8 have a bucket each; 8..12 are unused).
        for b in (0..8).chain(12..Histogram::BUCKETS) {
            assert_eq!(Histogram::bucket(Histogram::value(b)), b);
        }
    }

    #[test]
    fn series_counts_the_last_seconds_only() {
        let mut s = Series::<8>::default();
        s.add(100);
        s.add(100);
        s.add(101);
        assert_eq!(s.at(100), 2);
        assert_eq!(s.rate(101, 2), 1.5);
        s.add(120);
        assert_eq!(s.at(100), 0);
        assert_eq!(s.at(120), 1);
        // Too old for the window: not counted anywhere.
        s.add(50);
        assert_eq!(s.recent(120, 3), vec![0, 0, 1]);
    }

    #[test]
    fn routes_fold_ids_and_drop_queries() {
        assert_eq!(route("http://web.shop:8080/users/42?x=1"), "/users/:id");
        assert_eq!(
            route("/orders/3f2a9c1e-1111-2222-3333-444455556666/items"),
            "/orders/:id/items"
        );
        assert_eq!(route("http://web"), "/");
        assert_eq!(route("/healthz"), "/healthz");
    }
}
