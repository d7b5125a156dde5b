//! Kubernetes NetworkPolicy (networking.k8s.io/v1), compiled into the kernel's
//! policy maps.
//!
//! The kernel asks one question per new flow at TC: may identity S talk to
//! (egress) or hear from (ingress) identity P on port/protocol X? Compilation
//! answers it ahead of time:
//! - each endpoint identity selected by some policy for a direction is
//!   *isolated* in that direction (a flag in the endpoint map);
//! - every (subject, peer, port, proto, dir) a rule allows becomes a key in
//!   the policy map, with 0 as the wildcard for peer, port and protocol;
//! - ipBlocks become CIDR identities: each distinct prefix of every `cidr` and
//!   `except` gets its own identity in an LPM trie. An address's longest
//!   matching prefix P lies inside a block's cidr exactly when the address
//!   does, and likewise for an except, so "P inside cidr and inside no except"
//!   decides the block for every address that maps to P.
//!
//! Replies to allowed connections are allowed by the datapath's flow tracking,
//! and traffic from the node itself (kubelet probes) is always allowed in, as
//! Cilium does by default. Named ports are refused with a clear error.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::Path,
};

use anyhow::Context as _;
use ipnet::IpNet;
use node_agent_ebpf::{PolicyKey, dir, endpoint_flags, identity};
use serde::{Deserialize, Deserializer};

use crate::endpoints::{EndpointInfo, EndpointTable};

/// First identity used for CIDR prefixes (Cilium's local CIDR identities
/// start at 2^24 too).
pub const CIDR_IDENTITY_BASE: u32 = 1 << 24;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicy {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Metadata {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    "default".to_owned()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    pub pod_selector: LabelSelector,
    #[serde(default)]
    pub policy_types: Option<Vec<PolicyType>>,
    #[serde(default)]
    pub ingress: Option<Vec<IngressRule>>,
    #[serde(default)]
    pub egress: Option<Vec<EgressRule>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    #[serde(default)]
    pub from: Option<Vec<PolicyPeer>>,
    #[serde(default)]
    pub ports: Option<Vec<PolicyPort>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    #[serde(default)]
    pub to: Option<Vec<PolicyPeer>>,
    #[serde(default)]
    pub ports: Option<Vec<PolicyPort>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyPeer {
    #[serde(default)]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default)]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default)]
    pub ip_block: Option<IpBlock>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpBlock {
    pub cidr: IpNet,
    #[serde(default)]
    pub except: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyPort {
    #[serde(default)]
    pub protocol: Option<Protocol>,
    #[serde(default, deserialize_with = "numeric_port")]
    pub port: Option<u16>,
    #[serde(default)]
    pub end_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }
}

/// A port is a number or a named container port; webb has no container port
/// names, so a name is an error that says so.
fn numeric_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrString {
        Int(u16),
        Str(String),
    }
    match Option::<IntOrString>::deserialize(d)? {
        None => Ok(None),
        Some(IntOrString::Int(p)) => Ok(Some(p)),
        Some(IntOrString::Str(s)) => match s.parse::<u16>() {
            Ok(p) => Ok(Some(p)),
            Err(_) => Err(serde::de::Error::custom(format!(
                "named port {s:?} is not supported (webb knows no container port names); use the port number"
            ))),
        },
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<Expression>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expression {
    pub key: String,
    pub operator: Operator,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// An empty selector selects everything, as in Kubernetes.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let got = labels.get(&e.key);
                match e.operator {
                    Operator::In => got.is_some_and(|v| e.values.contains(v)),
                    Operator::NotIn => got.is_none_or(|v| !e.values.contains(v)),
                    Operator::Exists => got.is_some(),
                    Operator::DoesNotExist => got.is_none(),
                }
            })
    }
}

impl NetworkPolicy {
    fn types(&self) -> Vec<PolicyType> {
        match &self.spec.policy_types {
            Some(t) if !t.is_empty() => t.clone(),
            _ => {
                let mut t = vec![PolicyType::Ingress];
                if self.spec.egress.is_some() {
                    t.push(PolicyType::Egress);
                }
                t
            }
        }
    }

    fn selects(&self, e: &EndpointInfo) -> bool {
        e.namespace == self.metadata.namespace && self.spec.pod_selector.matches(&e.label_map)
    }

    /// The wire form used in `ingress_denied_by` / `egress_denied_by`.
    pub fn reference(&self) -> webb_proto::flow::Policy {
        webb_proto::flow::Policy {
            name: self.metadata.name.clone(),
            namespace: self.metadata.namespace.clone(),
            labels: self
                .metadata
                .labels
                .iter()
                .map(|(k, v)| format!("k8s:{k}={v}"))
                .collect(),
            revision: 0,
            kind: "NetworkPolicy".to_owned(),
        }
    }
}

/// Reads every NetworkPolicy in a YAML file: several `---` documents, or a
/// `kind: List` with `items`. Errors name the document, line and field.
pub fn load_file(path: &Path) -> anyhow::Result<Vec<NetworkPolicy>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy file {}", path.display()))?;
    parse(&text).with_context(|| format!("policy file {}", path.display()))
}

pub fn parse(text: &str) -> anyhow::Result<Vec<NetworkPolicy>> {
    #[derive(Deserialize)]
    struct Kind {
        kind: Option<String>,
        #[serde(default)]
        items: Vec<serde_yaml_ng::Value>,
    }
    // First pass: the kind of every document. Second pass: deserialise each
    // policy straight from the text so errors carry line numbers.
    let values = serde_yaml_ng::Deserializer::from_str(text)
        .enumerate()
        .map(|(i, doc)| {
            serde_yaml_ng::Value::deserialize(doc)
                .map_err(|e| anyhow::anyhow!("document {}: {e}", i + 1))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for (i, (doc, value)) in serde_yaml_ng::Deserializer::from_str(text)
        .zip(values)
        .enumerate()
    {
        let at = |e: anyhow::Error| anyhow::anyhow!("document {}: {e}", i + 1);
        if value.is_null() {
            continue;
        }
        let kind: Kind = serde_yaml_ng::from_value(value).map_err(|e| at(e.into()))?;
        if kind.kind.as_deref() == Some("List") {
            for (j, item) in kind.items.into_iter().enumerate() {
                let p = serde_yaml_ng::from_value(item)
                    .map_err(|e| anyhow::anyhow!("document {}, items[{j}]: {e}", i + 1))?;
                out.push(check(p).map_err(at)?);
            }
        } else {
            let p = NetworkPolicy::deserialize(doc).map_err(|e| at(e.into()))?;
            out.push(check(p).map_err(at)?);
        }
    }
    Ok(out)
}

fn check(p: NetworkPolicy) -> anyhow::Result<NetworkPolicy> {
    if p.kind != "NetworkPolicy" {
        anyhow::bail!("kind: {:?} is not NetworkPolicy", p.kind);
    }
    if p.api_version != "networking.k8s.io/v1" {
        anyhow::bail!(
            "apiVersion: {:?} is not networking.k8s.io/v1",
            p.api_version
        );
    }
    for (i, rule) in p.spec.ingress.iter().flatten().enumerate() {
        check_ports(&rule.ports, &format!("spec.ingress[{i}]"))?;
    }
    for (i, rule) in p.spec.egress.iter().flatten().enumerate() {
        check_ports(&rule.ports, &format!("spec.egress[{i}]"))?;
    }
    Ok(p)
}

/// Port ranges wider than this are refused rather than expanded.
const MAX_PORT_RANGE: u32 = 4096;

fn check_ports(ports: &Option<Vec<PolicyPort>>, at: &str) -> anyhow::Result<()> {
    for (j, p) in ports.iter().flatten().enumerate() {
        if let Some(end) = p.end_port {
            let Some(start) = p.port else {
                anyhow::bail!("{at}.ports[{j}].endPort: needs port");
            };
            if end < start {
                anyhow::bail!("{at}.ports[{j}].endPort: {end} is below port {start}");
            }
            if u32::from(end - start) >= MAX_PORT_RANGE {
                anyhow::bail!(
                    "{at}.ports[{j}].endPort: ranges wider than {MAX_PORT_RANGE} ports are not supported"
                );
            }
        }
    }
    Ok(())
}

/// The policy maps' contents.
#[derive(Debug, Default, Clone)]
pub struct CompiledPolicy {
    pub keys: BTreeSet<PolicyKeyOrd>,
    /// Isolation flags by endpoint identity.
    pub isolation: HashMap<u32, u32>,
    /// CIDR prefixes and their identities.
    pub cidrs: Vec<(IpNet, u32)>,
    /// The policies that isolate an identity in a direction, for attributing
    /// denials.
    pub isolating: HashMap<(u32, u8), Vec<webb_proto::flow::Policy>>,
    /// What was compiled, for compiling it again with more (`webb policy
    /// what-if`).
    pub sources: Vec<NetworkPolicy>,
}

/// `PolicyKey` with an order, for deterministic map contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKeyOrd {
    pub subject: u32,
    pub peer: u32,
    pub port: u16,
    pub proto: u8,
    pub dir: u8,
}

impl From<PolicyKeyOrd> for PolicyKey {
    fn from(k: PolicyKeyOrd) -> Self {
        PolicyKey {
            subject: k.subject,
            peer: k.peer,
            port: k.port,
            proto: k.proto,
            dir: k.dir,
        }
    }
}

impl From<PolicyKey> for PolicyKeyOrd {
    fn from(k: PolicyKey) -> Self {
        PolicyKeyOrd {
            subject: k.subject,
            peer: k.peer,
            port: k.port,
            proto: k.proto,
            dir: k.dir,
        }
    }
}

impl node_agent_ebpf::PolicyRules for CompiledPolicy {
    fn has_rule(&self, key: &PolicyKey) -> bool {
        self.keys.contains(&PolicyKeyOrd::from(*key))
    }
}

impl CompiledPolicy {
    pub fn denied_by(&self, subject: u32, direction: u8) -> &[webb_proto::flow::Policy] {
        self.isolating
            .get(&(subject, direction))
            .map_or(&[], Vec::as_slice)
    }

    /// The kernel's decision (`node_agent_ebpf::rules_allow`, the very code
    /// the kernel runs) for a subject and peer identity, with the subject's
    /// isolation as compiled.
    pub fn allows(&self, subject: u32, peer: u32, port: u16, proto: u8, direction: u8) -> bool {
        let bit = if direction == dir::INGRESS {
            endpoint_flags::INGRESS_ISOLATED
        } else {
            endpoint_flags::EGRESS_ISOLATED
        };
        if self.isolation.get(&subject).copied().unwrap_or(0) & bit == 0 {
            return true;
        }
        node_agent_ebpf::rules_allow(self, subject, peer, port, proto, direction)
    }

    /// The identity the kernel's LPM lookup yields for an address outside
    /// every endpoint.
    pub fn cidr_identity(&self, ip: std::net::IpAddr) -> u32 {
        self.cidrs
            .iter()
            .filter(|(net, _)| net.contains(&ip))
            .max_by_key(|(net, _)| net.prefix_len())
            .map_or(identity::WORLD, |(_, id)| *id)
    }
}

/// One rule's peers and ports, whichever direction it is for.
type Rule<'a> = (Option<&'a Vec<PolicyPeer>>, Option<&'a Vec<PolicyPort>>);

/// A peer of a rule, resolved to identities.
enum PeerSet {
    Any,
    Identities(BTreeSet<u32>),
}

pub fn compile(policies: &[NetworkPolicy], table: &EndpointTable) -> CompiledPolicy {
    let mut out = CompiledPolicy {
        sources: policies.to_vec(),
        ..CompiledPolicy::default()
    };

    // CIDR identities: one per distinct prefix (cidrs and excepts).
    let mut prefixes: BTreeSet<IpNet> = BTreeSet::new();
    for p in policies {
        let peers = p
            .spec
            .ingress
            .iter()
            .flatten()
            .flat_map(|r| r.from.iter().flatten())
            .chain(
                p.spec
                    .egress
                    .iter()
                    .flatten()
                    .flat_map(|r| r.to.iter().flatten()),
            );
        for peer in peers {
            if let Some(b) = &peer.ip_block {
                prefixes.insert(b.cidr.trunc());
                prefixes.extend(b.except.iter().map(IpNet::trunc));
            }
        }
    }
    out.cidrs = prefixes
        .iter()
        .enumerate()
        .map(|(i, net)| (*net, CIDR_IDENTITY_BASE + i as u32))
        .collect();

    for p in policies {
        let types = p.types();
        let subjects: BTreeSet<u32> = table
            .endpoints
            .iter()
            .filter(|e| p.selects(e))
            .map(|e| e.identity)
            .collect();
        for t in &types {
            let (direction, bit) = match t {
                PolicyType::Ingress => (dir::INGRESS, endpoint_flags::INGRESS_ISOLATED),
                PolicyType::Egress => (dir::EGRESS, endpoint_flags::EGRESS_ISOLATED),
            };
            for &s in &subjects {
                *out.isolation.entry(s).or_default() |= bit;
                out.isolating
                    .entry((s, direction))
                    .or_default()
                    .push(p.reference());
                if direction == dir::INGRESS {
                    // The node itself may always reach its pods (probes).
                    insert_all(&mut out, s, identity::HOST, 0, 0, direction);
                }
            }
            let rules: Vec<Rule<'_>> = match t {
                PolicyType::Ingress => p
                    .spec
                    .ingress
                    .iter()
                    .flatten()
                    .map(|r| (r.from.as_ref(), r.ports.as_ref()))
                    .collect(),
                PolicyType::Egress => p
                    .spec
                    .egress
                    .iter()
                    .flatten()
                    .map(|r| (r.to.as_ref(), r.ports.as_ref()))
                    .collect(),
            };
            for (peers, ports) in rules {
                let peer_set = resolve_peers(p, peers, table, &out.cidrs);
                let port_list = expand_ports(ports);
                for &s in &subjects {
                    for &(port, proto) in &port_list {
                        match &peer_set {
                            PeerSet::Any => {
                                insert_all(&mut out, s, identity::ANY, port, proto, direction)
                            }
                            PeerSet::Identities(ids) => {
                                for &peer in ids {
                                    insert_all(&mut out, s, peer, port, proto, direction);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

fn insert_all(
    out: &mut CompiledPolicy,
    subject: u32,
    peer: u32,
    port: u16,
    proto: u8,
    direction: u8,
) {
    out.keys.insert(PolicyKeyOrd {
        subject,
        peer,
        port,
        proto,
        dir: direction,
    });
}

fn resolve_peers(
    policy: &NetworkPolicy,
    peers: Option<&Vec<PolicyPeer>>,
    table: &EndpointTable,
    cidrs: &[(IpNet, u32)],
) -> PeerSet {
    let Some(peers) = peers.filter(|p| !p.is_empty()) else {
        return PeerSet::Any;
    };
    let mut ids = BTreeSet::new();
    for peer in peers {
        if let Some(block) = &peer.ip_block {
            let cidr = block.cidr.trunc();
            for (prefix, id) in cidrs {
                let inside = cidr.contains(prefix);
                let excepted = block.except.iter().any(|e| e.trunc().contains(prefix));
                if inside && !excepted {
                    ids.insert(*id);
                }
            }
            // The world (no prefix matched) lies inside a block only if the
            // block is a whole address family.
            if cidr.prefix_len() == 0 && block.except.is_empty() {
                ids.insert(identity::WORLD);
            }
            continue;
        }
        for e in &table.endpoints {
            let ns_ok = match &peer.namespace_selector {
                Some(sel) => sel.matches(&table.namespace_labels(&e.namespace)),
                None => e.namespace == policy.metadata.namespace,
            };
            let pod_ok = peer
                .pod_selector
                .as_ref()
                .is_none_or(|sel| sel.matches(&e.label_map));
            if ns_ok && pod_ok {
                ids.insert(e.identity);
            }
        }
    }
    PeerSet::Identities(ids)
}

fn expand_ports(ports: Option<&Vec<PolicyPort>>) -> Vec<(u16, u8)> {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return vec![(0, 0)];
    };
    let mut out = Vec::new();
    for p in ports {
        let proto = p.protocol.unwrap_or(Protocol::Tcp).number();
        match (p.port, p.end_port) {
            (None, _) => out.push((0, proto)),
            (Some(start), None) => out.push((start, proto)),
            (Some(start), Some(end)) => out.extend((start..=end).map(|port| (port, proto))),
        }
    }
    out
}

#[cfg(test)]
mod tests;
