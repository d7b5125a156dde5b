//! Numeric identities from label sets, the same on every node.
//!
//! An identity is a hash of the label set (namespace label included), as
//! Cilium's are stable for equal labels. Two label sets whose hashes collide
//! are settled by the label sets alone, never by the order pods arrived in:
//! the sets are taken in sorted order and a later one rehashes with a salt
//! past every number an earlier one holds. Every agent watches every pod of
//! the cluster, so every agent sees the same sets and computes the same
//! numbers.

use std::collections::{BTreeSet, HashMap, HashSet};

/// Identities below this are reserved (host, world, remote-node, ...).
pub const FIRST_IDENTITY: u32 = 256;
const IDENTITY_SPACE: u32 = 1 << 24;

/// FNV-1a: small, stable across Rust versions and platforms (std's hasher is
/// not), which keeps identities stable across restarts and upgrades.
pub fn fnv1a(bytes: &[u8], seed: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5 ^ seed;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn candidate(labels: &[String], salt: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5 ^ salt;
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            h = (h ^ u32::from(b';')).wrapping_mul(0x0100_0193);
        }
        for b in l.as_bytes() {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
    }
    FIRST_IDENTITY + h % (IDENTITY_SPACE - FIRST_IDENTITY)
}

/// The identity of every label set (each a sorted `k8s:key=value` list).
pub fn allocate<'a>(sets: impl IntoIterator<Item = &'a [String]>) -> HashMap<Vec<String>, u32> {
    let sorted: BTreeSet<&[String]> = sets.into_iter().collect();
    let mut taken: HashSet<u32> = HashSet::with_capacity(sorted.len());
    let mut out = HashMap::with_capacity(sorted.len());
    for labels in sorted {
        let id = (0u32..)
            .map(|salt| candidate(labels, salt))
            .find(|id| !taken.contains(id))
            .expect("the identity space is far larger than any label set count");
        taken.insert(id);
        out.insert(labels.to_vec(), id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(labels: &[&str]) -> Vec<String> {
        labels.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn identities_do_not_depend_on_arrival_order() {
        let sets: Vec<Vec<String>> = (0..3000)
            .map(|i| set(&[&format!("k8s:app=a{i}"), "k8s:ns=x"]))
            .collect();
        let forward = allocate(sets.iter().map(Vec::as_slice));
        let backward = allocate(sets.iter().rev().map(Vec::as_slice));
        assert_eq!(forward, backward);
        let distinct: HashSet<u32> = forward.values().copied().collect();
        assert_eq!(distinct.len(), sets.len(), "every set has its own number");
        assert!(forward.values().all(|&id| id >= FIRST_IDENTITY));
    }

    #[test]
    fn a_collision_goes_to_the_later_label_set_whatever_the_order() {
        // Find two label sets whose first candidates collide.
        let mut seen: HashMap<u32, Vec<String>> = HashMap::new();
        let (a, b) = (0..)
            .find_map(|i| {
                let s = set(&[&format!("k8s:app=c{i}")]);
                let c = candidate(&s, 0);
                seen.insert(c, s.clone()).map(|prev| (prev, s))
            })
            .unwrap();
        let (first, second) = if a < b { (a, b) } else { (b, a) };
        for order in [[&first, &second], [&second, &first]] {
            let ids = allocate(order.iter().map(|s| s.as_slice()));
            assert_eq!(ids[&first], candidate(&first, 0));
            assert_ne!(ids[&second], ids[&first]);
        }
    }
}
