//! `webb policy what-if`: connections whose verdict candidate
//! NetworkPolicies would change, summed per pair, mergeable across nodes.
//!
//! Each agent decides its own connections (webb-agent's `analysis` module:
//! the policy compiler and the kernel's decision, `policy_allows`, over the
//! policies in force and over them with the candidates) and feeds the
//! changes to a [`Changes`]; webb-relay [`merge`]s the nodes' answers. A
//! connection is decided where the datapath decides it: its egress where it
//! leaves the initiator's pod, its ingress where it enters the responder's,
//! so each decision is counted once in the cluster.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    analysis::{WhatIfChange, WhatIfPair, WhatIfResponse},
    flow::Flow,
    top::{port_name, workload_name},
    wkt::Timestamp,
};

type Key = (i32, String, String, String, String);

/// Sums one node's changed connections per pair.
#[derive(Default)]
pub struct Changes {
    pairs: BTreeMap<Key, (WhatIfPair, BTreeSet<String>)>,
    decided: u64,
}

impl Changes {
    /// A connection start the node decided, changed or not.
    pub fn decided(&mut self) {
        self.decided += 1;
    }

    /// A connection whose verdict changes: `flow` is its first packet's
    /// report, `direction` where it is decided (`INGRESS`, `EGRESS`),
    /// `policies` those that decide (namespace/name).
    pub fn add(
        &mut self,
        change: WhatIfChange,
        direction: &str,
        flow: &Flow,
        policies: impl IntoIterator<Item = String>,
    ) {
        let key = (
            change as i32,
            workload_name(flow, true),
            workload_name(flow, false),
            port_name(flow, false),
            direction.to_owned(),
        );
        let (pair, names) = self.pairs.entry(key.clone()).or_insert_with(|| {
            (
                WhatIfPair {
                    change: key.0,
                    source: key.1.clone(),
                    destination: key.2.clone(),
                    port: key.3.clone(),
                    direction: key.4.clone(),
                    ..Default::default()
                },
                BTreeSet::new(),
            )
        });
        pair.connections += 1;
        if let Some(t) = flow.time {
            pair.first = Some(pair.first.map_or(t, |f: Timestamp| f.min(t)));
            pair.last = Some(pair.last.map_or(t, |l: Timestamp| l.max(t)));
        }
        names.extend(policies);
    }

    pub fn finish(self) -> WhatIfResponse {
        WhatIfResponse {
            pairs: self
                .pairs
                .into_values()
                .map(|(mut p, names)| {
                    p.policies = names.into_iter().collect();
                    p
                })
                .collect(),
            connections_decided: self.decided,
            ..Default::default()
        }
    }
}

/// The cluster's answer from the nodes': pairs with the same change, ends,
/// port and direction summed, their policies united.
pub fn merge(answers: impl IntoIterator<Item = WhatIfResponse>) -> WhatIfResponse {
    let mut out = WhatIfResponse::default();
    let mut pairs: BTreeMap<Key, WhatIfPair> = BTreeMap::new();
    for a in answers {
        out.connections_decided += a.connections_decided;
        out.flows_gone += a.flows_gone;
        out.nodes.extend(a.nodes);
        out.unavailable_nodes.extend(a.unavailable_nodes);
        for p in a.pairs {
            let key = (
                p.change,
                p.source.clone(),
                p.destination.clone(),
                p.port.clone(),
                p.direction.clone(),
            );
            match pairs.get_mut(&key) {
                Some(q) => {
                    q.connections += p.connections;
                    q.first = match (q.first, p.first) {
                        (Some(x), Some(y)) => Some(x.min(y)),
                        (x, y) => x.or(y),
                    };
                    q.last = q.last.max(p.last);
                    let names: BTreeSet<String> = q.policies.drain(..).chain(p.policies).collect();
                    q.policies = names.into_iter().collect();
                }
                None => {
                    pairs.insert(key, p);
                }
            }
        }
    }
    out.pairs = pairs.into_values().collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Endpoint, Ip, Layer4, Tcp, Workload, layer4::Protocol};

    fn flow(sec: i64, from: &str, to: &str, port: u32) -> Flow {
        let end = |name: &str| {
            Some(Endpoint::from(crate::shared::EndpointData {
                namespace: "shop".into(),
                pod_name: format!("{name}-7d4f9"),
                workloads: vec![Workload {
                    name: name.into(),
                    kind: "Deployment".into(),
                }],
                ..Default::default()
            }))
        };
        Flow {
            time: Some(Timestamp {
                seconds: sec,
                nanos: 0,
            }),
            ip: Some(Ip {
                source: "10.0.0.1".into(),
                destination: "10.0.0.2".into(),
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(Protocol::Tcp(Tcp {
                    source_port: 40000,
                    destination_port: port,
                    flags: None,
                })),
            }),
            source: end(from),
            destination: end(to),
            ..Default::default()
        }
    }

    #[test]
    fn changes_sum_per_pair_and_nodes_merge() {
        let drop = WhatIfChange::WhatIfWouldDrop;
        let mut one = Changes::default();
        for sec in [3, 1] {
            one.decided();
            one.add(
                drop,
                "INGRESS",
                &flow(sec, "frontend", "db", 5432),
                ["shop/db-allow-cart".to_owned()],
            );
        }
        one.decided();
        let mut two = Changes::default();
        two.decided();
        two.add(
            drop,
            "INGRESS",
            &flow(7, "frontend", "db", 5432),
            ["shop/db-strict".to_owned()],
        );
        two.add(
            WhatIfChange::WhatIfWouldAllow,
            "INGRESS",
            &flow(2, "cart", "db", 5432),
            ["shop/db-allow-cart".to_owned()],
        );
        let a = one.finish();
        assert_eq!(a.connections_decided, 3);
        assert_eq!(a.pairs.len(), 1);
        assert_eq!(a.pairs[0].connections, 2);
        assert_eq!(a.pairs[0].first.map(|t| t.seconds), Some(1));
        let m = merge([a, two.finish()]);
        assert_eq!(m.connections_decided, 4);
        assert_eq!(m.pairs.len(), 2, "{m:#?}");
        let d = m
            .pairs
            .iter()
            .find(|p| p.change == drop as i32)
            .expect("the drop pair");
        assert_eq!(
            (d.source.as_str(), d.destination.as_str(), d.port.as_str()),
            ("shop/frontend", "shop/db", "5432/TCP")
        );
        assert_eq!(d.connections, 3);
        assert_eq!(
            (d.first.map(|t| t.seconds), d.last.map(|t| t.seconds)),
            (Some(1), Some(7))
        );
        assert_eq!(d.policies, ["shop/db-allow-cart", "shop/db-strict"]);
    }
}
