//! Deciding recorded connections by candidate NetworkPolicies, as the
//! datapath would: the policy compiler and the kernel's own decision
//! (`node_agent_ebpf::policy_allows`) over the maps the agent would write,
//! once for the policies in force and once with the candidates added.

use std::{
    collections::{BTreeSet, HashSet},
    net::IpAddr,
};

use node_agent_ebpf::{Addr, FlowKey, PolicyMaps as _, dir, point, policy_allows};
use tonic::Status;
use webb_proto::{
    analysis::WhatIfChange,
    flow::{Flow, FlowType, TraceObservationPoint, WebbEmitReason, layer4::Protocol},
    whatif::Changes,
};

use crate::{
    cluster::KernelState,
    endpoints::EndpointTable,
    policy::{self, CompiledPolicy, NetworkPolicy},
};

pub struct Judge {
    now: KernelState,
    then: KernelState,
    with_candidates: CompiledPolicy,
    /// namespace/name of every candidate.
    candidates: BTreeSet<String>,
    /// The connections decided so far: a connection is its five-tuple at a
    /// point, so a dropped SYN's retransmissions (each reported) count once.
    seen: HashSet<FlowKey>,
}

fn name(p: &NetworkPolicy) -> String {
    format!("{}/{}", p.metadata.namespace, p.metadata.name)
}

impl Judge {
    /// The policies in force, and them with the candidates (YAML texts) in
    /// addition; a candidate with the namespace and name of one in force
    /// replaces it.
    pub fn new(
        table: &EndpointTable,
        in_force: &CompiledPolicy,
        texts: &[String],
    ) -> Result<Self, Status> {
        let mut candidates = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let parsed = policy::parse(text).map_err(|e| {
                Status::invalid_argument(format!("candidate policy file {}: {e:#}", i + 1))
            })?;
            candidates.extend(parsed);
        }
        if candidates.is_empty() {
            return Err(Status::invalid_argument(
                "no NetworkPolicy to try: the files hold none",
            ));
        }
        let names: BTreeSet<String> = candidates.iter().map(name).collect();
        let combined: Vec<NetworkPolicy> = in_force
            .sources
            .iter()
            .filter(|p| !names.contains(&name(p)))
            .cloned()
            .chain(candidates)
            .collect();
        let with_candidates = policy::compile(&combined, table);
        Ok(Self {
            now: KernelState::of(table, in_force, true),
            then: KernelState::of(table, &with_candidates, true),
            with_candidates,
            candidates: names,
            seen: HashSet::new(),
        })
    }

    /// Decides the connection this flow starts, if it starts one at a point
    /// where the datapath decides (leaving the initiator's pod: egress;
    /// entering the responder's: ingress), and notes it if the candidates
    /// change its verdict.
    pub fn judge(&mut self, flow: &Flow, changes: &mut Changes) {
        let Some(key) = connection_start(flow) else {
            return;
        };
        if !self.seen.insert(key) {
            return;
        }
        let (subject, direction, word) = match key.point {
            point::TC_INGRESS => (key.src, dir::EGRESS, "EGRESS"),
            _ => (key.dst, dir::INGRESS, "INGRESS"),
        };
        changes.decided();
        let (before, after) = (
            policy_allows(&self.now, &key),
            policy_allows(&self.then, &key),
        );
        if before == after {
            return;
        }
        let identity = self.then.endpoint(&subject).map_or(0, |e| e.identity);
        let isolating = self
            .with_candidates
            .denied_by(identity, direction)
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name));
        if before {
            changes.add(WhatIfChange::WhatIfWouldDrop, word, flow, isolating);
        } else {
            let chosen: Vec<String> = isolating.filter(|n| self.candidates.contains(n)).collect();
            changes.add(WhatIfChange::WhatIfWouldAllow, word, flow, chosen);
        }
    }
}

/// The flow key of a connection's first packet as the datapath decided it:
/// a report of a new flow (or of a policy drop) leaving a pod (from-endpoint)
/// or entering one (to-endpoint), not a reply.
fn connection_start(flow: &Flow) -> Option<FlowKey> {
    if flow.r#type != FlowType::L3L4 as i32 || flow.is_reply.is_some_and(|r| r.value) {
        return None;
    }
    let emit = flow.webb_emit_reason;
    if emit != WebbEmitReason::WebbEmitNew as i32 && emit != WebbEmitReason::WebbEmitDrop as i32 {
        return None;
    }
    let point = match TraceObservationPoint::try_from(flow.trace_observation_point) {
        Ok(TraceObservationPoint::FromEndpoint) => point::TC_INGRESS,
        Ok(TraceObservationPoint::ToEndpoint) => point::TC_EGRESS,
        _ => return None,
    };
    let ip = flow.ip.as_ref()?;
    let (src, dst): (IpAddr, IpAddr) = (ip.source.parse().ok()?, ip.destination.parse().ok()?);
    let (sport, dport, proto) = match flow.l4.as_ref()?.protocol.as_ref()? {
        Protocol::Tcp(t) => (t.source_port, t.destination_port, 6),
        Protocol::Udp(u) => (u.source_port, u.destination_port, 17),
        Protocol::Sctp(s) => (s.source_port, s.destination_port, 132),
        // No NetworkPolicy port matches ICMP: only rules without ports do.
        Protocol::IcmPv4(_) => (0, 0, 1),
        Protocol::IcmPv6(_) => (0, 0, 58),
        _ => return None,
    };
    Some(FlowKey {
        src: addr(&src),
        dst: addr(&dst),
        sport: u16::try_from(sport).ok()?,
        dport: u16::try_from(dport).ok()?,
        proto,
        point,
        _pad: [0; 2],
    })
}

fn addr(ip: &IpAddr) -> Addr {
    match ip {
        IpAddr::V4(v4) => node_agent_ebpf::v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}
