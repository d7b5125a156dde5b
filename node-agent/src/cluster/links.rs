//! The node's links as a source: which host-side interface each local pod
//! address sits behind, so pod interfaces are discovered, never named.
//!
//! Two shapes cover the common CNIs:
//! - routed veths (Calico, kindnet/ptp, Cilium-style): a host route to the
//!   pod's address (`/32` or `/128`) through the veth, `10.244.0.5 dev
//!   vethabc scope host`;
//! - bridged veths (the bridge plugin, flannel): the veths are ports of a
//!   bridge such as `cni0`; the bridge's neighbour table gives the pod's
//!   MAC and the bridge's forwarding database the port that MAC is behind.
//!   The neighbour entry appears once the host has exchanged a packet with
//!   the pod (the kubelet's probes, or its first packet off the node).
//!
//! The map is read from rtnetlink dumps and read again whenever a route,
//! neighbour or link changes (a multicast subscription, not polling), and
//! sent whole to the reconciler when it differs.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::Duration,
};

use futures::{StreamExt as _, TryStreamExt as _};
use netlink_packet_route::{
    AddressFamily,
    link::{InfoKind, LinkAttribute, LinkInfo},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags},
    route::{RouteAddress, RouteAttribute},
};
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder};
use tokio::sync::mpsc;

use super::Update;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub veth: bool,
    pub bridge: bool,
}

/// What the dumps say, before it is turned into the address → interface map
/// (a pure function, tested without netlink).
#[derive(Debug, Default)]
pub struct Tables {
    pub links: HashMap<u32, Link>,
    /// Host routes: address → output interface index.
    pub host_routes: Vec<(IpAddr, u32)>,
    /// Neighbours: (address, interface index, MAC).
    pub neighbours: Vec<(IpAddr, u32, [u8; 6])>,
    /// Bridge forwarding entries: (MAC, port interface index, bridge index).
    pub fdb: Vec<([u8; 6], u32, Option<u32>)>,
}

impl Tables {
    /// Each address that a veth leads to, by the routed or the bridged shape.
    pub fn pod_interfaces(&self) -> BTreeMap<IpAddr, String> {
        let mut out = BTreeMap::new();
        let veth = |i: &u32| self.links.get(i).filter(|l| l.veth);
        for (ip, oif) in &self.host_routes {
            if let Some(l) = veth(oif) {
                out.insert(*ip, l.name.clone());
            }
        }
        let port_of: HashMap<(&[u8; 6], Option<u32>), u32> = self
            .fdb
            .iter()
            .map(|(mac, port, bridge)| ((mac, *bridge), *port))
            .collect();
        for (ip, ifindex, mac) in &self.neighbours {
            if out.contains_key(ip) || !self.links.get(ifindex).is_some_and(|l| l.bridge) {
                continue;
            }
            let port = port_of
                .get(&(mac, Some(*ifindex)))
                .or_else(|| port_of.get(&(mac, None)));
            if let Some(l) = port.and_then(&veth) {
                out.insert(*ip, l.name.clone());
            }
        }
        out
    }
}

async fn read_tables(handle: &Handle) -> Result<Tables, rtnetlink::Error> {
    let mut t = Tables::default();
    let mut links = handle.link().get().execute();
    while let Some(l) = links.try_next().await? {
        let mut name = None;
        let (mut veth, mut bridge) = (false, false);
        for a in &l.attributes {
            match a {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            veth |= *k == InfoKind::Veth;
                            bridge |= *k == InfoKind::Bridge;
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(name) = name {
            t.links.insert(l.header.index, Link { name, veth, bridge });
        }
    }
    for family in [
        RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ] {
        let mut routes = handle.route().get(family).execute();
        while let Some(r) = routes.try_next().await? {
            let full = match r.header.address_family {
                AddressFamily::Inet => 32,
                AddressFamily::Inet6 => 128,
                _ => continue,
            };
            if r.header.destination_prefix_length != full {
                continue;
            }
            let mut dst = None;
            let mut oif = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(v4)) => {
                        dst = Some(IpAddr::V4(*v4))
                    }
                    RouteAttribute::Destination(RouteAddress::Inet6(v6)) => {
                        dst = Some(IpAddr::V6(*v6))
                    }
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if let (Some(d), Some(o)) = (dst, oif) {
                t.host_routes.push((d, o));
            }
        }
    }
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut neigh = handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute();
        while let Some(n) = neigh.try_next().await? {
            let mut ip = None;
            let mut mac = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        ip = Some(IpAddr::V4(*v4))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        ip = Some(IpAddr::V6(*v6))
                    }
                    NeighbourAttribute::LinkLayerAddress(m) if m.len() == 6 => {
                        mac = <[u8; 6]>::try_from(m.as_slice()).ok()
                    }
                    _ => {}
                }
            }
            if let (Some(ip), Some(mac)) = (ip, mac) {
                t.neighbours.push((ip, n.header.ifindex, mac));
            }
        }
    }
    let mut fdb = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute();
    while let Some(n) = fdb.try_next().await? {
        if n.header.flags.contains(NeighbourFlags::Own) {
            continue;
        }
        let mut mac = None;
        let mut bridge = None;
        for a in &n.attributes {
            match a {
                NeighbourAttribute::LinkLayerAddress(m) if m.len() == 6 => {
                    mac = <[u8; 6]>::try_from(m.as_slice()).ok()
                }
                NeighbourAttribute::Controller(b) => bridge = Some(*b),
                _ => {}
            }
        }
        if let Some(mac) = mac {
            t.fdb.push((mac, n.header.ifindex, bridge));
        }
    }
    Ok(t)
}

/// Reads the tables now and after every change, sending the map when it
/// differs. Changes come in bursts (a pod's veth, route and neighbour): a
/// burst is read once, 50 ms after it starts.
pub async fn run(tx: mpsc::Sender<Update>) {
    let (conn, handle, mut events) = match rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
        MulticastGroup::Neigh,
    ]) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                "cannot open rtnetlink: pod interfaces will not be discovered ({e}); name them with --interface or the endpoints file"
            );
            return;
        }
    };
    tokio::spawn(conn);
    let mut last: Option<BTreeMap<IpAddr, String>> = None;
    loop {
        match read_tables(&handle).await {
            Ok(t) => {
                let now = t.pod_interfaces();
                if last.as_ref() != Some(&now) {
                    tracing::debug!(pods = now.len(), "pod interfaces discovered");
                    if tx.send(Update::Interfaces(now.clone())).await.is_err() {
                        return;
                    }
                    last = Some(now);
                }
            }
            Err(e) => tracing::warn!("reading links, routes and neighbours: {e}"),
        }
        // Wait for a change, then let the rest of its burst arrive.
        if events.next().await.is_none() {
            tracing::error!(
                "the rtnetlink subscription ended: pod interfaces are no longer discovered"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, events.next()).await {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, veth: bool, bridge: bool) -> Link {
        Link {
            name: name.into(),
            veth,
            bridge,
        }
    }

    #[test]
    fn routed_and_bridged_veths_are_found_and_nothing_else() {
        let mut t = Tables::default();
        t.links.insert(1, link("lo", false, false));
        t.links.insert(2, link("eth0", false, false));
        t.links.insert(3, link("cali1", true, false));
        t.links.insert(4, link("cni0", false, true));
        t.links.insert(5, link("veth-b1", true, false));
        t.links.insert(6, link("veth-b2", true, false));
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        // Routed: a host route through a veth; a host route through eth0 is
        // not a pod.
        t.host_routes.push((ip("10.1.0.5"), 3));
        t.host_routes.push((ip("10.9.9.9"), 2));
        // Bridged: neighbours on cni0, ports from the FDB.
        let (m1, m2, m3) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]);
        t.neighbours.push((ip("10.2.0.11"), 4, m1));
        t.neighbours.push((ip("fd00::11"), 4, m1));
        t.neighbours.push((ip("10.2.0.12"), 4, m2));
        // A neighbour on eth0 is the underlay, not a pod.
        t.neighbours.push((ip("192.168.1.1"), 2, m3));
        // A MAC with no port yet gives nothing.
        t.neighbours.push((ip("10.2.0.13"), 4, m3));
        t.fdb.push((m1, 5, Some(4)));
        t.fdb.push((m2, 6, Some(4)));
        t.fdb.push((m3, 2, None));
        let got = t.pod_interfaces();
        let want: BTreeMap<IpAddr, String> = [
            ("10.1.0.5", "cali1"),
            ("10.2.0.11", "veth-b1"),
            ("fd00::11", "veth-b1"),
            ("10.2.0.12", "veth-b2"),
        ]
        .into_iter()
        .map(|(a, n)| (ip(a), n.to_owned()))
        .collect();
        assert_eq!(got, want);
    }
}
