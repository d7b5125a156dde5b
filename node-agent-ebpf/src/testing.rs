//! Policy maps as plain lists, shaped like the kernel's (a hash map by
//! address, an LPM trie of IPv6-form prefixes, a set of rules), for the host
//! tests and fuzzers of the shared policy decision. Built only for tests and
//! with the `testing` feature.

use std::vec::Vec;

use crate::{Addr, EndpointInfo, PolicyKey, PolicyMaps, PolicyRules};

#[derive(Debug, Default, Clone)]
pub struct ListMaps {
    /// Address -> entry; an address listed twice: the first.
    pub endpoints: Vec<(Addr, EndpointInfo)>,
    /// (network, prefix length in bits of the 128-bit form, identity).
    pub cidrs: Vec<(Addr, u32, u32)>,
    pub rules: Vec<PolicyKey>,
}

impl PolicyRules for ListMaps {
    fn has_rule(&self, key: &PolicyKey) -> bool {
        self.rules.contains(key)
    }
}

impl PolicyMaps for ListMaps {
    fn endpoint(&self, addr: &Addr) -> Option<EndpointInfo> {
        self.endpoints
            .iter()
            .find(|(a, _)| a == addr)
            .map(|(_, e)| *e)
    }

    fn cidr_identity(&self, addr: &Addr) -> Option<u32> {
        let bits = u128::from_be_bytes(*addr);
        self.cidrs
            .iter()
            .filter(|(net, len, _)| {
                let mask = if *len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                bits & mask == u128::from_be_bytes(*net) & mask
            })
            .max_by_key(|(_, len, _)| *len)
            .map(|(_, _, id)| *id)
    }
}
