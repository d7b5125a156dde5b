//! A lab "node": network namespaces as pods on a Linux bridge, each with a
//! veth whose host side the agent watches, a cgroup v2 directory, and an
//! endpoints file describing them. Dropping a [`Lab`] removes everything it
//! made, in reverse order.
//!
//! Traffic only ever goes to addresses inside these namespaces.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Once,
        atomic::{AtomicU32, Ordering},
    },
};

/// cgroup v2 mount on these machines (see shared/ebpf-toolchain.md).
pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup/unified";

static NEXT: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// Lab ids (and so subnets, 10.213.id+1.0/24) go from 0 to this.
const LAB_IDS: u32 = 250;

/// Takes lab id `id` for this process, if no running process has it: an
/// exclusive lock on its file, released when the process ends however it
/// ends. Whatever a killed process left under the id is then removed.
fn take_lab_id(id: u32) -> Option<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    let path = std::env::temp_dir().join(format!("webb-lab-{id}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("lab lock {}: {e}", path.display()));
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return None;
    }
    remove_lab_leftovers(id);
    Some(file)
}

/// Removes the network namespaces, links, directory and cgroups named for
/// lab `id` (a killed test process's; the caller holds the id).
fn remove_lab_leftovers(id: u32) {
    let netns = Command::new("ip").args(["netns", "list"]).output();
    let netns = netns.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    for line in netns.iter().flat_map(|s| s.lines()) {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(&format!("webb{id}-")) {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
    for link in std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = link.file_name().to_string_lossy().into_owned();
        let ours = [format!("wbr{id}"), format!("wr{id}")].contains(&name)
            || name.starts_with(&format!("wl{id}p"));
        if ours {
            let _ = Command::new("ip").args(["link", "del", &name]).output();
        }
    }
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("webb-lab-{id}")));
    if let Some(root) = cgroup2_root() {
        let parent = root.join(format!("webb-lab-{id}"));
        for pod in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            if pod.path().is_dir() {
                let _ = std::fs::remove_dir(pod.path());
            }
        }
        let _ = std::fs::remove_dir(parent);
    }
}

/// Removes every lab no running process holds (what killed runs left: an
/// agent would find their interfaces among a new lab's).
fn sweep_stale_labs() {
    let id_after = |name: &str, prefix: &str| -> Option<u32> {
        let digits: String = name
            .strip_prefix(prefix)?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    let mut ids = std::collections::BTreeSet::new();
    for link in std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
    {
        ids.extend(id_after(&link.file_name().to_string_lossy(), "wbr"));
    }
    let netns = Command::new("ip").args(["netns", "list"]).output();
    for line in netns.iter().flat_map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .into_owned()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    }) {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.contains('-') {
            ids.extend(id_after(name, "webb"));
        }
    }
    for id in ids {
        if id >= LAB_IDS {
            // Numbered as no running lab is (an older test binary's).
            remove_lab_leftovers(id);
        } else {
            drop(take_lab_id(id));
        }
    }
}

/// One pod of a lab.
#[derive(Debug, Clone)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub workload: Option<(String, String)>,
    /// The network namespace (`ip netns`) name.
    pub netns: String,
    /// Host side of the veth.
    pub host_if: String,
    pub ip: Ipv4Addr,
    pub cgroup: Option<PathBuf>,
}

/// What a pod should be.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub workload: Option<(String, String)>,
}

impl PodSpec {
    pub fn new(namespace: &str, name: &str, app: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            labels: vec![("app".to_owned(), app.to_owned())],
            workload: Some(("Deployment".to_owned(), app.to_owned())),
        }
    }
}

pub struct Lab {
    pub id: u32,
    pub bridge: String,
    pub host_ip: Ipv4Addr,
    pub pods: Vec<Pod>,
    pub dir: PathBuf,
    pub cgroup_parent: Option<PathBuf>,
    made_netns: Vec<String>,
    made_links: Vec<String>,
    /// Holds the id (see `take_lab_id`); released after `Drop` cleans up.
    _id_lock: std::fs::File,
}

/// Runs a command, panicking with its output when it fails: lab setup has no
/// meaningful way to continue half-built.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Why privileged tests cannot run here, if they cannot.
pub fn privileged_skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces and eBPF)".to_owned());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("kernel has no BTF (/sys/kernel/btf/vmlinux)".to_owned());
    }
    for tool in ["ip", "ping", "socat"] {
        if which(tool).is_none() {
            return Some(format!("{tool} is not installed; run scripts/setup.sh"));
        }
    }
    None
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|d| d.join(tool))
            .find(|f| f.exists())
    })
}

impl Lab {
    /// Builds a lab with the given pods on one bridge. The subnet is
    /// 10.213.N.0/24 with N unique among the labs of running processes.
    pub fn new(pods: &[PodSpec]) -> Self {
        SWEEP.call_once(sweep_stale_labs);
        // Unique among the labs of every running test process: a locked id.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let first = (std::process::id() * 7 + n) % LAB_IDS;
        let (id, lock) = (0..LAB_IDS)
            .map(|k| (first + k) % LAB_IDS)
            .find_map(|id| take_lab_id(id).map(|lock| (id, lock)))
            .expect("a free lab id: 250 labs are running");
        let subnet = id as u8 + 1;
        let bridge = format!("wbr{id}");
        let host_ip = Ipv4Addr::new(10, 213, subnet, 1);
        let dir = std::env::temp_dir().join(format!("webb-lab-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("lab directory");
        let cgroup_parent = cgroup2_root().map(|root| root.join(format!("webb-lab-{id}")));
        if let Some(cg) = &cgroup_parent {
            let _ = std::fs::create_dir(cg);
        }
        let mut lab = Self {
            id,
            bridge: bridge.clone(),
            host_ip,
            pods: Vec::new(),
            dir,
            cgroup_parent,
            made_netns: Vec::new(),
            made_links: Vec::new(),
            _id_lock: lock,
        };
        // A stale lab from a killed run with the same id goes first.
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        sh(&["ip", "link", "add", &bridge, "type", "bridge"]);
        lab.made_links.push(bridge.clone());
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            &bridge,
        ]);
        sh(&["ip", "link", "set", &bridge, "up"]);
        for (i, spec) in pods.iter().enumerate() {
            lab.add_pod(spec, i as u8 + 10);
        }
        lab.write_endpoints(&lab.endpoints_yaml());
        lab
    }

    fn add_pod(&mut self, spec: &PodSpec, host_octet: u8) {
        let k = self.pods.len();
        let netns = format!("webb{}-{}", self.id, spec.name);
        let host_if = format!("wl{}p{k}", self.id);
        let o = self.host_ip.octets();
        let ip = Ipv4Addr::new(o[0], o[1], o[2], host_octet);
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        sh(&["ip", "netns", "add", &netns]);
        self.made_netns.push(netns.clone());
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        self.made_links.push(host_if.clone());
        sh(&["ip", "link", "set", &host_if, "master", &self.bridge, "up"]);
        sh(&["ip", "-n", &netns, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        sh(&["ip", "-n", &netns, "link", "set", "eth0", "up"]);
        sh(&[
            "ip",
            "-n",
            &netns,
            "route",
            "add",
            "default",
            "via",
            &self.host_ip.to_string(),
        ]);
        let cgroup = self.cgroup_parent.as_ref().map(|p| {
            let c = p.join(&spec.name);
            let _ = std::fs::create_dir(&c);
            c
        });
        self.pods.push(Pod {
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            workload: spec.workload.clone(),
            netns,
            host_if,
            ip,
            cgroup,
        });
    }

    pub fn pod(&self, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name} in the lab"))
    }

    pub fn endpoints_path(&self) -> PathBuf {
        self.dir.join("endpoints.yaml")
    }

    /// The endpoints file the agent reads for this lab.
    pub fn endpoints_yaml(&self) -> String {
        let mut y = format!("host_ips: [{}]\nendpoints:\n", self.host_ip);
        for p in &self.pods {
            p.write_endpoint(&mut y, true);
        }
        y
    }

    pub fn write_endpoints(&self, yaml: &str) {
        std::fs::write(self.endpoints_path(), yaml).expect("writing endpoints file");
    }

    pub fn write_policy(&self, yaml: &str) -> PathBuf {
        let p = self.dir.join("policy.yaml");
        std::fs::write(&p, yaml).expect("writing policy file");
        p
    }

    /// The host sides of every pod's veth.
    pub fn interfaces(&self) -> Vec<String> {
        self.pods.iter().map(|p| p.host_if.clone()).collect()
    }
}

impl Pod {
    /// Appends this pod's entry to an endpoints file. A `local` pod is on the
    /// agent's node (its interface and cgroup are watched); a remote one is
    /// listed only so that its address names it.
    pub fn write_endpoint(&self, y: &mut String, local: bool) {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(
            y,
            "  - namespace: {}\n    pod: {}",
            self.namespace, self.name
        );
        let _ = writeln!(y, "    labels: {{{}}}", labels.join(", "));
        if let Some((kind, name)) = &self.workload {
            let _ = writeln!(y, "    workload: {{kind: {kind}, name: {name}}}");
        }
        let _ = writeln!(y, "    ips: [{}]", self.ip);
        if local {
            let _ = writeln!(y, "    interface: {}", self.host_if);
            if let Some(c) = &self.cgroup {
                let _ = writeln!(y, "    cgroup: {}", c.display());
            }
        }
    }

    /// A command run inside the pod's network namespace (and, when the lab
    /// has cgroups, inside the pod's cgroup).
    pub fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = netns_command(&self.netns, self.cgroup.as_deref(), program);
        c.args(args);
        c
    }

    /// Runs a command in the pod and returns its output (never panics: the
    /// caller asserts on what it expects).
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.cmd(program, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.name))
    }
}

/// A command run inside a network namespace and, when given, a cgroup.
pub fn netns_command(netns: &str, cgroup: Option<&Path>, program: &str) -> Command {
    let mut c = in_cgroup(cgroup, "ip");
    c.args(["netns", "exec", netns, program]);
    c
}

/// A command whose process joins `cgroup` (when given) before it runs:
/// the shell joins from the host's mount namespace (`ip netns exec`
/// remounts /sys, hiding the cgroup tree), then execs; children inherit it.
pub fn in_cgroup(cgroup: Option<&Path>, program: &str) -> Command {
    let mut c = match cgroup {
        Some(cg) => {
            let mut c = Command::new("sh");
            c.args([
                "-c",
                &format!("echo $$ > {}/cgroup.procs && exec \"$@\"", cg.display()),
                "sh",
                program,
            ]);
            c
        }
        None => Command::new(program),
    };
    c.stdin(Stdio::null());
    c
}

/// The cgroup v2 hierarchy: the hybrid layout's `unified` mount, or
/// `/sys/fs/cgroup` itself on a pure v2 system.
pub fn cgroup2_root() -> Option<PathBuf> {
    [CGROUP2_ROOT, "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.controllers").exists())
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.made_netns.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
        for link in self.made_links.drain(..).rev() {
            let _ = Command::new("ip").args(["link", "del", &link]).output();
        }
        if let Some(parent) = &self.cgroup_parent {
            for p in &self.pods {
                if let Some(c) = &p.cgroup {
                    // Processes that joined have exited with their netns exec.
                    let _ = std::fs::remove_dir(c);
                }
            }
            let _ = std::fs::remove_dir(parent);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The tests' NetworkPolicy: only cart may reach db, so frontend's attempts
/// are dropped (for `Lab::write_policy`).
pub const DB_ALLOW_CART: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-allow-cart, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
    - from:
        - podSelector: {matchLabels: {app: cart}}
";
