//! Agent events (`GetAgentEvents`): what the agent learned of the cluster and
//! did about it, as Hubble's agent notifications — endpoints created and
//! deleted, interfaces attached (an endpoint "regenerated"), the IP cache
//! (every pod address the agent names), policies and Service frontends.
//!
//! The reconciler makes them ([`crate::cluster::reconcile`]); they are kept
//! in a ring of their own (the flow ring's churn does not push them out) and
//! fanned out to followers. A follower that falls behind is told how many it
//! missed in the log and counted, never blocks the reconciler.

use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::broadcast;
use webb_proto::{
    flow::{
        AgentEvent, AgentEventType, EndpointRegenNotification, EndpointUpdateNotification,
        IpCacheNotification, PolicyUpdateNotification, ServiceDeleteNotification,
        ServiceUpsertNotification, ServiceUpsertNotificationAddr, TimeNotification,
        agent_event::Notification,
    },
    observer::{GetAgentEventsRequest, GetAgentEventsResponse},
    wkt::Timestamp,
};

/// How many agent events are kept. The first list of a 5,000-pod cluster
/// makes about as many IP cache events; twice that is kept.
pub const CAPACITY: usize = 16_384;

pub struct AgentEvents {
    node_name: String,
    ring: Mutex<Ring>,
    tx: broadcast::Sender<(u64, GetAgentEventsResponse)>,
    /// Events pushed out of the ring before anyone read them is not loss
    /// (a ring forgets); events a follower could not keep up with are.
    pub follower_lag: AtomicU64,
}

#[derive(Default)]
struct Ring {
    next_seq: u64,
    events: VecDeque<(u64, GetAgentEventsResponse)>,
}

impl AgentEvents {
    pub fn new(node_name: &str) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            node_name: node_name.to_owned(),
            ring: Mutex::default(),
            tx,
            follower_lag: AtomicU64::new(0),
        }
    }

    /// Stamps the events with now and this node, keeps and sends them.
    pub fn publish(&self, events: impl IntoIterator<Item = AgentEvent>) {
        let time = Timestamp::from(std::time::SystemTime::now());
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        for e in events {
            let seq = ring.next_seq;
            ring.next_seq += 1;
            let r = GetAgentEventsResponse {
                agent_event: Some(e),
                node_name: self.node_name.clone(),
                time: Some(time),
            };
            if ring.events.len() == CAPACITY {
                ring.events.pop_front();
            }
            ring.events.push_back((seq, r.clone()));
            let _ = self.tx.send((seq, r));
        }
    }

    pub fn len(&self) -> usize {
        self.ring.lock().map(|r| r.events.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What a request selects from the ring (since/until, then the first or
    /// last `number`; 0 means all), and the sequence number the live part
    /// continues after. Subscribe first, then select, so nothing falls in
    /// between.
    pub fn select(&self, req: &GetAgentEventsRequest) -> (Vec<GetAgentEventsResponse>, u64) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let in_window = |r: &GetAgentEventsResponse| {
            let t = r.time.unwrap_or_default();
            req.since.is_none_or(|s| t >= s) && req.until.is_none_or(|u| t <= u)
        };
        let mut out: Vec<GetAgentEventsResponse> = ring
            .events
            .iter()
            .map(|(_, r)| r)
            .filter(|r| in_window(r))
            .cloned()
            .collect();
        let n = req.number as usize;
        if n != 0 && out.len() > n {
            if req.first {
                out.truncate(n);
            } else {
                out.drain(..out.len() - n);
            }
        }
        (out, ring.next_seq)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<(u64, GetAgentEventsResponse)> {
        self.tx.subscribe()
    }

    pub fn count_lag(&self, n: u64) {
        self.follower_lag.fetch_add(n, Ordering::Relaxed);
    }
}

pub fn agent_started(at: Timestamp) -> AgentEvent {
    AgentEvent {
        r#type: AgentEventType::AgentStarted as i32,
        notification: Some(Notification::AgentStart(TimeNotification {
            time: Some(at),
        })),
    }
}

/// ENDPOINT_CREATED / ENDPOINT_DELETED.
pub fn endpoint_update(
    created: bool,
    id: u32,
    labels: &[String],
    namespace: &str,
    pod: &str,
) -> AgentEvent {
    let t = if created {
        AgentEventType::EndpointCreated
    } else {
        AgentEventType::EndpointDeleted
    };
    AgentEvent {
        r#type: t as i32,
        notification: Some(Notification::EndpointUpdate(EndpointUpdateNotification {
            id: id.into(),
            labels: labels.to_vec(),
            error: String::new(),
            pod_name: pod.to_owned(),
            namespace: namespace.to_owned(),
        })),
    }
}

/// ENDPOINT_REGENERATE_SUCCESS / _FAILURE: an endpoint's datapath programs
/// attached (its interface found), or why they could not be.
pub fn endpoint_regenerated(id: u32, labels: &[String], error: Option<String>) -> AgentEvent {
    let t = if error.is_some() {
        AgentEventType::EndpointRegenerateFailure
    } else {
        AgentEventType::EndpointRegenerateSuccess
    };
    AgentEvent {
        r#type: t as i32,
        notification: Some(Notification::EndpointRegenerate(
            EndpointRegenNotification {
                id: id.into(),
                labels: labels.to_vec(),
                error: error.unwrap_or_default(),
            },
        )),
    }
}

/// IPCACHE_UPSERTED (with the identity it had, if it changed) or
/// IPCACHE_DELETED.
pub fn ipcache(
    upsert: bool,
    ip: &std::net::IpAddr,
    identity: u32,
    old_identity: Option<u32>,
    namespace: &str,
    pod: &str,
) -> AgentEvent {
    let t = if upsert {
        AgentEventType::IpcacheUpserted
    } else {
        AgentEventType::IpcacheDeleted
    };
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    AgentEvent {
        r#type: t as i32,
        notification: Some(Notification::IpcacheUpdate(IpCacheNotification {
            cidr: format!("{ip}/{bits}"),
            identity,
            old_identity: old_identity.map(|value| webb_proto::wkt::UInt32Value { value }),
            namespace: namespace.to_owned(),
            pod_name: pod.to_owned(),
            ..Default::default()
        })),
    }
}

/// POLICY_UPDATED / POLICY_DELETED for one NetworkPolicy, labelled as Cilium
/// labels a policy derived from a Kubernetes NetworkPolicy.
pub fn policy(updated: bool, namespace: &str, name: &str, revision: u64, rules: i64) -> AgentEvent {
    let t = if updated {
        AgentEventType::PolicyUpdated
    } else {
        AgentEventType::PolicyDeleted
    };
    AgentEvent {
        r#type: t as i32,
        notification: Some(Notification::PolicyUpdate(PolicyUpdateNotification {
            labels: vec![
                "k8s:io.cilium.k8s.policy.derived-from=NetworkPolicy".to_owned(),
                format!("k8s:io.cilium.k8s.policy.name={name}"),
                format!("k8s:io.cilium.k8s.policy.namespace={namespace}"),
            ],
            revision,
            rule_count: rules,
        })),
    }
}

pub fn service_upsert(
    id: u32,
    ip: &std::net::IpAddr,
    port: u16,
    namespace: &str,
    name: &str,
) -> AgentEvent {
    AgentEvent {
        r#type: AgentEventType::ServiceUpserted as i32,
        notification: Some(Notification::ServiceUpsert(ServiceUpsertNotification {
            id,
            frontend_address: Some(ServiceUpsertNotificationAddr {
                ip: ip.to_string(),
                port: port.into(),
            }),
            r#type: "ClusterIP".to_owned(),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            ..Default::default()
        })),
    }
}

pub fn service_delete(id: u32) -> AgentEvent {
    AgentEvent {
        r#type: AgentEventType::ServiceDeleted as i32,
        notification: Some(Notification::ServiceDelete(ServiceDeleteNotification {
            id,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_takes_first_or_last_and_the_window() {
        let ev = AgentEvents::new("n1");
        ev.publish((0..10).map(|i| endpoint_update(true, i, &[], "ns", &format!("p{i}"))));
        let pod = |r: &GetAgentEventsResponse| match &r.agent_event.as_ref().unwrap().notification {
            Some(Notification::EndpointUpdate(u)) => u.pod_name.clone(),
            _ => unreachable!(),
        };
        let req = |number, first| GetAgentEventsRequest {
            number,
            first,
            ..Default::default()
        };
        let (all, next) = ev.select(&req(0, false));
        assert_eq!((all.len(), next), (10, 10));
        assert_eq!(all[0].node_name, "n1");
        let last: Vec<_> = ev.select(&req(3, false)).0.iter().map(pod).collect();
        assert_eq!(last, ["p7", "p8", "p9"]);
        let first: Vec<_> = ev.select(&req(2, true)).0.iter().map(pod).collect();
        assert_eq!(first, ["p0", "p1"]);
        let future = GetAgentEventsRequest {
            since: Some(Timestamp {
                seconds: i64::MAX / 2,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert!(ev.select(&future).0.is_empty());
    }

    #[test]
    fn the_ring_forgets_the_oldest() {
        let ev = AgentEvents::new("n1");
        ev.publish((0..CAPACITY as u32 + 5).map(service_delete));
        let (all, next) = ev.select(&GetAgentEventsRequest::default());
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(next, CAPACITY as u64 + 5);
        match &all[0].agent_event.as_ref().unwrap().notification {
            Some(Notification::ServiceDelete(d)) => assert_eq!(d.id, 5),
            _ => unreachable!(),
        }
    }
}
