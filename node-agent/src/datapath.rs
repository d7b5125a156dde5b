//! Loads webb's kernel programs, attaches them, applies the reconciler's
//! changes to the endpoint and policy maps, and is the ingest pipeline's
//! record source (the event ring).
//!
//! Architecture invariant: only this module touches the kernel. Dropping a
//! [`Datapath`] detaches everything it attached: TC programs are TCX links
//! and cgroup/tracepoint programs are bpf links, all owned by the `Ebpf`
//! object, so closing it leaves no program, link, qdisc or pin behind.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap as StdHashMap},
    fs::File,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, SchedClassifier, TcAttachType,
        TracePoint, cgroup_skb::CgroupSkbLinkId, tc::SchedClassifierLinkId,
    },
};
use node_agent_ebpf::{Addr, Config, EndpointInfo, FlowKey, FlowState, PolicyKey, counter, kind};

mod cgroups;

use crate::{
    cluster::{Kernel, KernelDiff},
    ingest::{RecordSource, SourceCounters},
    kernel::{self, Tracefs},
};

/// The kernel object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/webb-datapath"));

pub struct Options {
    pub interfaces: Vec<String>,
    pub event_ring_bytes: u32,
    /// sk_buff offsets from BTF; without them there are no kernel drops.
    pub skb_offsets: Option<kernel::SkbOffsets>,
    pub cgroup: Option<PathBuf>,
    pub flow_map_size: u32,
    pub flush: Duration,
    pub kfree_skb: bool,
    /// Kernel drop reasons (numbers) that are not reported.
    pub kfree_skip: Vec<u32>,
    /// Other agents share this kernel: see `Config::kfree_shared_kernel`.
    pub shared_kernel: bool,
    pub policy_audit: bool,
    /// Payload bytes copied for L7 records (0: none).
    pub l7_capture: u32,
    pub dns_ports: Vec<u16>,
    /// Every program reports every packet at its own point (`--trace-points
    /// all`) instead of once per point as Cilium reports it.
    pub trace_all: bool,
}

/// The TC programs and where each attaches.
const TC_PROGRAMS: [(&str, TcAttachType); 2] = [
    ("webb_tc_ingress", TcAttachType::Ingress),
    ("webb_tc_egress", TcAttachType::Egress),
];

/// The cgroup programs and where each attaches.
const CGROUP_PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    ("webb_cgroup_ingress", CgroupSkbAttachType::Ingress),
    ("webb_cgroup_egress", CgroupSkbAttachType::Egress),
];

/// The TC links on one interface, by program.
type TcLinks = Vec<(&'static str, SchedClassifierLinkId)>;

/// The cgroup links on one cgroup, by program.
type CgroupLinks = Vec<(&'static str, CgroupSkbLinkId)>;

/// The attached programs and the maps userspace writes.
pub struct Datapath {
    ebpf: Ebpf,
    pub attached: Vec<String>,
    /// Watched interfaces by name, with the ifindex they had when attached: a
    /// veth deleted and created again under the same name (a restarted pod)
    /// has a new index and is attached again. The link ids detach it when
    /// its pod goes.
    interfaces: StdHashMap<String, (u32, TcLinks)>,
    /// `--cgroup`, and the cgroups below it the cgroup programs are
    /// attached to (see `cgroups::attach_points`).
    cgroup_root: Option<PathBuf>,
    cgroups: BTreeMap<PathBuf, CgroupLinks>,
    /// The covered cgroups of the last walk, and when it was.
    cgroups_walked: Option<(BTreeSet<u64>, std::time::Instant)>,
    trace_all: bool,
    _tracefs: Option<Tracefs>,
}

pub struct KernelMaps {
    endpoints: HashMap<MapData, Addr, EndpointInfo>,
    cidrs: LpmTrie<MapData, Addr, u32>,
    policy: HashMap<MapData, PolicyKey, u32>,
    flows: HashMap<MapData, FlowKey, FlowState>,
    config: Array<MapData, Config>,
    counters: PerCpuArray<MapData, u64>,
    config_value: Config,
}

fn addr(ip: &IpAddr) -> Addr {
    match ip {
        IpAddr::V4(v4) => node_agent_ebpf::v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn interface_exists(name: &str) -> bool {
    ifindex(name).is_some()
}

/// The interface's index in the agent's network namespace. Asked of the
/// kernel rather than read from `/sys/class/net`, which shows the namespace
/// that mounted sysfs: an agent started with `nsenter --net` into a node's
/// namespace still sees the host's sysfs.
fn ifindex(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string for the whole call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

impl Datapath {
    /// Loads and attaches everything; the maps userspace writes are returned
    /// beside the datapath so they can move to the reload task.
    pub fn load(opts: &Options) -> anyhow::Result<(Self, KernelMaps)> {
        if OBJECT.is_empty() {
            bail!(
                "this webb-agent was built with AYA_BUILD_SKIP=1 and has no kernel programs; rebuild without it"
            );
        }
        for iface in &opts.interfaces {
            if !interface_exists(iface) {
                bail!("--interface {iface}: no such network interface (see `ip link`)");
            }
        }
        if let Some(cg) = &opts.cgroup
            && !cg.join("cgroup.procs").exists()
        {
            bail!(
                "--cgroup {}: not a cgroup v2 directory (is cgroup2 mounted there?)",
                cg.display()
            );
        }

        let mut ebpf = EbpfLoader::new()
            .map_max_entries("FLOWS", opts.flow_map_size)
            .map_max_entries("EVENTS", opts.event_ring_bytes)
            .load(OBJECT)
            .context("loading the kernel programs (needs CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON)")?;

        let mut config_value = Config {
            flush_ns: opts.flush.as_nanos() as u64,
            policy_enabled: 0,
            policy_audit: u32::from(opts.policy_audit),
            l7_capture: opts.l7_capture.min(node_agent_ebpf::MAX_CAPTURE as u32),
            kfree_shared_kernel: u32::from(opts.shared_kernel),
            trace_all: u32::from(opts.trace_all),
            cgroup_names: u32::from(opts.cgroup.is_some() && !opts.trace_all),
            ..Config::default()
        };
        for (slot, reason) in config_value.kfree_skip.iter_mut().zip(&opts.kfree_skip) {
            *slot = *reason;
        }
        for (slot, port) in config_value.dns_ports.iter_mut().zip(&opts.dns_ports) {
            *slot = *port;
        }
        let mut tracefs = None;
        match (opts.kfree_skb, opts.skb_offsets) {
            (true, Some(skb)) => match kfree_skb_setup(&mut config_value, skb) {
                Ok(t) => tracefs = Some(t),
                Err(e) => tracing::warn!("kernel drops disabled: {e:#}"),
            },
            (true, None) => {
                tracing::warn!("kernel drops disabled: no sk_buff layout (BTF unreadable)")
            }
            (false, _) => {}
        }

        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("kernel object has no map {name}"))
        };
        let mut maps = KernelMaps {
            endpoints: HashMap::try_from(take(&mut ebpf, "ENDPOINTS")?)?,
            cidrs: LpmTrie::try_from(take(&mut ebpf, "CIDRS")?)?,
            policy: HashMap::try_from(take(&mut ebpf, "POLICY")?)?,
            flows: HashMap::try_from(take(&mut ebpf, "FLOWS")?)?,
            config: Array::try_from(take(&mut ebpf, "CONFIG")?)?,
            counters: PerCpuArray::try_from(take(&mut ebpf, "COUNTERS")?)?,
            config_value,
        };
        maps.write_config()?;

        let mut attached = Vec::new();
        for (prog, _) in TC_PROGRAMS {
            let p: &mut SchedClassifier = program(&mut ebpf, prog)?.try_into()?;
            p.load().with_context(|| format!("verifying {prog}"))?;
        }
        if opts.cgroup.is_some() {
            for (prog, _) in CGROUP_PROGRAMS {
                let p: &mut CgroupSkb = program(&mut ebpf, prog)?.try_into()?;
                p.load().with_context(|| format!("verifying {prog}"))?;
            }
        }
        if tracefs.is_some() {
            let p: &mut TracePoint = program(&mut ebpf, "webb_kfree_skb")?.try_into()?;
            p.load().context("verifying webb_kfree_skb")?;
            p.attach("skb", "kfree_skb")
                .context("attaching to skb:kfree_skb")?;
            attached.push("tracepoint/skb/kfree_skb".to_owned());
        }
        let mut dp = Self {
            ebpf,
            attached,
            interfaces: StdHashMap::new(),
            cgroup_root: opts.cgroup.clone(),
            cgroups: BTreeMap::new(),
            cgroups_walked: None,
            trace_all: opts.trace_all,
            _tracefs: tracefs,
        };
        for iface in &opts.interfaces {
            dp.watch_interface(iface)?;
        }
        // Until the reconciler says which pods TC covers: the whole tree,
        // so that nothing is missed.
        dp.watch_cgroups(&BTreeSet::new())?;
        Ok((dp, maps))
    }

    /// Attaches the TC programs to an interface, unless they are attached to
    /// it already. Returns whether it attached anything.
    pub fn watch_interface(&mut self, iface: &str) -> anyhow::Result<bool> {
        let index = ifindex(iface).ok_or_else(|| {
            anyhow!("interface {iface}: no such network interface (see `ip link`)")
        })?;
        if self.interfaces.get(iface).map(|(i, _)| *i) == Some(index) {
            return Ok(false);
        }
        // A previous interface of that name is gone (its links with it).
        self.unwatch_interface(iface);
        let mut links = Vec::new();
        for (prog, attach) in TC_PROGRAMS {
            let p: &mut SchedClassifier = program(&mut self.ebpf, prog)?.try_into()?;
            let link = p
                .attach(iface, attach)
                .with_context(|| format!("attaching {prog} to {iface}"))?;
            links.push((prog, link));
            self.attached
                .push(format!("tc/{attach:?}/{iface}").to_lowercase());
        }
        self.interfaces.insert(iface.to_owned(), (index, links));
        Ok(true)
    }

    /// Detaches the TC programs from an interface (if it still exists: a
    /// deleted veth took its links with it, and the link objects are freed).
    pub fn unwatch_interface(&mut self, iface: &str) {
        let Some((_, links)) = self.interfaces.remove(iface) else {
            return;
        };
        for (prog, link) in links {
            if let Ok(p) = program(&mut self.ebpf, prog)
                && let Ok(p) = <&mut SchedClassifier>::try_from(p)
            {
                let _ = p.detach(link);
            }
        }
        self.attached.retain(|a| !a.ends_with(&format!("/{iface}")));
    }

    /// The interfaces watched now.
    pub fn watched_interfaces(&self) -> impl Iterator<Item = &String> {
        self.interfaces.keys()
    }

    /// Puts the cgroup programs on the cgroups under `--cgroup` whose
    /// sockets no watched interface sees, given the cgroups (by id) of the
    /// pods TC covers: new places are attached before old ones are
    /// detached, so a socket is never unwatched in between. With every
    /// trace point on, the whole tree.
    pub fn watch_cgroups(&mut self, covered: &BTreeSet<u64>) -> anyhow::Result<()> {
        let Some(root) = self.cgroup_root.clone() else {
            return Ok(());
        };
        // The walk reads the cgroup tree: not again for the same pods
        // within a cgroup rescan, however often the reconciler runs. A new
        // cgroup below an attached one is watched already; one beside a
        // covered pod (a new host-network pod) comes with a rescan's update.
        if let Some((last, at)) = &self.cgroups_walked
            && last == covered
            && at.elapsed() < crate::cluster::cgroups::RESCAN
        {
            return Ok(());
        }
        self.cgroups_walked = Some((covered.clone(), std::time::Instant::now()));
        let none = BTreeSet::new();
        let wanted: BTreeSet<PathBuf> =
            cgroups::attach_points(&root, if self.trace_all { &none } else { covered })
                .into_iter()
                .collect();
        let have: BTreeSet<PathBuf> = self.cgroups.keys().cloned().collect();
        if wanted == have {
            return Ok(());
        }
        let mut first_error = None;
        for cg in wanted.difference(&have) {
            match self.attach_cgroup(cg) {
                Ok(links) => {
                    self.cgroups.insert(cg.clone(), links);
                }
                // A cgroup that went away between the walk and the attach is
                // walked again on the next change.
                Err(e) => {
                    tracing::debug!("cgroup programs not attached: {e:#}");
                    first_error.get_or_insert(e);
                }
            }
        }
        for cg in have.difference(&wanted) {
            if let Some(links) = self.cgroups.remove(cg) {
                for (prog, link) in links {
                    if let Ok(p) = program(&mut self.ebpf, prog)
                        && let Ok(p) = <&mut CgroupSkb>::try_from(p)
                    {
                        let _ = p.detach(link);
                    }
                }
            }
        }
        self.attached.retain(|a| !a.starts_with("cgroup_skb/"));
        for cg in self.cgroups.keys() {
            self.attached.push(format!("cgroup_skb/{}", cg.display()));
        }
        tracing::info!(
            cgroups = self.cgroups.len(),
            "cgroup programs on the cgroups no watched interface covers: {:?}",
            self.cgroups.keys().collect::<Vec<_>>()
        );
        // Nothing attached where something was wanted: say why.
        match first_error {
            Some(e) if self.cgroups.is_empty() => Err(e),
            _ => Ok(()),
        }
    }

    fn attach_cgroup(&mut self, cg: &Path) -> anyhow::Result<CgroupLinks> {
        let mut links = CgroupLinks::new();
        for (prog, attach) in CGROUP_PROGRAMS {
            let f = File::open(cg).with_context(|| format!("opening cgroup {}", cg.display()))?;
            let p: &mut CgroupSkb = program(&mut self.ebpf, prog)?.try_into()?;
            // bpf_link attachments always coexist with other programs; the
            // kernel rejects an explicit ALLOW_MULTI flag on them.
            match p.attach(f, attach, CgroupAttachMode::default()) {
                Ok(link) => links.push((prog, link)),
                Err(e) => {
                    for (prog, link) in links {
                        if let Ok(p) = program(&mut self.ebpf, prog)
                            && let Ok(p) = <&mut CgroupSkb>::try_from(p)
                        {
                            let _ = p.detach(link);
                        }
                    }
                    return Err(anyhow::Error::new(e))
                        .with_context(|| format!("attaching {prog} to {}", cg.display()));
                }
            }
        }
        Ok(links)
    }

    /// `(program, run time ns, runs)` for every loaded program, as the
    /// kernel counts them while `kernel.bpf_stats_enabled` is 1.
    pub fn program_stats(&self) -> Vec<(String, u64, u64)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| {
                let fd = p.fd().ok()?;
                let (ns, runs) = kernel::program_run_stats(std::os::fd::AsFd::as_fd(fd))?;
                Some((name.to_owned(), ns, runs))
            })
            .collect()
    }

    pub fn take_ring(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or_else(|| anyhow!("kernel object has no map EVENTS (already taken?)"))?;
        Ok(RingBuf::try_from(map)?)
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("kernel object has no program {name}"))
}

fn kfree_skb_setup(cfg: &mut Config, skb: kernel::SkbOffsets) -> anyhow::Result<Tracefs> {
    let tracefs = Tracefs::ensure()?;
    let tp = tracefs.kfree_skb_offsets()?;
    cfg.skb_head_off = skb.head;
    cfg.skb_network_header_off = skb.network_header;
    cfg.tp_skbaddr_off = tp.skbaddr;
    cfg.tp_protocol_off = tp.protocol;
    cfg.tp_reason_off = tp.reason;
    cfg.kfree_enabled = 1;
    Ok(tracefs)
}

impl KernelMaps {
    fn write_config(&mut self) -> anyhow::Result<()> {
        self.config
            .set(0, self.config_value, 0)
            .context("writing the datapath config map")
    }

    /// The kernel's per-CPU counters, summed.
    pub fn counters(&self) -> SourceCounters {
        let sum = |i: u32| -> u64 {
            self.counters
                .get(&i, 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0)
        };
        SourceCounters {
            ring_full: sum(counter::RING_FULL),
            malformed: sum(counter::MALFORMED),
            not_ip: sum(counter::NOT_IP),
            packets: sum(counter::PACKETS),
            policy_drops: sum(counter::POLICY_DROPS),
            events: sum(counter::EVENTS),
            left_to_tc: sum(counter::LEFT_TO_TC),
        }
    }

    /// Applies the reconciler's changes to the endpoint, CIDR and policy
    /// maps: only what changed is written or deleted. Deletions go first, so
    /// a map never needs room for old and new at once.
    pub fn apply(&mut self, d: &KernelDiff) -> anyhow::Result<()> {
        for ip in &d.endpoints_removed {
            let _ = self.endpoints.remove(&addr(ip));
        }
        for (ip, identity, flags) in &d.endpoints_set {
            let v = EndpointInfo {
                identity: *identity,
                flags: *flags,
            };
            self.endpoints
                .insert(addr(ip), v, 0)
                .context("updating the endpoint map")?;
        }
        for net in &d.cidrs_removed {
            let (len, a) = cidr_key(net);
            let _ = self.cidrs.remove(&Key::new(len, a));
        }
        for (net, id) in &d.cidrs_set {
            let (len, a) = cidr_key(net);
            self.cidrs
                .insert(&Key::new(len, a), id, 0)
                .context("updating the CIDR map")?;
        }
        for k in &d.policy_removed {
            let _ = self.policy.remove(&PolicyKey::from(*k));
        }
        for k in &d.policy_added {
            self.policy
                .insert(PolicyKey::from(*k), 1, 0)
                .context("updating the policy map")?;
        }
        if d.forget_denied {
            let denied: Vec<FlowKey> = self
                .flows
                .iter()
                .filter_map(Result::ok)
                .filter(|(_, st)| st.kind == kind::POLICY_DROP || st.kind == kind::POLICY_AUDIT)
                .map(|(k, _)| k)
                .collect();
            for k in denied {
                let _ = self.flows.remove(&k);
            }
        }
        if let Some(on) = d.policy_enabled {
            self.config_value.policy_enabled = u32::from(on);
            self.write_config()?;
        }
        Ok(())
    }
}

/// An LPM trie key: IPv4 prefixes are stored IPv4-mapped.
fn cidr_key(net: &ipnet::IpNet) -> (u32, Addr) {
    match net {
        ipnet::IpNet::V4(n) => (
            u32::from(n.prefix_len()) + 96,
            node_agent_ebpf::v4_mapped(n.network().octets()),
        ),
        ipnet::IpNet::V6(n) => (u32::from(n.prefix_len()), n.network().octets()),
    }
}

/// The reconciler's kernel: the maps, and the TC attachments for pod
/// interfaces. `--interface` names stay watched whatever the reconciler says.
pub struct DatapathKernel {
    pub maps: Arc<std::sync::Mutex<KernelMaps>>,
    pub datapath: Arc<std::sync::Mutex<Datapath>>,
    pub fixed_interfaces: BTreeSet<String>,
}

impl Kernel for DatapathKernel {
    fn watch_cgroups(&mut self, covered: &BTreeSet<u64>) {
        let Ok(mut dp) = self.datapath.lock() else {
            return;
        };
        if let Err(e) = dp.watch_cgroups(covered) {
            tracing::warn!("cgroup programs: {e:#}");
        }
    }

    fn apply(&mut self, diff: &KernelDiff) -> anyhow::Result<()> {
        self.maps
            .lock()
            .map_err(|_| anyhow!("kernel maps lock poisoned"))?
            .apply(diff)
    }

    fn watch(&mut self, wanted: &BTreeSet<String>) -> Vec<String> {
        let Ok(mut dp) = self.datapath.lock() else {
            return Vec::new();
        };
        let mut attached = Vec::new();
        for iface in wanted {
            match dp.watch_interface(iface) {
                Ok(true) => attached.push(iface.clone()),
                Ok(false) => {}
                Err(e) => tracing::debug!("not watching yet: {e:#}"),
            }
        }
        let gone: Vec<String> = dp
            .watched_interfaces()
            .filter(|i| !wanted.contains(*i) && !self.fixed_interfaces.contains(*i))
            .cloned()
            .collect();
        for iface in gone {
            dp.unwatch_interface(&iface);
            tracing::info!(interface = %iface, "no longer watching (the pod is gone)");
        }
        attached
    }
}

/// The kernel's event ring as the ingest pipeline's record source: the
/// kernel submits without wakeups, so the pipeline drains in batches and
/// polls the ring's fd in between.
pub struct KernelRing {
    pub ring: RingBuf<MapData>,
    pub maps: Arc<std::sync::Mutex<KernelMaps>>,
}

impl RecordSource for KernelRing {
    fn drain(&mut self, max: usize, record: &mut dyn FnMut(&[u8])) -> usize {
        let mut n = 0;
        while n < max {
            let Some(item) = self.ring.next() else { break };
            record(&item);
            n += 1;
        }
        n
    }

    /// Sleeps until the kernel signals a filling ring or the timeout passes,
    /// whichever is first.
    fn wait(&mut self, timeout: Duration) {
        use std::os::fd::AsRawFd as _;
        let mut pfd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the ring buffer's fd, which we own.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }

    fn counters(&mut self) -> SourceCounters {
        self.maps.lock().map(|m| m.counters()).unwrap_or_default()
    }
}
