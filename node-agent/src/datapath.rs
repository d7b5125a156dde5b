//! Loads webb's kernel programs, attaches them, keeps the endpoint and policy
//! maps in step with the files, and drains the event ring.
//!
//! Architecture invariant: only this module touches the kernel. Dropping a
//! [`Datapath`] detaches everything it attached: TC programs are TCX links
//! and cgroup/tracepoint programs are bpf links, all owned by the `Ebpf`
//! object, so closing it leaves no program, link, qdisc or pin behind.

use std::{
    collections::HashMap as StdHashMap,
    fs::File,
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, SchedClassifier, TcAttachType, TracePoint,
    },
};
use node_agent_ebpf::{Addr, Config, EndpointInfo, FlowKey, FlowState, PolicyKey, counter, kind};
use webb_proto::flow::LostEventSource;

use crate::{
    decode::{Context, Decoded, Decoder},
    kernel::{self, Tracefs},
    observer::Hub,
    policy::CompiledPolicy,
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
}

/// The TC programs and where each attaches.
const TC_PROGRAMS: [(&str, TcAttachType); 2] = [
    ("webb_tc_ingress", TcAttachType::Ingress),
    ("webb_tc_egress", TcAttachType::Egress),
];

/// The attached programs and the maps userspace writes.
pub struct Datapath {
    ebpf: Ebpf,
    pub attached: Vec<String>,
    /// Watched interfaces by name, with the ifindex they had when attached: a
    /// veth deleted and created again under the same name (a restarted pod)
    /// has a new index and is attached again.
    interfaces: StdHashMap<String, u32>,
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
        if let Some(cg) = &opts.cgroup {
            for (prog, attach) in [
                ("webb_cgroup_ingress", CgroupSkbAttachType::Ingress),
                ("webb_cgroup_egress", CgroupSkbAttachType::Egress),
            ] {
                let p: &mut CgroupSkb = program(&mut ebpf, prog)?.try_into()?;
                p.load().with_context(|| format!("verifying {prog}"))?;
                let f =
                    File::open(cg).with_context(|| format!("opening cgroup {}", cg.display()))?;
                // bpf_link attachments always coexist with other programs;
                // the kernel rejects an explicit ALLOW_MULTI flag on them.
                p.attach(f, attach, CgroupAttachMode::default())
                    .with_context(|| format!("attaching {prog} to {}", cg.display()))?;
                attached.push(format!("cgroup_skb/{attach:?}/{}", cg.display()).to_lowercase());
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
            _tracefs: tracefs,
        };
        for iface in &opts.interfaces {
            dp.watch_interface(iface)?;
        }
        Ok((dp, maps))
    }

    /// Attaches the TC programs to an interface, unless they are attached to
    /// it already. Returns whether it attached anything.
    pub fn watch_interface(&mut self, iface: &str) -> anyhow::Result<bool> {
        let index = ifindex(iface).ok_or_else(|| {
            anyhow!("interface {iface}: no such network interface (see `ip link`)")
        })?;
        if self.interfaces.get(iface) == Some(&index) {
            return Ok(false);
        }
        for (prog, attach) in TC_PROGRAMS {
            let p: &mut SchedClassifier = program(&mut self.ebpf, prog)?.try_into()?;
            p.attach(iface, attach)
                .with_context(|| format!("attaching {prog} to {iface}"))?;
            self.attached
                .push(format!("tc/{attach:?}/{iface}").to_lowercase());
        }
        self.interfaces.insert(iface.to_owned(), index);
        Ok(true)
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

/// Per-CPU counters summed.
#[derive(Debug, Default, Clone, Copy)]
pub struct DatapathCounters {
    pub ring_full: u64,
    pub malformed: u64,
    pub not_ip: u64,
    pub packets: u64,
    pub policy_drops: u64,
}

impl KernelMaps {
    fn write_config(&mut self) -> anyhow::Result<()> {
        self.config
            .set(0, self.config_value, 0)
            .context("writing the datapath config map")
    }

    pub fn counters(&self) -> DatapathCounters {
        let sum = |i: u32| -> u64 {
            self.counters
                .get(&i, 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0)
        };
        DatapathCounters {
            ring_full: sum(counter::RING_FULL),
            malformed: sum(counter::MALFORMED),
            not_ip: sum(counter::NOT_IP),
            packets: sum(counter::PACKETS),
            policy_drops: sum(counter::POLICY_DROPS),
        }
    }

    /// Makes the endpoint, CIDR and policy maps equal to what the endpoint
    /// table and compiled policy say. Denied flows are forgotten so that a
    /// policy change takes effect on their next packet.
    pub fn sync(&mut self, ctx: &Context, policy_loaded: bool) -> anyhow::Result<()> {
        let table = &ctx.endpoints;
        let compiled: &CompiledPolicy = &ctx.policy;

        let mut want_endpoints: StdHashMap<Addr, EndpointInfo> = StdHashMap::new();
        for ip in &table.host_ips {
            want_endpoints.insert(
                addr(ip),
                EndpointInfo {
                    identity: node_agent_ebpf::identity::HOST,
                    flags: node_agent_ebpf::endpoint_flags::LOCAL,
                },
            );
        }
        for e in &table.endpoints {
            let mut flags = compiled.isolation.get(&e.identity).copied().unwrap_or(0);
            if e.interface.is_some() {
                flags |= node_agent_ebpf::endpoint_flags::L7_AT_TC;
            }
            if e.interface.is_some() || e.cgroup.is_some() {
                flags |= node_agent_ebpf::endpoint_flags::LOCAL;
            }
            for ip in &e.ips {
                want_endpoints.insert(
                    addr(ip),
                    EndpointInfo {
                        identity: e.identity,
                        flags,
                    },
                );
            }
        }
        sync_hash_map(&mut self.endpoints, &want_endpoints).context("updating the endpoint map")?;

        let want_cidrs: StdHashMap<(u32, Addr), u32> = compiled
            .cidrs
            .iter()
            .map(|(net, id)| {
                let (len, a) = match net {
                    ipnet::IpNet::V4(n) => (
                        u32::from(n.prefix_len()) + 96,
                        node_agent_ebpf::v4_mapped(n.network().octets()),
                    ),
                    ipnet::IpNet::V6(n) => (u32::from(n.prefix_len()), n.network().octets()),
                };
                ((len, a), *id)
            })
            .collect();
        let stale: Vec<Key<Addr>> = self
            .cidrs
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want_cidrs.contains_key(&(k.prefix_len(), k.data())))
            .collect();
        for k in stale {
            let _ = self.cidrs.remove(&k);
        }
        for ((len, a), id) in &want_cidrs {
            self.cidrs
                .insert(&Key::new(*len, *a), id, 0)
                .context("updating the CIDR map")?;
        }

        let want_keys: StdHashMap<PolicyKey, u32> = compiled
            .keys
            .iter()
            .map(|k| (PolicyKey::from(*k), 1))
            .collect();
        sync_hash_map(&mut self.policy, &want_keys).context("updating the policy map")?;

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

        self.config_value.policy_enabled = u32::from(policy_loaded);
        self.write_config()
    }
}

/// Makes a kernel hash map hold exactly `want`: stale keys go first, so the
/// map never needs room for old and new at once.
fn sync_hash_map<K, V>(
    map: &mut HashMap<MapData, K, V>,
    want: &StdHashMap<K, V>,
) -> Result<(), aya::maps::MapError>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod,
{
    let stale: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !want.contains_key(k))
        .collect();
    for k in stale {
        let _ = map.remove(&k);
    }
    for (k, v) in want {
        map.insert(k, v, 0)?;
    }
    Ok(())
}

/// The ingest loop: drains the ring in batches (the kernel submits without
/// wakeups), decodes, publishes, and turns counter increases into lost
/// events. Runs on its own thread until `stop` is set.
pub struct Ingest {
    pub ring: RingBuf<MapData>,
    pub hub: Arc<Hub>,
    pub context: Arc<RwLock<Context>>,
    pub maps: Arc<std::sync::Mutex<KernelMaps>>,
    pub stop: Arc<AtomicBool>,
    pub poll_interval: Duration,
    pub redaction: crate::l7::http::Redaction,
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Ingest {
    /// Sleeps until the kernel signals a filling ring or the poll interval
    /// passes, whichever is first.
    fn wait_for_events(&self) {
        use std::os::fd::AsRawFd as _;
        let mut pfd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = self.poll_interval.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the ring buffer's fd, which we own.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }
}

/// Records drained per publish; bounds the time the hub's lock is held.
const BATCH: usize = 4096;

impl Ingest {
    pub fn run(mut self) {
        let ctx = self
            .context
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        let mut decoder = Decoder::new(ctx);
        decoder.l7 = crate::l7::Tracker::new(
            std::mem::take(&mut self.redaction),
            self.hub.counters.l7.clone(),
        );
        let mut last_counters = DatapathCounters::default();
        let mut last_check = Instant::now();
        let mut undecodable = 0u64;
        // Reused across polls (see Hub::publish).
        let mut batch = Vec::with_capacity(BATCH);
        while !self.stop.load(Ordering::Relaxed) {
            // Everything the kernel committed before this instant is drained
            // below; the kernel timestamps of those events are earlier still.
            let drain_began = std::time::SystemTime::now();
            while let Some(item) = self.ring.next() {
                match decoder.decode_record(&item) {
                    Decoded::Flow(f) => batch.push(f),
                    Decoded::Skipped => {}
                    Decoded::Undecodable => undecodable += 1,
                }
                drop(item);
                if batch.len() >= BATCH {
                    break;
                }
            }
            let drained = batch.len();
            if let Some(m) = &self.metrics {
                m.observe(&batch);
            }
            self.hub.publish(&mut batch, &decoder.ctx.node_name);
            if drained < BATCH {
                // The ring was emptied: the watermark may move.
                self.hub.advance_watermark(drain_began);
            }

            if last_check.elapsed() >= Duration::from_secs(1) {
                last_check = Instant::now();
                decoder.refresh_clock();
                decoder.l7.sweep(crate::decode::monotonic_ns());
                if let Ok(c) = self.context.read() {
                    decoder.ctx = c.clone();
                }
                let now = self.maps.lock().map(|m| m.counters()).unwrap_or_default();
                let lost = now.ring_full.saturating_sub(last_counters.ring_full)
                    + std::mem::take(&mut undecodable);
                if lost > 0 {
                    tracing::warn!(lost, "kernel event ring was full; reporting lost events");
                    self.hub.publish_lost(
                        LostEventSource::PerfEventRingBuffer,
                        lost,
                        &decoder.ctx.node_name,
                    );
                }
                let malformed = now.malformed.saturating_sub(last_counters.malformed);
                if malformed > 0 {
                    tracing::info!(
                        malformed,
                        "packets with malformed headers were counted and passed"
                    );
                }
                let c = &self.hub.counters;
                c.malformed_packets.store(now.malformed, Ordering::Relaxed);
                c.non_ip_packets.store(now.not_ip, Ordering::Relaxed);
                c.packets.store(now.packets, Ordering::Relaxed);
                c.policy_drops.store(now.policy_drops, Ordering::Relaxed);
                last_counters = now;
            }
            if drained == 0 {
                self.wait_for_events();
            }
        }
    }
}
