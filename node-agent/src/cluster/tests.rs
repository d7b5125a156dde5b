//! The reconciler without a kernel: a recording [`Kernel`] stands in for the
//! maps and attachments.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use super::*;
use crate::{endpoints::Peer, kernel::DropReasons};

#[derive(Default)]
struct Recorder {
    diffs: Vec<KernelDiff>,
    watched: BTreeSet<String>,
    fail_next: bool,
}

impl Kernel for Recorder {
    fn apply(&mut self, diff: &KernelDiff) -> anyhow::Result<()> {
        if std::mem::take(&mut self.fail_next) {
            anyhow::bail!("map full");
        }
        self.diffs.push(diff.clone());
        Ok(())
    }

    fn watch(&mut self, interfaces: &BTreeSet<String>) -> Vec<String> {
        let new: Vec<String> = interfaces.difference(&self.watched).cloned().collect();
        self.watched = interfaces.clone();
        new
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pod(ns: &str, name: &str, app: &str, addr: &str, node: &str) -> Pod {
    Pod {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
        ips: vec![ip(addr)],
        node: Some(node.into()),
        created: 100,
        ..Pod::default()
    }
}

fn reconciler() -> Reconciler {
    Reconciler::new("node-1", Arc::new(DropReasons::default()), true)
}

fn pods(r: &mut Reconciler, change: Change<Pod>) {
    r.apply(Update::Pods(Source::Kube, change));
}

fn name_of(r: &Reconciler, addr: &str) -> String {
    match r.table().classify(&ip(addr)) {
        Peer::Endpoint(e) => format!("{}/{}", e.namespace, e.pod),
        Peer::Host => "host".into(),
        Peer::RemoteNode => "remote-node".into(),
        Peer::World => "world".into(),
    }
}

#[test]
fn identities_are_the_same_whatever_order_pods_arrive_in() {
    let all: Vec<Pod> = (0..500)
        .map(|i| {
            pod(
                "shop",
                &format!("p{i}"),
                &format!("app{}", i % 97),
                &format!("10.0.{}.{}", i / 250, i % 250 + 1),
                "node-1",
            )
        })
        .collect();
    let mut a = reconciler();
    pods(&mut a, Change::Replace(all.clone()));
    a.reconcile(&mut Recorder::default());
    // The other node learns them one by one, backwards.
    let mut b = Reconciler::new("node-2", Arc::new(DropReasons::default()), true);
    let mut k = Recorder::default();
    for p in all.iter().rev() {
        pods(&mut b, Change::Upsert(p.clone()));
        b.reconcile(&mut k);
    }
    for p in &all {
        let ia = a.table().by_ip(&p.ips[0]).unwrap().identity;
        let ib = b.table().by_ip(&p.ips[0]).unwrap().identity;
        assert_eq!(ia, ib, "{}", p.name);
    }
}

#[test]
fn one_pod_change_is_one_kernel_change_and_other_endpoints_are_kept() {
    let mut r = reconciler();
    let mut k = Recorder::default();
    let all: Vec<Pod> = (0..200)
        .map(|i| {
            pod(
                "shop",
                &format!("p{i}"),
                "web",
                &format!("10.1.0.{}", i + 1),
                "node-1",
            )
        })
        .collect();
    pods(&mut r, Change::Replace(all.clone()));
    r.reconcile(&mut k);
    assert_eq!(k.diffs.last().unwrap().endpoints_set.len(), 200);
    let before = r.table().by_ip(&ip("10.1.0.2")).unwrap().clone();

    // p0 moves to a new address.
    let mut moved = all[0].clone();
    moved.ips = vec![ip("10.1.1.1")];
    pods(&mut r, Change::Upsert(moved));
    r.reconcile(&mut k);
    let d = k.diffs.last().unwrap();
    assert_eq!(d.endpoints_removed, vec![ip("10.1.0.1")]);
    assert_eq!(d.endpoints_set.len(), 1);
    assert_eq!(d.endpoints_set[0].0, ip("10.1.1.1"));
    assert!(d.policy_added.is_empty() && d.policy_removed.is_empty());
    assert!(!d.forget_denied);
    // The unchanged pod's endpoint is the same object: flows in the ring
    // keep sharing it.
    assert!(Arc::ptr_eq(
        &before,
        r.table().by_ip(&ip("10.1.0.2")).unwrap()
    ));
    // The same labels: no new identity, so policy is not compiled again.
    let compiles = r.stats.policy_compiles;
    pods(&mut r, Change::Delete("shop/p5".into()));
    r.reconcile(&mut k);
    assert_eq!(r.stats.policy_compiles, compiles);
    assert_eq!(name_of(&r, "10.1.0.6"), "world");

    // Nothing new: nothing asked of the kernel.
    let n = k.diffs.len();
    pods(&mut r, Change::Upsert(all[1].clone()));
    r.reconcile(&mut k);
    assert_eq!(k.diffs.len(), n);
}

#[test]
fn a_reused_address_belongs_to_the_newer_pod() {
    let mut r = reconciler();
    let mut k = Recorder::default();
    pods(
        &mut r,
        Change::Upsert(pod("a", "old", "x", "10.2.0.9", "node-1")),
    );
    r.reconcile(&mut k);
    assert_eq!(name_of(&r, "10.2.0.9"), "a/old");
    // The new pod's creation arrives before the old one's deletion.
    let mut new = pod("b", "new", "y", "10.2.0.9", "node-1");
    new.created = 200;
    pods(&mut r, Change::Upsert(new));
    r.reconcile(&mut k);
    assert_eq!(name_of(&r, "10.2.0.9"), "b/new");
    assert!(
        r.table().endpoints.iter().all(|e| e.pod != "old"),
        "the old pod owns no address any more"
    );
    let new_identity = r.table().by_ip(&ip("10.2.0.9")).unwrap().identity;
    assert_eq!(
        k.diffs.last().unwrap().endpoints_set[0].1,
        new_identity,
        "the kernel holds the new owner's identity"
    );
    pods(&mut r, Change::Delete("a/old".into()));
    r.reconcile(&mut k);
    assert_eq!(name_of(&r, "10.2.0.9"), "b/new");
    // A finished pod has no addresses (the API source drops them).
    pods(&mut r, Change::Delete("b/new".into()));
    r.reconcile(&mut k);
    assert_eq!(name_of(&r, "10.2.0.9"), "world");
    assert_eq!(
        k.diffs.last().unwrap().endpoints_removed,
        vec![ip("10.2.0.9")]
    );
}

#[test]
fn local_pods_remote_pods_and_nodes() {
    let mut r = reconciler();
    let mut k = Recorder::default();
    pods(
        &mut r,
        Change::Replace(vec![
            pod("shop", "here", "a", "10.3.0.2", "node-1"),
            pod("shop", "there", "b", "10.3.1.2", "node-2"),
        ]),
    );
    r.apply(Update::Nodes(
        Source::Kube,
        Change::Replace(vec![
            Node {
                name: "node-1".into(),
                addresses: vec![ip("192.168.0.1")],
                labels: BTreeMap::from([
                    ("topology.kubernetes.io/zone".to_owned(), "a".to_owned()),
                    ("kubernetes.io/os".to_owned(), "linux".to_owned()),
                ]),
            },
            Node {
                name: "node-2".into(),
                addresses: vec![ip("192.168.0.2")],
                ..Node::default()
            },
        ]),
    ));
    r.apply(Update::Interfaces(BTreeMap::from([
        (ip("10.3.0.2"), "veth-here".to_owned()),
        // Another node's pod cannot be behind our veth: ignored.
        (ip("10.3.1.2"), "veth-stale".to_owned()),
    ])));
    r.reconcile(&mut k);
    assert_eq!(name_of(&r, "192.168.0.1"), "host");
    assert_eq!(name_of(&r, "192.168.0.2"), "remote-node");
    assert_eq!(
        r.table().node_labels,
        ["kubernetes.io/os=linux", "topology.kubernetes.io/zone=a"],
        "this node's labels, as flows carry them"
    );
    let here = r.table().by_ip(&ip("10.3.0.2")).unwrap();
    let there = r.table().by_ip(&ip("10.3.1.2")).unwrap();
    assert!(here.local && !there.local);
    assert_eq!(here.interface.as_deref(), Some("veth-here"));
    assert_eq!(there.interface, None);
    assert_eq!(k.watched, BTreeSet::from(["veth-here".to_owned()]));
    let flags = |a: &str| {
        k.diffs
            .iter()
            .flat_map(|d| &d.endpoints_set)
            .rev()
            .find(|(i, _, _)| *i == ip(a))
            .unwrap()
            .2
    };
    use node_agent_ebpf::endpoint_flags::{AT_TC, LOCAL};
    assert_eq!(flags("10.3.0.2") & (LOCAL | AT_TC), LOCAL | AT_TC);
    assert_eq!(flags("10.3.1.2") & LOCAL, 0);
    // The pod goes: its interface is no longer watched.
    pods(&mut r, Change::Delete("shop/here".into()));
    r.reconcile(&mut k);
    assert!(k.watched.is_empty());
}

#[test]
fn workloads_follow_the_owner_chain() {
    let mut r = reconciler();
    let mut k = Recorder::default();
    let mut p = pod("shop", "web-7d9c-abcde", "web", "10.4.0.2", "node-1");
    p.owner = Some(("ReplicaSet".into(), "web-7d9c".into()));
    p.labels.insert("pod-template-hash".into(), "7d9c".into());
    let mut j = pod("shop", "report-123-xyz", "report", "10.4.0.3", "node-1");
    j.owner = Some(("Job".into(), "report-123".into()));
    pods(&mut r, Change::Replace(vec![p, j]));
    r.reconcile(&mut k);
    let workload = |r: &Reconciler, a: &str| {
        let w = &r.table().by_ip(&ip(a)).unwrap().proto.workloads[0];
        format!("{}/{}", w.kind, w.name)
    };
    // Before the ReplicaSet is seen, its Deployment is named from the hash.
    assert_eq!(workload(&r, "10.4.0.2"), "Deployment/web");
    assert_eq!(workload(&r, "10.4.0.3"), "Job/report-123");
    r.apply(Update::Owners(
        Source::Kube,
        Change::Replace(vec![
            Owner {
                namespace: "shop".into(),
                kind: "ReplicaSet".into(),
                name: "web-7d9c".into(),
                controller: Some(("Deployment".into(), "web-frontend".into())),
            },
            Owner {
                namespace: "shop".into(),
                kind: "Job".into(),
                name: "report-123".into(),
                controller: Some(("CronJob".into(), "report".into())),
            },
        ]),
    ));
    r.reconcile(&mut k);
    assert_eq!(workload(&r, "10.4.0.2"), "Deployment/web-frontend");
    assert_eq!(workload(&r, "10.4.0.3"), "CronJob/report");
}

const POLICY: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: cart}}}]
";

#[test]
fn policies_from_any_source_compile_and_reach_the_kernel_once() {
    let mut r = reconciler();
    let mut k = Recorder::default();
    pods(
        &mut r,
        Change::Replace(vec![
            pod("shop", "db", "db", "10.5.0.2", "node-1"),
            pod("shop", "cart", "cart", "10.5.0.3", "node-2"),
        ]),
    );
    r.reconcile(&mut k);
    let policies = crate::policy::parse(POLICY).unwrap();
    r.apply(Update::Policies(
        Source::Kube,
        Change::Replace(policies.clone()),
    ));
    r.reconcile(&mut k);
    let d = k.diffs.last().unwrap().clone();
    // cart → db, and the node itself (kubelet probes) always.
    assert_eq!(d.policy_added.len(), 2, "{:?}", d.policy_added);
    assert!(d.forget_denied);
    let db = r.table().by_ip(&ip("10.5.0.2")).unwrap().identity;
    let cart = r.table().by_ip(&ip("10.5.0.3")).unwrap().identity;
    assert!(
        r.context()
            .policy
            .allows(db, cart, 5432, 6, node_agent_ebpf::dir::INGRESS)
    );
    // The same list again (a re-list after 410 Gone): nothing to do.
    let n = k.diffs.len();
    let compiles = r.stats.policy_compiles;
    r.apply(Update::Policies(Source::Kube, Change::Replace(policies)));
    r.reconcile(&mut k);
    assert_eq!((k.diffs.len(), r.stats.policy_compiles), (n, compiles));
    // Deleted: the key goes, denied flows are forgotten.
    r.apply(Update::Policies(
        Source::Kube,
        Change::Delete("shop/db".into()),
    ));
    r.reconcile(&mut k);
    let d = k.diffs.last().unwrap();
    assert_eq!(d.policy_removed.len(), 2);
    assert!(d.forget_denied);
}

#[test]
fn a_failed_kernel_update_is_retried() {
    let mut r = reconciler();
    let mut k = Recorder {
        fail_next: true,
        ..Recorder::default()
    };
    pods(
        &mut r,
        Change::Upsert(pod("a", "p", "x", "10.6.0.2", "node-1")),
    );
    assert!(
        r.reconcile(&mut k).is_some(),
        "naming is published regardless"
    );
    assert!(k.diffs.is_empty());
    assert_eq!(r.stats.kernel_failures, 1);
    r.reconcile(&mut k);
    assert_eq!(k.diffs.len(), 1);
    assert!(
        k.diffs[0]
            .endpoints_set
            .iter()
            .any(|(i, _, _)| *i == ip("10.6.0.2"))
    );
}

#[test]
fn a_file_and_the_api_together() {
    let mut r = reconciler();
    let mut k = Recorder::default();
    let file = crate::endpoints::EndpointsFile::parse(
        "host_ips: [10.9.0.1]\nendpoints:\n  - {namespace: lab, pod: a, ips: [10.9.0.2], interface: lxc-a}\n",
    )
    .unwrap();
    for u in file::updates_of(file) {
        r.apply(u);
    }
    pods(
        &mut r,
        Change::Upsert(pod("shop", "b", "b", "10.9.0.3", "node-1")),
    );
    r.reconcile(&mut k);
    assert_eq!(name_of(&r, "10.9.0.1"), "host");
    assert_eq!(name_of(&r, "10.9.0.2"), "lab/a");
    assert_eq!(name_of(&r, "10.9.0.3"), "shop/b");
    assert!(k.watched.contains("lxc-a"));
}

/// A reconciler that learns `r`'s final state in one go.
fn rebuilt_from(r: &Reconciler) -> Reconciler {
    let mut fresh = reconciler();
    fresh.apply(Update::Pods(
        Source::Kube,
        Change::Replace(
            r.state
                .pods
                .merged()
                .into_values()
                .map(|p| (**p).clone())
                .collect(),
        ),
    ));
    fresh.apply(Update::Owners(
        Source::Kube,
        Change::Replace(
            r.state
                .owners
                .merged()
                .into_values()
                .map(|o| (**o).clone())
                .collect(),
        ),
    ));
    fresh.apply(Update::Interfaces(r.state.interfaces.clone()));
    fresh.reconcile(&mut Recorder::default());
    fresh
}

fn view(r: &Reconciler) -> Vec<String> {
    let mut v: Vec<String> = r
        .table()
        .endpoints
        .iter()
        .map(|e| {
            format!(
                "{}/{} {:?} id={} local={} if={:?} w={:?}",
                e.namespace,
                e.pod,
                e.ips,
                e.identity,
                e.local,
                e.interface,
                e.proto.workloads.first().map(|w| (&w.kind, &w.name))
            )
        })
        .collect();
    // The indexes too: an incremental table must look up as a rebuilt one.
    let t = r.table();
    v.extend(
        t.addresses()
            .map(|(ip, e)| format!("ip {ip} -> {}/{}", e.namespace, e.pod)),
    );
    for e in &t.endpoints {
        if let Some(i) = &e.interface {
            let found = t
                .by_interface(i)
                .map(|x| format!("{}/{}", x.namespace, x.pod));
            v.push(format!("if {i} -> {found:?}"));
        }
    }
    v.sort();
    v
}

/// After every batch of incremental updates, the table and the kernel maps
/// equal what one rebuild from the same state gives.
#[test]
fn incremental_updates_end_where_a_full_rebuild_does() {
    let mut r = reconciler();
    let mut k = Recorder::default();
    // Deterministic pseudo-random changes: new pods, label changes, address
    // reuse, deletions, interfaces, owners.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for step in 0..3000 {
        let i = next(60);
        let name = format!("p{i}");
        match next(20) {
            0..=11 => {
                let mut p = pod(
                    "ns",
                    &name,
                    &format!("app{}", next(7)),
                    &format!("10.8.0.{}", next(40) + 1),
                    if next(3) == 0 { "node-2" } else { "node-1" },
                );
                // Mostly newer than what holds the address, sometimes older.
                p.created = if next(4) == 0 { 0 } else { step };
                p.owner = Some(("ReplicaSet".into(), format!("rs{}", next(5))));
                pods(&mut r, Change::Upsert(p));
            }
            12..=16 => pods(&mut r, Change::Delete(format!("ns/{name}"))),
            17 | 18 => r.apply(Update::Interfaces(
                (0..next(20))
                    .map(|j| (ip(&format!("10.8.0.{}", j + 1)), format!("veth{}", next(4))))
                    .collect(),
            )),
            _ => r.apply(Update::Owners(
                Source::Kube,
                Change::Upsert(Owner {
                    namespace: "ns".into(),
                    kind: "ReplicaSet".into(),
                    name: format!("rs{}", next(5)),
                    controller: Some(("Deployment".into(), format!("d{}", next(3)))),
                }),
            )),
        }
        // Sometimes several updates form one batch.
        if next(3) == 0 {
            r.reconcile(&mut k);
            let fresh = rebuilt_from(&r);
            assert_eq!(view(&r), view(&fresh), "after step {step}");
            assert_eq!(
                r.applied, fresh.applied,
                "the kernel maps, after step {step}"
            );
        }
    }
    assert_eq!(r.kernel_state(), r.applied);
}

#[test]
fn services_name_their_frontends_and_follow_changes() {
    let mut r = reconciler();
    let mut k = Recorder::default();
    pods(
        &mut r,
        Change::Replace(vec![pod("shop", "db-0", "db", "10.3.0.9", "node-1")]),
    );
    let svc = |ips: &[&str], ports: &[(u8, u16)]| Service {
        namespace: "shop".into(),
        name: "db".into(),
        ips: ips.iter().map(|a| ip(a)).collect(),
        ports: ports.to_vec(),
    };
    r.apply(Update::Services(
        Source::Kube,
        Change::Replace(vec![svc(&["10.96.0.20", "fd00::20"], &[(6, 5432)])]),
    ));
    r.reconcile(&mut k);
    let named = |r: &Reconciler, a: &str, port: u16| {
        r.table()
            .service(&ip(a), port)
            .map(|s| format!("{}/{}", s.namespace, s.name))
    };
    assert_eq!(named(&r, "10.96.0.20", 5432).as_deref(), Some("shop/db"));
    assert_eq!(named(&r, "fd00::20", 5432).as_deref(), Some("shop/db"));
    assert_eq!(named(&r, "10.96.0.20", 80), None, "another port");
    assert_eq!(
        named(&r, "10.3.0.9", 5432),
        None,
        "a backend is not a frontend"
    );
    // A port added, then the Service gone; pods are not rebuilt for it.
    let before = r.stats.endpoints_rebuilt;
    r.apply(Update::Services(
        Source::Kube,
        Change::Upsert(svc(&["10.96.0.20"], &[(6, 5432), (6, 80)])),
    ));
    r.reconcile(&mut k);
    assert_eq!(named(&r, "10.96.0.20", 80).as_deref(), Some("shop/db"));
    assert_eq!(named(&r, "fd00::20", 5432), None);
    r.apply(Update::Services(
        Source::Kube,
        Change::Delete("shop/db".into()),
    ));
    r.reconcile(&mut k);
    assert_eq!(named(&r, "10.96.0.20", 5432), None);
    assert_eq!(r.stats.endpoints_rebuilt, before);
    assert!(r.table().by_ip(&ip("10.3.0.9")).is_some());
}

#[test]
fn pod_cgroups_name_local_pods_host_network_ones_too() {
    let mut r = reconciler();
    let mut k = Recorder::default();
    let mut exporter = pod(
        "monitoring",
        "node-exporter-x",
        "exporter",
        "192.168.0.1",
        "node-1",
    );
    exporter.host_network = true;
    let elsewhere = pod("shop", "far", "far", "10.3.1.2", "node-2");
    pods(
        &mut r,
        Change::Replace(vec![
            pod("shop", "web", "web", "10.3.0.2", "node-1"),
            exporter,
            elsewhere,
        ]),
    );
    r.apply(Update::Cgroups(BTreeMap::from([
        (100, "uid-web".to_owned()),
        (101, "uid-web".to_owned()),
        (200, "uid-node-exporter-x".to_owned()),
        // Another node's pod cannot be in our cgroup tree: ignored.
        (300, "uid-far".to_owned()),
        (400, "uid-gone".to_owned()),
    ])));
    r.reconcile(&mut k);
    let t = r.table();
    let name = |id: u64| t.by_cgroup_id.get(&id).map(|e| (e.pod.clone(), e.identity));
    let web = t.by_ip(&ip("10.3.0.2")).unwrap().identity;
    assert_eq!(name(100), Some(("web".into(), web)));
    assert_eq!(name(101), Some(("web".into(), web)));
    assert_eq!(
        name(200),
        Some(("node-exporter-x".into(), node_agent_ebpf::identity::HOST)),
        "a host-network pod is named, with the host's identity"
    );
    assert_eq!(name(300), None);
    assert_eq!(name(400), None);
    // Its address stays the node's: no endpoint claims it.
    assert!(t.by_ip(&ip("192.168.0.1")).is_none());
    // The tree changes: the container is gone.
    r.apply(Update::Cgroups(BTreeMap::from([(
        100,
        "uid-web".to_owned(),
    )])));
    r.reconcile(&mut k);
    assert!(!r.table().by_cgroup_id.contains_key(&200));
}

/// Each agent event as one line: its type and the fields Hubble prints.
fn event_lines(ev: &crate::agent_events::AgentEvents) -> Vec<String> {
    use webb_proto::flow::{AgentEventType, agent_event::Notification as N};
    let (all, _) = ev.select(&Default::default());
    all.iter()
        .map(|r| {
            let e = r.agent_event.as_ref().unwrap();
            let t = AgentEventType::try_from(e.r#type).unwrap().as_str_name();
            let what = match &e.notification {
                Some(N::EndpointUpdate(u)) => format!("{}/{}", u.namespace, u.pod_name),
                Some(N::IpcacheUpdate(i)) => format!(
                    "{} {} {:?} {}/{}",
                    i.cidr,
                    i.identity,
                    i.old_identity.map(|o| o.value),
                    i.namespace,
                    i.pod_name
                ),
                Some(N::PolicyUpdate(p)) => {
                    format!("{} r{} n{}", p.labels[1], p.revision, p.rule_count)
                }
                Some(N::ServiceUpsert(s)) => format!(
                    "{} {}:{} {}/{}",
                    s.id,
                    s.frontend_address.as_ref().unwrap().ip,
                    s.frontend_address.as_ref().unwrap().port,
                    s.namespace,
                    s.name
                ),
                Some(N::ServiceDelete(s)) => s.id.to_string(),
                Some(N::EndpointRegenerate(r)) => r.id.to_string(),
                _ => String::new(),
            };
            format!("{t} {what}")
        })
        .collect()
}

#[test]
fn what_the_reconciler_does_is_told_as_agent_events() {
    let mut r = reconciler();
    let events = Arc::new(crate::agent_events::AgentEvents::new("node-1"));
    r.set_events(events.clone());
    let mut k = Recorder::default();
    pods(
        &mut r,
        Change::Replace(vec![
            pod("shop", "web", "web", "10.3.0.2", "node-1"),
            pod("shop", "far", "far", "10.3.1.2", "node-2"),
        ]),
    );
    r.reconcile(&mut k);
    let lines = event_lines(&events);
    let web = r.table().by_ip(&ip("10.3.0.2")).unwrap().identity;
    let far = r.table().by_ip(&ip("10.3.1.2")).unwrap().identity;
    assert!(
        lines.contains(&"ENDPOINT_CREATED shop/web".to_owned()),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l == "ENDPOINT_CREATED shop/far"),
        "not ours"
    );
    assert!(lines.contains(&format!("IPCACHE_UPSERTED 10.3.0.2/32 {web} None shop/web")));
    assert!(lines.contains(&format!("IPCACHE_UPSERTED 10.3.1.2/32 {far} None shop/far")));
    assert_eq!(lines.len(), 3, "{lines:#?}");

    // The local pod goes and a new one takes its address.
    pods(&mut r, Change::Delete("shop/web".into()));
    let mut newer = pod("shop", "web2", "other", "10.3.0.2", "node-1");
    newer.created = 200;
    pods(&mut r, Change::Upsert(newer));
    r.reconcile(&mut k);
    let lines = event_lines(&events)[3..].to_vec();
    let web2 = r.table().by_ip(&ip("10.3.0.2")).unwrap().identity;
    assert_eq!(
        lines,
        [
            format!("IPCACHE_DELETED 10.3.0.2/32 {web} None shop/web"),
            "ENDPOINT_DELETED shop/web".to_owned(),
            "ENDPOINT_CREATED shop/web2".to_owned(),
            format!("IPCACHE_UPSERTED 10.3.0.2/32 {web2} None shop/web2"),
        ]
    );

    // Policies: added, changed, deleted, each a revision.
    let policy = |name: &str, extra: &str| {
        crate::policy::parse(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: shop}}\n\
             spec:\n  podSelector: {{}}\n  ingress:\n  - {{}}\n{extra}"
        ))
        .unwrap()
        .remove(0)
    };
    r.apply(Update::Policies(
        Source::Kube,
        Change::Replace(vec![policy("a", "")]),
    ));
    r.reconcile(&mut k);
    r.apply(Update::Policies(
        Source::Kube,
        Change::Upsert(policy("a", "  egress:\n  - {}\n")),
    ));
    r.reconcile(&mut k);
    r.apply(Update::Policies(
        Source::Kube,
        Change::Delete("shop/a".into()),
    ));
    r.reconcile(&mut k);
    let lines = event_lines(&events)[7..].to_vec();
    assert_eq!(
        lines,
        [
            "POLICY_UPDATED k8s:io.cilium.k8s.policy.name=a r1 n1",
            "POLICY_UPDATED k8s:io.cilium.k8s.policy.name=a r2 n2",
            "POLICY_DELETED k8s:io.cilium.k8s.policy.name=a r3 n2",
        ]
    );

    // Services: a frontend upserted once, kept its number when renamed,
    // deleted by it.
    let svc = |name: &str| Service {
        namespace: "shop".into(),
        name: name.into(),
        ips: vec![ip("10.96.0.9")],
        ports: vec![(6, 80)],
    };
    r.apply(Update::Services(
        Source::Kube,
        Change::Replace(vec![svc("web")]),
    ));
    r.reconcile(&mut k);
    r.reconcile(&mut k);
    r.apply(Update::Services(
        Source::Kube,
        Change::Replace(vec![svc("www")]),
    ));
    r.reconcile(&mut k);
    r.apply(Update::Services(Source::Kube, Change::Replace(vec![])));
    r.reconcile(&mut k);
    let lines = event_lines(&events)[10..].to_vec();
    assert_eq!(
        lines,
        [
            "SERVICE_UPSERTED 1 10.96.0.9:80 shop/web",
            "SERVICE_UPSERTED 1 10.96.0.9:80 shop/www",
            "SERVICE_DELETED 1",
        ]
    );
}
