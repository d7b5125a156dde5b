//! `webb advise policy -n NS`: networking.k8s.io/v1 NetworkPolicies that
//! allow exactly the traffic a window of history saw, one per workload.
//!
//! The window's flows touching the namespace are read with GetFlows (field
//! masked to what deciding needs) and each connection is counted once, by
//! its five-tuple, however many points reported it. A connection between
//! two workloads becomes an ingress rule of the responder and an egress
//! rule of the initiator: peers are pods by their workload's labels (with
//! the namespace's name label when it is another namespace), addresses
//! outside the cluster an ipBlock each, ports with their protocol. Every
//! policy isolates both directions and keeps DNS to kube-dns open.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fmt::Write as _,
    net::IpAddr,
};

use chrono::{DateTime, Utc};
use webb_proto::{
    flow::{Endpoint, Flow, FlowFilter, FlowType, Verdict, WebbEmitReason, layer4::Protocol},
    observer::{
        GetFlowsRequest, get_flows_response::ResponseTypes, observer_client::ObserverClient,
    },
    wkt::{FieldMask, Timestamp},
};

use crate::{
    conn::{ConfigFile, Server, ServerArgs, Usage},
    status::thousands,
    top::{parse_time, ts},
};

#[derive(Debug, Clone, clap::Args)]
pub struct AdviseArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The namespace whose workloads get a policy
    #[arg(short, long, value_name = "NAMESPACE", help_heading = "Advise")]
    pub namespace: String,
    /// Only this workload's policy (its name as flows name it: the
    /// Deployment, StatefulSet, ... or the pod)
    #[arg(long, value_name = "NAME", help_heading = "Advise")]
    pub workload: Option<String>,
    /// The traffic since this time (a duration before now or a time, as
    /// `observe --since`) [default: all the history held]
    #[arg(long, value_name = "TIME", value_parser = parse_time, help_heading = "Advise")]
    pub since: Option<DateTime<Utc>>,
    /// Until this time [default: now]
    #[arg(long, value_name = "TIME", value_parser = parse_time, help_heading = "Advise")]
    pub until: Option<DateTime<Utc>>,
}

/// Labels that name one pod or one rollout rather than the workload: a
/// selector with them would miss the workload's next pod.
fn stable_label(key: &str) -> bool {
    !(key == "io.kubernetes.pod.namespace"
        || key.starts_with("io.cilium.")
        || key == "pod-template-hash"
        || key == "controller-revision-hash"
        || key == "pod-template-generation"
        || key == "statefulset.kubernetes.io/pod-name"
        || key == "apps.kubernetes.io/pod-index"
        || key == "controller-uid"
        || key == "batch.kubernetes.io/controller-uid")
}

/// An endpoint's own labels, `k8s:key=value` → key, value; only those a
/// selector may use.
fn selector_labels(e: &Endpoint) -> BTreeMap<String, String> {
    e.labels
        .iter()
        .filter_map(|l| l.strip_prefix("k8s:")?.split_once('='))
        .filter(|(k, _)| stable_label(k))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A workload: namespace and name.
type Workload = (String, String);

fn workload_of(e: &Endpoint) -> Option<Workload> {
    if e.pod_name.is_empty() || e.namespace.is_empty() {
        return None;
    }
    let name = e.workloads.first().map_or(&e.pod_name, |w| &w.name);
    Some((e.namespace.clone(), name.clone()))
}

/// The other end of a rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    Pods(Workload),
    /// An address outside the cluster's pods (world, the node, another
    /// node): its /32 or /128.
    Address(IpAddr),
}

/// What was seen of one rule's peer.
#[derive(Debug, Default)]
struct Seen {
    /// (protocol name, port) → connections.
    ports: BTreeMap<(&'static str, u16), u64>,
    /// ICMP connections: no NetworkPolicy port names ICMP.
    icmp: u64,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    /// DNS names the peer's address was learnt for.
    names: BTreeSet<String>,
}

impl Seen {
    fn add(&mut self, port: Option<(&'static str, u16)>, time: Option<Timestamp>) {
        match port {
            Some(p) => *self.ports.entry(p).or_default() += 1,
            None => self.icmp += 1,
        }
        if let Some(t) = time {
            self.first = Some(self.first.map_or(t, |f| f.min(t)));
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
    }

    fn connections(&self) -> u64 {
        self.ports.values().sum::<u64>() + self.icmp
    }
}

#[derive(Debug, Default)]
struct Subject {
    ingress: BTreeMap<Peer, Seen>,
    egress: BTreeMap<Peer, Seen>,
}

/// The window's connections, per workload of the namespace.
#[derive(Debug, Default)]
pub struct Advisor {
    namespace: String,
    workload: Option<String>,
    seen: HashSet<(String, String, u16, u16, &'static str)>,
    subjects: BTreeMap<String, Subject>,
    /// Every workload's selector labels: those all its pods seen carry.
    labels: BTreeMap<Workload, BTreeMap<String, String>>,
    pub connections: u64,
    /// Connections to a Service address (the backend's side of each names
    /// the pods it reached).
    pub via_service: u64,
    pub nodes: BTreeSet<String>,
    pub flows_gone: u64,
}

/// The connection this flow starts, if it reports one's first packet (webb:
/// the new-flow or drop report; a Hubble flow: a TCP SYN without ACK, or a
/// UDP/SCTP/ICMP flow that is no reply), forwarded.
fn connection_start(f: &Flow) -> Option<(&'static str, u16, u16)> {
    if f.r#type != FlowType::L3L4 as i32
        || f.verdict != Verdict::Forwarded as i32
        || f.is_reply.is_some_and(|r| r.value)
    {
        return None;
    }
    let webb = f.webb_emit_reason != WebbEmitReason::Unknown as i32;
    if webb && f.webb_emit_reason != WebbEmitReason::WebbEmitNew as i32 {
        return None;
    }
    let port = |p: u32| u16::try_from(p).ok();
    match f.l4.as_ref()?.protocol.as_ref()? {
        Protocol::Tcp(t) => {
            let flags = t.flags.unwrap_or_default();
            // A Hubble flow starts a connection with its SYN alone.
            let opening = flags.syn && !flags.ack;
            if !webb && !opening {
                return None;
            }
            Some(("TCP", port(t.source_port)?, port(t.destination_port)?))
        }
        Protocol::Udp(u) => Some(("UDP", port(u.source_port)?, port(u.destination_port)?)),
        Protocol::Sctp(s) => Some(("SCTP", port(s.source_port)?, port(s.destination_port)?)),
        Protocol::IcmPv4(_) => Some(("ICMP", 0, 0)),
        Protocol::IcmPv6(_) => Some(("ICMPv6", 0, 0)),
        _ => None,
    }
}

impl Advisor {
    pub fn new(namespace: &str, workload: Option<&str>) -> Self {
        Self {
            namespace: namespace.to_owned(),
            workload: workload.map(str::to_owned),
            ..Self::default()
        }
    }

    pub fn add(&mut self, f: &Flow) {
        let Some((proto, sport, dport)) = connection_start(f) else {
            return;
        };
        let Some(ip) = f.ip.as_ref() else { return };
        let (Ok(src_ip), Ok(dst_ip)) = (
            ip.source.parse::<IpAddr>(),
            ip.destination.parse::<IpAddr>(),
        ) else {
            return;
        };
        let key = (
            ip.source.clone(),
            ip.destination.clone(),
            sport,
            dport,
            proto,
        );
        if !self.seen.insert(key) {
            return;
        }
        let (src, dst) = (f.source.as_ref(), f.destination.as_ref());
        let (src_w, dst_w) = (src.and_then(workload_of), dst.and_then(workload_of));
        let ours = |w: &Option<Workload>| w.as_ref().is_some_and(|w| w.0 == self.namespace);
        if !ours(&src_w) && !ours(&dst_w) {
            return;
        }
        self.connections += 1;
        for (e, w) in [(src, &src_w), (dst, &dst_w)] {
            if let (Some(e), Some(w)) = (e, w) {
                let labels = selector_labels(e);
                self.labels
                    .entry(w.clone())
                    .and_modify(|have| have.retain(|k, v| labels.get(k) == Some(v)))
                    .or_insert(labels);
            }
        }
        let port = (dport != 0 || !proto.starts_with("ICMP")).then_some((proto, dport));
        let peer_of = |w: &Option<Workload>, ip: IpAddr| match w {
            Some(w) => Peer::Pods(w.clone()),
            None => Peer::Address(ip),
        };
        // Leaving the initiator to a Service address: the backend's report
        // (a tuple of its own) names the pod behind it.
        let to_service = dst_w.is_none() && f.destination_service.is_some();
        if to_service {
            self.via_service += 1;
        }
        let wanted = |name: &str| self.workload.as_deref().is_none_or(|w| w == name);
        if let Some(w) = src_w
            .as_ref()
            .filter(|w| w.0 == self.namespace && wanted(&w.1))
            && !to_service
        {
            let seen = self
                .subjects
                .entry(w.1.clone())
                .or_default()
                .egress
                .entry(peer_of(&dst_w, dst_ip))
                .or_default();
            seen.add(port, f.time);
            seen.names.extend(f.destination_names.iter().cloned());
        }
        if let Some(w) = dst_w
            .as_ref()
            .filter(|w| w.0 == self.namespace && wanted(&w.1))
        {
            let seen = self
                .subjects
                .entry(w.1.clone())
                .or_default()
                .ingress
                .entry(peer_of(&src_w, src_ip))
                .or_default();
            seen.add(port, f.time);
            seen.names.extend(f.source_names.iter().cloned());
        }
    }

    /// The policies, as YAML documents with comments.
    pub fn render(&self, window: &str) -> String {
        let mut out = format!(
            "# webb advise policy -n {}: {window}, {} connection(s) from {} node(s)",
            self.namespace,
            thousands(self.connections),
            self.nodes.len(),
        );
        if self.flows_gone > 0 {
            let _ = write!(
                out,
                "; {} flows of the window no longer held",
                thousands(self.flows_gone)
            );
        }
        out.push('\n');
        out.push_str(
            "# Each policy allows exactly what its workload was seen doing; anything\n\
             # else to or from its pods is dropped once applied (DNS to kube-dns stays open).\n",
        );
        if self.subjects.is_empty() {
            let _ = writeln!(
                out,
                "# No connection of {} was seen in the window: nothing to advise.",
                match &self.workload {
                    Some(w) => format!("{}/{w}", self.namespace),
                    None => format!("namespace {}", self.namespace),
                }
            );
        }
        for (name, subject) in &self.subjects {
            self.render_policy(&mut out, name, subject);
        }
        out
    }

    fn render_policy(&self, out: &mut String, name: &str, subject: &Subject) {
        let w = (self.namespace.clone(), name.to_owned());
        let labels = self.labels.get(&w).cloned().unwrap_or_default();
        out.push_str("---\n");
        if labels.is_empty() {
            let _ = writeln!(
                out,
                "# {}/{name}: its pods share no label a selector could use; no policy.",
                self.namespace
            );
            return;
        }
        let _ = writeln!(
            out,
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {}\n  namespace: {}\n  labels:\n    {}: {}\nspec:\n  podSelector:",
            q(&policy_name(name)),
            q(&self.namespace),
            q("app.kubernetes.io/managed-by"),
            q("webb-advise"),
        );
        match_labels(out, &labels, 4);
        out.push_str("  policyTypes: [\"Ingress\", \"Egress\"]\n");
        out.push_str("  ingress:");
        if subject.ingress.is_empty() {
            out.push_str(" []  # nothing was seen coming in\n");
        } else {
            out.push('\n');
            for (peer, seen) in &subject.ingress {
                self.render_rule(out, "from", "from", peer, seen);
            }
        }
        out.push_str("  egress:\n");
        out.push_str(
            "    # DNS to kube-dns, kept open\n    - to:\n        - namespaceSelector:\n            matchLabels:\n              \"kubernetes.io/metadata.name\": \"kube-system\"\n          podSelector:\n            matchLabels:\n              \"k8s-app\": \"kube-dns\"\n      ports:\n        - {protocol: UDP, port: 53}\n        - {protocol: TCP, port: 53}\n",
        );
        for (peer, seen) in &subject.egress {
            if self.is_kube_dns(peer) && seen.ports.keys().all(|(_, p)| *p == 53) {
                continue;
            }
            self.render_rule(out, "to", "to", peer, seen);
        }
    }

    fn is_kube_dns(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Pods(w) => {
                w.0 == "kube-system"
                    && self
                        .labels
                        .get(w)
                        .is_some_and(|l| l.get("k8s-app").is_some_and(|v| v == "kube-dns"))
            }
            Peer::Address(_) => false,
        }
    }

    fn render_rule(&self, out: &mut String, field: &str, word: &str, peer: &Peer, seen: &Seen) {
        let span = match (seen.first, seen.last) {
            (Some(f), Some(l)) if f == l => format!(", at {f}"),
            (Some(f), Some(l)) => format!(", {f} .. {l}"),
            _ => String::new(),
        };
        let who = match peer {
            Peer::Pods((ns, name)) => format!("{ns}/{name}"),
            Peer::Address(ip) if seen.names.is_empty() => ip.to_string(),
            Peer::Address(ip) => format!(
                "{ip} ({})",
                seen.names.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        let _ = writeln!(
            out,
            "    # {word} {}: {} connection(s){span}",
            comment(&who),
            thousands(seen.connections())
        );
        if seen.icmp > 0 {
            let _ = writeln!(
                out,
                "    # ({} ICMP: a NetworkPolicy cannot allow ICMP alone; not allowed)",
                thousands(seen.icmp)
            );
        }
        if seen.ports.is_empty() {
            return;
        }
        let _ = writeln!(out, "    - {field}:");
        match peer {
            Peer::Pods(w) => {
                let labels = self.labels.get(w).cloned().unwrap_or_default();
                if w.0 == self.namespace {
                    out.push_str("        - podSelector:");
                } else {
                    let _ = write!(
                        out,
                        "        - namespaceSelector:\n            matchLabels:\n              \"kubernetes.io/metadata.name\": {}\n          podSelector:",
                        q(&w.0)
                    );
                }
                if labels.is_empty() {
                    // No label all its pods carry: every pod of its namespace.
                    out.push_str(" {}\n");
                } else {
                    out.push('\n');
                    match_labels(out, &labels, 12);
                }
            }
            Peer::Address(ip) => {
                let len = if ip.is_ipv4() { 32 } else { 128 };
                let _ = writeln!(
                    out,
                    "        - ipBlock:\n            cidr: {}",
                    q(&format!("{ip}/{len}"))
                );
            }
        }
        out.push_str("      ports:\n");
        for ((proto, port), n) in &seen.ports {
            let _ = writeln!(
                out,
                "        - {{protocol: {proto}, port: {port}}}  # {} connection(s)",
                thousands(*n)
            );
        }
    }
}

fn match_labels(out: &mut String, labels: &BTreeMap<String, String>, indent: usize) {
    let pad = " ".repeat(indent);
    let _ = writeln!(out, "{pad}matchLabels:");
    for (k, v) in labels {
        let _ = writeln!(out, "{pad}  {}: {}", q(k), q(v));
    }
}

/// A YAML double-quoted scalar (JSON's string syntax is YAML's).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// A comment line's text: no line breaks or control characters.
fn comment(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `webb-advise-NAME`, cut to a valid object name (253 characters).
fn policy_name(workload: &str) -> String {
    let mut name = format!("webb-advise-{workload}");
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_owned()
}

/// What advise asks of each flow: the fields deciding and naming need.
const FIELDS: &[&str] = &[
    "time",
    "verdict",
    "Type",
    "is_reply",
    "IP",
    "l4",
    "source",
    "destination",
    "source_names",
    "destination_names",
    "destination_service",
    "webb_emit_reason",
];

pub async fn run(args: AdviseArgs, config: &ConfigFile) -> anyhow::Result<()> {
    if let (Some(s), Some(u)) = (args.since, args.until)
        && s > u
    {
        return Err(Usage("--since is after --until".to_owned()).into());
    }
    let (server, _forward) = Server::resolve_forwarded(&args.server, config).await?;
    let channel = server.connect().await?;
    let mut client = ObserverClient::new(channel).max_decoding_message_size(64 << 20);
    let until = args.until.unwrap_or_else(Utc::now);
    let ns = format!("{}/", args.namespace);
    let req = GetFlowsRequest {
        since: args.since.map(ts),
        until: Some(ts(until)),
        number: if args.since.is_some() { 0 } else { u64::MAX },
        whitelist: vec![
            FlowFilter {
                source_pod: vec![ns.clone()],
                ..Default::default()
            },
            FlowFilter {
                destination_pod: vec![ns],
                ..Default::default()
            },
        ],
        field_mask: Some(FieldMask {
            paths: FIELDS.iter().map(|s| (*s).to_owned()).collect(),
        }),
        ..Default::default()
    };
    let mut advisor = Advisor::new(&args.namespace, args.workload.as_deref());
    let read = async {
        let mut stream = client.get_flows(req).await?.into_inner();
        while let Some(item) = stream.message().await? {
            match item.response_types {
                Some(ResponseTypes::Flow(f)) => {
                    advisor.nodes.insert(item.node_name);
                    advisor.add(&f);
                }
                Some(ResponseTypes::LostEvents(l)) => advisor.flows_gone += l.num_events_lost,
                _ => {}
            }
        }
        Ok::<_, tonic::Status>(())
    };
    if let Err(s) = read.await {
        return Err(server.call_error("GetFlows", &s));
    }
    let window = format!(
        "{} .. {}",
        args.since.map_or_else(
            || "the oldest flow held".to_owned(),
            |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        ),
        until.format("%Y-%m-%dT%H:%M:%SZ")
    );
    print!("{}", advisor.render(&window));
    Ok(())
}

#[cfg(test)]
mod tests;
