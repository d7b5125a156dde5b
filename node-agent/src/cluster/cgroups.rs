//! The kubelet's cgroup tree as a source: which cgroup (by id, the number a
//! socket's packets carry) belongs to which pod (by UID).
//!
//! The kubelet puts each pod in a cgroup named after its UID, under the QoS
//! class, and the runtime puts each container below it:
//!
//! - systemd driver: `kubepods.slice/kubepods-burstable.slice/
//!   kubepods-burstable-pod<uid with _ for ->.slice/cri-containerd-<id>.scope`
//!   (Guaranteed pods directly under `kubepods.slice`; CRI-O's scopes are
//!   `crio-<id>.scope`, Docker's `docker-<id>.scope`);
//! - cgroupfs driver: `kubepods/burstable/pod<uid>/<container id>`.
//!
//! Every cgroup at or below a pod's is that pod's. The tree is read again
//! every [`RESCAN`] (a pod's containers start after the API says it is
//! scheduled, and restart); only a changed result is sent.

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::sync::mpsc;

use super::Update;

pub const RESCAN: Duration = Duration::from_secs(2);

/// The pod UID a kubelet cgroup directory is named after, if it is a pod's.
pub fn pod_uid(dir: &str) -> Option<String> {
    // systemd: kubepods[-<qos>]-pod<uid>.slice, the UID's dashes as '_'.
    if let Some(rest) = dir.strip_prefix("kubepods")
        && let Some(slice) = rest.strip_suffix(".slice")
        && let Some(i) = slice.find("-pod")
    {
        let uid = slice[i + 4..].replace('_', "-");
        return is_uid(&uid).then_some(uid);
    }
    // cgroupfs: pod<uid>.
    let uid = dir.strip_prefix("pod")?;
    is_uid(uid).then(|| uid.to_owned())
}

/// A UID as Kubernetes makes them (RFC 4122: 8-4-4-4-12 hex digits).
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Where the kubelet's tree starts under a cgroup v2 root: `kubepods.slice`
/// (systemd) or `kubepods` (cgroupfs), at the root or one level down (a
/// node in a container, a lab).
pub fn kubepods_roots(root: &Path) -> Vec<PathBuf> {
    let look = |dir: &Path| -> Vec<PathBuf> {
        ["kubepods.slice", "kubepods"]
            .iter()
            .map(|n| dir.join(n))
            .filter(|p| p.is_dir())
            .collect()
    };
    let found = look(root);
    if !found.is_empty() {
        return found;
    }
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .flat_map(|e| look(&e.path()))
        .collect()
}

/// Every cgroup of every pod under `root`, by cgroup id.
pub fn scan(root: &Path) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    for top in kubepods_roots(root) {
        walk(&top, None, 0, &mut out);
    }
    out
}

fn walk(dir: &Path, pod: Option<&str>, depth: usize, out: &mut BTreeMap<u64, String>) {
    // The kubelet's tree is at most QoS / pod / container / a runtime's
    // sub-cgroups deep; a deeper one is not its.
    if depth > 6 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = e.file_name();
        let name = name.to_string_lossy();
        let uid = match pod {
            Some(uid) => Some(uid.to_owned()),
            None => pod_uid(&name),
        };
        let path = e.path();
        if let Some(uid) = &uid
            && let Ok(m) = std::fs::metadata(&path)
        {
            // A cgroup v2 id is its directory's inode number.
            out.insert(m.ino(), uid.clone());
        }
        walk(&path, uid.as_deref(), depth + 1, out);
    }
}

/// The id of one cgroup directory.
pub fn cgroup_id(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Reads the tree every [`RESCAN`] and sends it when it changed; ends
/// when `tx` closes.
pub fn spawn(root: PathBuf, tx: mpsc::Sender<Update>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Option<BTreeMap<u64, String>> = None;
        let mut tick = tokio::time::interval(RESCAN);
        loop {
            tick.tick().await;
            let r = root.clone();
            let Ok(now) = tokio::task::spawn_blocking(move || scan(&r)).await else {
                return;
            };
            if last.as_ref() != Some(&now) {
                if last.is_none() {
                    tracing::info!(
                        cgroups = now.len(),
                        root = %root.display(),
                        "kubelet cgroups: sockets are attributed to their pods"
                    );
                }
                if tx.send(Update::Cgroups(now.clone())).await.is_err() {
                    return;
                }
                last = Some(now);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f5c2a4e-9b1d-4c3e-8a7f-1234567890ab";

    #[test]
    fn pod_cgroups_are_named_by_every_driver_and_runtime_layout() {
        let u = UID.replace('-', "_");
        for name in [
            format!("kubepods-burstable-pod{u}.slice"),
            format!("kubepods-besteffort-pod{u}.slice"),
            format!("kubepods-pod{u}.slice"),
            format!("pod{UID}"),
        ] {
            assert_eq!(pod_uid(&name).as_deref(), Some(UID), "{name}");
        }
        for name in [
            "kubepods.slice",
            "kubepods-burstable.slice",
            "burstable",
            "cri-containerd-0123abcd.scope",
            "crio-0123abcd.scope",
            "podnotauid",
            "kubepods-podzz.slice",
            &format!("kubepods-pod{u}.scope"),
        ] {
            assert_eq!(pod_uid(name), None, "{name}");
        }
    }

    #[test]
    fn a_tree_on_disk_maps_pod_and_container_cgroups_to_the_pod() {
        // Plain directories stand in for the cgroup tree: the walk reads
        // names and inode numbers only.
        let root = std::env::temp_dir().join(format!("webb-cgroups-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let u = UID.replace('-', "_");
        let systemd = root.join(format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice"
        ));
        let container = systemd.join("cri-containerd-aa11.scope");
        std::fs::create_dir_all(&container).unwrap();
        let other = "11111111-2222-3333-4444-555555555555";
        let cgroupfs = root.join(format!("node/kubepods/besteffort/pod{other}/crio-bb22"));
        std::fs::create_dir_all(&cgroupfs).unwrap();
        std::fs::create_dir_all(root.join("system.slice/sshd.service")).unwrap();

        let found = scan(&root);
        let id = |p: &Path| cgroup_id(p).unwrap();
        assert_eq!(found.get(&id(&systemd)).map(String::as_str), Some(UID));
        assert_eq!(found.get(&id(&container)).map(String::as_str), Some(UID));
        // Only the first kubelet root found at the top: the nested one is
        // looked for only when the top has none.
        assert!(!found.values().any(|u| u == other));
        assert_eq!(found.len(), 2, "{found:?}");
        std::fs::remove_dir_all(root.join("kubepods.slice")).unwrap();
        let found = scan(&root);
        assert_eq!(found.get(&id(&cgroupfs)).map(String::as_str), Some(other));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
