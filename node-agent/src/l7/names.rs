//! Names learnt from DNS answers, per client: when a client resolved
//! `api.example.com` to 10.0.0.7, its later flows to 10.0.0.7 carry
//! `destination_names: ["api.example.com"]` (and replies `source_names`), so
//! FQDN filters match L3/L4 flows, as with Cilium's DNS proxy.

use std::{collections::HashMap, net::IpAddr};

use node_agent_ebpf::Addr;

use super::dns::Message;

/// Entries kept at most; when full, expired entries go first, then new
/// answers are not learnt until some expire.
const CAPACITY: usize = 65_536;
/// A name outlives a shorter TTL by this much: a client connects right after
/// its lookup, and a TTL of 0 (common for local zones) would otherwise never
/// name the connection it was looked up for.
const MIN_TTL_NS: u64 = 5_000_000_000;

#[derive(Default)]
pub struct NameCache {
    /// (client, resolved address) to names and expiry (monotonic ns).
    map: HashMap<(Addr, IpAddr), (Vec<String>, u64)>,
}

impl NameCache {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Learns the answers of a response received by `client` at `now_ns`.
    pub fn learn(&mut self, client: &Addr, m: &Message, now_ns: u64) {
        if m.ips.is_empty() || m.query.is_empty() {
            return;
        }
        let ttl = (u64::from(m.ttl) * 1_000_000_000).max(MIN_TTL_NS);
        let expires = now_ns.saturating_add(ttl);
        let mut names = Vec::with_capacity(1 + m.cnames.len());
        for n in std::iter::once(&m.query).chain(&m.cnames) {
            let n = n.trim_end_matches('.').to_ascii_lowercase();
            if !n.is_empty() && !names.contains(&n) {
                names.push(n);
            }
        }
        if self.map.len() + m.ips.len() > CAPACITY {
            self.sweep(now_ns);
        }
        for ip in &m.ips {
            if self.map.len() >= CAPACITY && !self.map.contains_key(&(*client, *ip)) {
                return;
            }
            let entry = self
                .map
                .entry((*client, *ip))
                .or_insert_with(|| (Vec::new(), 0));
            for n in &names {
                if !entry.0.contains(n) {
                    entry.0.push(n.clone());
                }
            }
            entry.1 = entry.1.max(expires);
        }
    }

    /// Names `client` resolved `ip` from, if still valid at `now_ns`.
    pub fn lookup(&self, client: &Addr, ip: &IpAddr, now_ns: u64) -> &[String] {
        match self.map.get(&(*client, *ip)) {
            Some((names, expires)) if *expires > now_ns => names,
            _ => &[],
        }
    }

    pub fn sweep(&mut self, now_ns: u64) {
        self.map.retain(|_, (_, expires)| *expires > now_ns);
    }
}
