//! A simulated cluster in the API double, for benchmarks: pods spread over
//! nodes, each Deployment's ReplicaSet, namespaces, NetworkPolicies, and
//! churn (a replica deleted, then recreated at a new address).

use serde_json::{Value, json};

use crate::kube_api::{KubeApi, pod_object};

#[derive(Debug, Clone, Copy)]
pub struct Cluster {
    pub pods: u32,
    pub nodes: u32,
}

impl Cluster {
    /// Pod `i`'s address in `generation` (each re-creation moves it).
    pub fn ip(&self, i: u32, generation: u32) -> String {
        let n = i + generation * self.pods;
        format!("10.{}.{}.{}", 40 + (n >> 16), (n >> 8) & 255, n & 255)
    }

    /// Pod `i` of `generation`: Deployments of 10 replicas in 20 namespaces.
    pub fn pod(&self, i: u32, generation: u32) -> Value {
        let d = i / 10;
        pod_object(
            &format!("ns-{}", d % 20),
            &format!("app-{d}-{d:x}abc-{generation:x}{i:05}"),
            &[
                ("app", &format!("app-{d}")),
                ("tier", ["web", "api", "db"][(d % 3) as usize]),
                ("pod-template-hash", &format!("{d:x}abc")),
            ],
            &format!("node-{}", i % self.nodes),
            &self.ip(i, generation),
            Some(("ReplicaSet", &format!("app-{d}-{d:x}abc"))),
        )
    }

    /// Everything: 20 namespaces, the nodes, a ReplicaSet per Deployment, 50
    /// NetworkPolicies, the pods.
    pub fn fill(&self, api: &KubeApi) {
        for n in 0..20 {
            api.apply(
                "namespaces",
                json!({"metadata": {"name": format!("ns-{n}"), "labels": {"team": format!("t{}", n % 4)}}}),
            );
        }
        for n in 0..self.nodes {
            api.apply(
                "nodes",
                json!({"metadata": {"name": format!("node-{n}"), "labels": {"zone": format!("z{}", n % 3)}},
                       "status": {"addresses": [{"type": "InternalIP", "address": format!("10.200.{}.{}", n / 250, n % 250 + 1)}]}}),
            );
        }
        for d in 0..self.pods.div_ceil(10) {
            api.apply(
                "replicasets",
                json!({"metadata": {"name": format!("app-{d}-{d:x}abc"), "namespace": format!("ns-{}", d % 20),
                       "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("app-{d}"),
                                            "uid": format!("d{d}"), "controller": true}]}}),
            );
        }
        for p in 0..50 {
            api.apply(
                "networkpolicies",
                json!({"metadata": {"name": format!("p{p}"), "namespace": format!("ns-{}", (p * 10) % 20)},
                       "spec": {"podSelector": {"matchLabels": {"app": format!("app-{}", p * 10)}},
                                "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "web"}}}],
                                             "ports": [{"port": 8080}]}]}}),
            );
        }
        for i in 0..self.pods {
            api.apply("pods", self.pod(i, 0));
        }
    }
}

/// Pod churn: change `c` deletes a replica (even) or recreates it at a new
/// address (odd). Returns +1 for a deletion, -1 for a re-creation.
pub struct Churn {
    cluster: Cluster,
    generation: Vec<u32>,
    c: u32,
}

impl Churn {
    pub fn new(cluster: Cluster) -> Self {
        Self {
            cluster,
            generation: vec![0; cluster.pods as usize],
            c: 0,
        }
    }

    pub fn step(&mut self, api: &KubeApi) -> i64 {
        let c = self.c;
        self.c += 1;
        let i = (c / 2 * 7919) % self.cluster.pods;
        let g = &mut self.generation[i as usize];
        if c.is_multiple_of(2) {
            let p = self.cluster.pod(i, *g);
            let key = format!(
                "{}/{}",
                p["metadata"]["namespace"].as_str().unwrap_or_default(),
                p["metadata"]["name"].as_str().unwrap_or_default()
            );
            api.delete("pods", &key);
            1
        } else {
            *g += 1;
            api.apply("pods", self.cluster.pod(i, *g));
            -1
        }
    }
}
