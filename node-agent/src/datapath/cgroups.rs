//! Where the cgroup programs attach: every cgroup under `--cgroup` whose
//! sockets no watched interface sees, and no other.
//!
//! A cgroup_skb program runs for every packet of every socket below the
//! cgroup it is attached to, and merely having one there costs a pod's
//! packets about as much as the TC programs do (the hook runs, whatever the
//! program does). A pod with a watched veth gains nothing from it: TC
//! reports its packets. So the programs go on the largest subtrees that
//! hold no such pod's cgroup (`system.slice`, `user.slice`, host-network
//! pods, pods without a watched interface), and never on or inside a
//! covered pod's cgroup. Processes directly in a cgroup above a covered pod
//! (the root's, in practice kernel threads) are not watched; cgroup v2
//! allows no processes in the inner cgroups of a kubelet's tree.

use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// How deep the walk goes below `--cgroup`: a kubelet's pod cgroups are at
/// most 4 levels down (kubepods.slice, the QoS class, the pod, its
/// containers).
const MAX_DEPTH: usize = 8;

/// The cgroups to attach to under `root`, given the ids (inode numbers) of
/// the covered cgroups: `root` itself when it holds none of them, else the
/// largest subtrees without one. A covered cgroup's own subtree (its
/// containers) is never attached to.
pub fn attach_points(root: &Path, covered: &BTreeSet<u64>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if covered.is_empty() {
        out.push(root.to_owned());
        return out;
    }
    match walk(root, covered, 0) {
        Walk::Clear => out.push(root.to_owned()),
        Walk::Covered => {}
        Walk::Mixed(clear) => out = clear,
    }
    out
}

enum Walk {
    /// No covered cgroup at or below: attach here.
    Clear,
    /// This cgroup is a covered pod's: nothing here or below.
    Covered,
    /// Covered cgroups below: attach to these clear subtrees instead.
    Mixed(Vec<PathBuf>),
}

fn walk(dir: &Path, covered: &BTreeSet<u64>, depth: usize) -> Walk {
    if std::fs::metadata(dir).is_ok_and(|m| covered.contains(&m.ino())) {
        return Walk::Covered;
    }
    if depth >= MAX_DEPTH {
        return Walk::Clear;
    }
    let mut children: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    children.sort();
    let mut clear = Vec::new();
    let mut any_covered = false;
    for c in children {
        match walk(&c, covered, depth + 1) {
            Walk::Clear => clear.push(c),
            Walk::Covered => any_covered = true,
            Walk::Mixed(below) => {
                any_covered = true;
                clear.extend(below);
            }
        }
    }
    if any_covered {
        Walk::Mixed(clear)
    } else {
        Walk::Clear
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree(PathBuf);

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tree(name: &str, dirs: &[&str]) -> Tree {
        let root = std::env::temp_dir().join(format!("webb-cg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in dirs {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::create_dir_all(&root).unwrap();
        Tree(root)
    }

    fn id(root: &Path, d: &str) -> u64 {
        std::fs::metadata(root.join(d)).unwrap().ino()
    }

    fn rel(root: &Path, points: Vec<PathBuf>) -> Vec<String> {
        points
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_programs_go_around_the_pods_a_veth_covers() {
        let t = tree(
            "kubelet",
            &[
                "system.slice/containerd.service",
                "user.slice",
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poda.slice/cri-1.scope",
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podhost.slice/cri-2.scope",
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podb.slice",
                "kubepods.slice/kubepods-podc.slice",
            ],
        );
        let r = &t.0;
        let pod_a = "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poda.slice";
        let pod_b = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podb.slice";
        // Nothing covered yet: the root, so nothing is missed.
        assert_eq!(rel(r, attach_points(r, &BTreeSet::new())), [""]);
        // Pods a and b have watched veths (a's container cgroup is a's too);
        // the host-network pod and pod c do not.
        let covered = BTreeSet::from([
            id(r, pod_a),
            id(r, &format!("{pod_a}/cri-1.scope")),
            id(r, pod_b),
        ]);
        assert_eq!(
            rel(r, attach_points(r, &covered)),
            [
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podhost.slice",
                "kubepods.slice/kubepods-podc.slice",
                "system.slice",
                "user.slice",
            ]
        );
        // Every pod covered but the host one: its subtree and the host's.
        let all = BTreeSet::from([
            id(r, pod_a),
            id(r, pod_b),
            id(r, "kubepods.slice/kubepods-podc.slice"),
        ]);
        let points = rel(r, attach_points(r, &all));
        assert!(
            !points
                .iter()
                .any(|p| p.contains("poda") || p.contains("podb") || p.contains("podc")),
            "{points:?}"
        );
        // A covered root: nothing at all.
        assert!(attach_points(r, &BTreeSet::from([id(r, "")])).is_empty());
    }
}
