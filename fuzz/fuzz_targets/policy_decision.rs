//! The kernel's policy decision (`node_agent_ebpf::policy_allows`, the code
//! the TC programs run) on arbitrary maps and flows, read through two
//! implementations of its maps: plain lists shaped like the kernel's (a
//! hash map by address, an LPM trie of IPv4-mapped prefixes) and the
//! agent's `KernelState` (addresses as `IpAddr`, `IpNet` prefixes). They
//! must agree, and the decision must keep its rules: only TC points
//! decide, an endpoint no policy isolates allows everything, a rule never
//! takes an allowance away, and a wildcard rule allows every peer.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use node_agent_ebpf::{
    EndpointInfo, FlowKey, PolicyKey, PolicyMaps, dir, endpoint_flags, identity, point,
    policy_allows, testing::ListMaps, v4_mapped,
};
use webb_agent::{cluster::KernelState, policy::PolicyKeyOrd};

/// A small address space, so that flows meet endpoints and prefixes.
fn ip(b: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, b >> 4, b & 0x0f)
}

fn both_allow(l: &ListMaps, k: &KernelState, key: &FlowKey) -> bool {
    let a = policy_allows(l, key);
    assert_eq!(a, policy_allows(k, key), "lists and KernelState disagree on {key:?}");
    a
}

fuzz_target!(|data: &[u8]| {
    let mut lists = ListMaps::default();
    let mut state = KernelState::default();
    let mut bytes = data.chunks_exact(4);
    let mut flows = Vec::new();
    for c in bytes.by_ref() {
        match c[0] % 4 {
            0 => {
                let a = ip(c[1]);
                let info = EndpointInfo {
                    identity: 100 + u32::from(c[2] % 8),
                    flags: u32::from(c[3]) & (endpoint_flags::INGRESS_ISOLATED | endpoint_flags::EGRESS_ISOLATED),
                };
                lists.endpoints.retain(|(x, _)| *x != v4_mapped(a.octets()));
                lists.endpoints.push((v4_mapped(a.octets()), info));
                state.endpoints.insert(IpAddr::V4(a), (info.identity, info.flags));
            }
            1 => {
                let len = c[2] % 33;
                let net = ipnet::Ipv4Net::new(ip(c[1]), len).expect("prefix").trunc();
                let id = 200 + u32::from(c[3] % 4);
                lists.cidrs.retain(|(a, l, _)| !(*a == v4_mapped(net.network().octets()) && *l == u32::from(len) + 96));
                lists.cidrs.push((v4_mapped(net.network().octets()), u32::from(len) + 96, id));
                state.cidrs.insert(ipnet::IpNet::V4(net), id);
            }
            2 => {
                let peers = [identity::ANY, identity::WORLD, 100, 101, 102, 200, 201];
                let key = PolicyKey {
                    subject: 100 + u32::from(c[1] % 8),
                    peer: peers[usize::from(c[2]) % peers.len()],
                    port: [0, 53, 80, 443][usize::from(c[3] % 4)],
                    proto: [0, 6, 17][usize::from(c[3] >> 2) % 3],
                    dir: if c[3] & 0x80 == 0 { dir::INGRESS } else { dir::EGRESS },
                };
                lists.rules.push(key);
                state.policy.insert(PolicyKeyOrd::from(key));
            }
            _ => flows.push(FlowKey {
                src: v4_mapped(ip(c[1]).octets()),
                dst: v4_mapped(ip(c[2]).octets()),
                sport: 40000,
                dport: [53, 80, 443, 8080][usize::from(c[3] % 4)],
                proto: [6, 17][usize::from(c[3] >> 2) % 2],
                point: [point::TC_INGRESS, point::TC_EGRESS, point::CGROUP_EGRESS][usize::from(c[3] >> 3) % 3],
                _pad: [0; 2],
            }),
        }
    }
    for key in &flows {
        let allowed = both_allow(&lists, &state, key);
        let (subject, direction) = match key.point {
            point::TC_INGRESS => (&key.src, dir::EGRESS),
            point::TC_EGRESS => (&key.dst, dir::INGRESS),
            _ => {
                assert!(allowed, "only TC points decide");
                continue;
            }
        };
        let isolated_bit = if direction == dir::INGRESS {
            endpoint_flags::INGRESS_ISOLATED
        } else {
            endpoint_flags::EGRESS_ISOLATED
        };
        let Some(subject) = lists.endpoint(subject) else {
            assert!(allowed, "an address that is no endpoint is not isolated");
            continue;
        };
        if subject.flags & isolated_bit == 0 {
            assert!(allowed, "not isolated in that direction");
            continue;
        }
        // A wildcard rule for the subject allows every peer and port; a
        // rule added never takes an allowance away.
        let wildcard = PolicyKey {
            subject: subject.identity,
            peer: identity::ANY,
            port: 0,
            proto: 0,
            dir: direction,
        };
        lists.rules.push(wildcard);
        state.policy.insert(PolicyKeyOrd::from(wildcard));
        assert!(both_allow(&lists, &state, key), "the wildcard allows {key:?}");
        lists.rules.pop();
        if !lists.rules.contains(&wildcard) {
            state.policy.remove(&PolicyKeyOrd::from(wildcard));
        }
        assert_eq!(both_allow(&lists, &state, key), allowed);
    }
});
