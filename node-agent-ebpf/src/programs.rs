//! Maps and the per-packet flow logic shared by the TC and cgroup programs.

mod cgroup;
mod kfree_skb;
mod tc;

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
};
use node_agent_ebpf::{
    Addr, CgroupRole, Config, EndpointInfo, FlowEvent, FlowKey, FlowState, IPPROTO_TCP,
    IPPROTO_UDP, L7_RECORD_HEADER, L7Header, L7Record, MAX_CAPTURE, Packet, ParseError, Parsed,
    PolicyKey, PolicyMaps, PolicyRules, TLS_CAPTURE, cgroup_role, client_side, counter, emit,
    endpoint_flags, flags, is_dns_port, kind, l7, l7_elsewhere, looks_like_client_hello,
    looks_like_http, parse_l3, parse_l4, point, policy_allows, report_reason, tcp,
};

/// Do not wake the consumer per record (a wakeup per record caps throughput
/// and, on a busy node, perturbs scheduling; see BENCHMARKS.md): userspace
/// drains the ring on a timer, and is woken early only once the ring holds
/// more than WAKEUP_BYTES, so a burst never waits for the timer.
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
const WAKEUP_BYTES: u64 = 1 << 20;
const BPF_F_NO_PREALLOC: u32 = 1;

/// Tracked flows. Userspace resizes it with `--flow-map-size` at load time.
#[map]
static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(65536, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Known endpoint (and host) addresses: identity and isolation flags.
#[map]
static ENDPOINTS: HashMap<Addr, EndpointInfo> = HashMap::with_max_entries(65536, 0);

/// CIDR identities for NetworkPolicy ipBlocks (longest prefix wins).
#[map]
static CIDRS: LpmTrie<Addr, u32> = LpmTrie::with_max_entries(16384, BPF_F_NO_PREALLOC);

/// Allowed (subject, peer, port, proto, dir) tuples; see PolicyKey.
#[map]
static POLICY: HashMap<PolicyKey, u32> = HashMap::with_max_entries(65536, 0);

/// The cgroup of a host socket (a host process or host-network pod) talking
/// to a pod watched here, by 5-tuple as the host side sends it: noted by the
/// cgroup programs, read by TC when it reports the flow at the pod.
#[map]
static SOCKET_CGROUPS: LruHashMap<FlowKey, u64> = LruHashMap::with_max_entries(16384, 0);

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Where an L7 record is assembled before it is copied into the ring: its
/// size depends on the payload, and a ring reservation must be a constant.
#[map]
static L7_SCRATCH: PerCpuArray<L7Record> = PerCpuArray::with_max_entries(1, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
fn count(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the per-CPU slot belongs to this CPU while the program runs.
        unsafe { *c += 1 };
    }
}

/// Reads a hash map value by copy.
#[inline(always)]
pub(crate) fn lookup<K, V: Copy>(map: &HashMap<K, V>, key: &K) -> Option<V> {
    // SAFETY: the value is copied out at once; userspace may update entries
    // concurrently, and a torn read of these small values only delays a
    // policy change by one packet.
    unsafe { map.get(key).copied() }
}

#[inline(always)]
pub(crate) fn flow_kind(key: &FlowKey) -> Option<u8> {
    // SAFETY: as in `lookup`.
    unsafe { FLOWS.get(key).map(|s| s.kind) }
}

/// Reads `N` bytes at `offset` straight from linear packet data when they are
/// there (no helper call), else through `bpf_skb_load_bytes`, which also
/// reaches paged data. Offsets are capped so the verifier can bound the
/// pointer arithmetic.
#[inline(always)]
pub(crate) fn load_direct<const N: usize>(
    data: usize,
    data_end: usize,
    offset: usize,
    slow: impl FnOnce() -> Option<[u8; N]>,
) -> Option<[u8; N]> {
    const MAX_HEADER_OFFSET: usize = 512;
    if offset > MAX_HEADER_OFFSET {
        return slow();
    }
    let p = data + offset;
    if p + N > data_end {
        return slow();
    }
    // SAFETY: [p, p + N) lies inside the packet's linear data, as checked
    // against data_end above (and by the verifier).
    Some(unsafe { read_packet::<N>(p) })
}

/// Reads `N` bytes of packet data at `p` in words. Headers sit at 2-byte
/// offsets (behind a 14-byte Ethernet header), and LLVM loads a misaligned
/// byte array one byte at a time, with a shift and an or per byte; the
/// kernels webb runs on (x86_64, arm64) load misaligned packet words
/// directly, and the verifier allows it there. Inline assembly says so to
/// LLVM without telling it the pointer is aligned.
///
/// # Safety
/// `[p, p + N)` must be packet data the verifier knows is in bounds.
#[inline(always)]
unsafe fn read_packet<const N: usize>(p: usize) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i + 8 <= N {
        let v: u64;
        // SAFETY: in bounds, as the caller guarantees; a load has no other
        // effect.
        unsafe {
            core::arch::asm!("{0} = *(u64 *)({1} + 0)", out(reg) v, in(reg) p + i,
                options(readonly, nostack, preserves_flags));
        }
        out[i..i + 8].copy_from_slice(&v.to_le_bytes());
        i += 8;
    }
    if i + 4 <= N {
        let v: u64;
        // SAFETY: as above.
        unsafe {
            core::arch::asm!("{0} = *(u32 *)({1} + 0)", out(reg) v, in(reg) p + i,
                options(readonly, nostack, preserves_flags));
        }
        out[i..i + 4].copy_from_slice(&(v as u32).to_le_bytes());
        i += 4;
    }
    if i + 2 <= N {
        let v: u64;
        // SAFETY: as above.
        unsafe {
            core::arch::asm!("{0} = *(u16 *)({1} + 0)", out(reg) v, in(reg) p + i,
                options(readonly, nostack, preserves_flags));
        }
        out[i..i + 2].copy_from_slice(&(v as u16).to_le_bytes());
        i += 2;
    }
    if i < N {
        // SAFETY: as above.
        out[i] = unsafe { *((p + i) as *const u8) };
    }
    out
}

#[inline(always)]
pub(crate) fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

/// What the caller knows about the packet beyond its bytes.
pub(crate) struct Meta {
    pub point: u8,
    pub len: u32,
    pub ifindex: u32,
    /// TC programs enforce policy; cgroup programs only observe.
    pub enforce: bool,
    /// A cgroup program (the packet's socket is local; see cgroup_role):
    /// the socket's cgroup is read when a report needs it.
    pub cgroup: bool,
    /// The `__sk_buff`, for bpf_skb_load_bytes.
    pub skb: *mut c_void,
}

/// Tracks the packet's flow, emits an event when the flow is new, changes TCP
/// state, has closed, is due for a flush, or is dropped. Returns false to
/// drop the packet.
#[inline(always)]
pub(crate) fn handle_packet<P: Packet>(
    pkt: &P,
    with_eth: bool,
    l3_proto: u16,
    meta: &Meta,
) -> bool {
    let mut parsed = Parsed::default();
    let l4 = match parse_l3(pkt, with_eth, l3_proto, &mut parsed) {
        Ok(l4) => l4,
        Err(ParseError::NotIp) => {
            count(counter::NOT_IP);
            return true;
        }
        Err(ParseError::Malformed) => {
            count(counter::MALFORMED);
            return true;
        }
    };
    // Read once per packet: the flush interval, the trace points and the L7
    // settings.
    let Some(cfg) = config() else {
        return true;
    };
    let trace_all = cfg.trace_all != 0;
    // A cgroup program decides from the addresses whether the packet is its
    // to report before anything else: most sockets are pods', whose
    // packets TC reports, and the decision must cost next to nothing.
    if meta.cgroup && !trace_all {
        let (local, peer) = if meta.point == point::CGROUP_EGRESS {
            (&parsed.src, &parsed.dst)
        } else {
            (&parsed.dst, &parsed.src)
        };
        let local_ep = lookup(&ENDPOINTS, local);
        // The peer matters only for a host socket.
        let peer_ep = match local_ep {
            Some(e)
                if e.flags & (endpoint_flags::AT_TC | endpoint_flags::LOCAL)
                    != endpoint_flags::LOCAL =>
            {
                None
            }
            _ => lookup(&ENDPOINTS, peer),
        };
        match cgroup_role(local_ep, peer_ep, trace_all) {
            CgroupRole::Report => {}
            CgroupRole::Skip => return true,
            CgroupRole::NameForTc => {
                if parse_l4(pkt, l4, &mut parsed).is_ok() {
                    count(counter::LEFT_TO_TC);
                    note_socket_cgroup(&parsed, meta);
                }
                return true;
            }
        }
    }
    count(counter::PACKETS);
    if parse_l4(pkt, l4, &mut parsed).is_err() {
        count(counter::MALFORMED);
        return true;
    }
    let key = FlowKey {
        src: parsed.src,
        dst: parsed.dst,
        sport: parsed.sport,
        dport: parsed.dport,
        proto: parsed.proto,
        point: meta.point,
        _pad: [0; 2],
    };
    // The coarse clock (a read of the last tick, no clock source) is enough
    // to pace reports; events carry the precise time.
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };

    if let Some(state) = FLOWS.get_ptr_mut(&key) {
        // SAFETY: map values stay valid while the program runs. The counters
        // are plain adds: the BPF target offers no atomic fetch_add here, and
        // two CPUs updating one flow at the same instant may lose a count,
        // which the per-flow counters document as approximate.
        let st = unsafe { &mut *state };
        let reopened = parsed.tcp_flags & tcp::SYN != 0 && st.tcp_seen & (tcp::FIN | tcp::RST) != 0;
        if !reopened {
            st.packets += 1;
            st.bytes += u64::from(meta.len);
            if st.kind == kind::POLICY_DROP {
                count(counter::POLICY_DROPS);
                send(&key, st, &parsed, meta, emit::DROP, cfg);
                return false;
            }
            if let Some(reason) = report_reason(st, parsed.tcp_flags, now, cfg.flush_ns) {
                st.tcp_seen |= parsed.tcp_flags & (tcp::SYN | tcp::FIN | tcp::RST);
                st.last_emit_ns = now;
                send(&key, st, &parsed, meta, reason, cfg);
            }
            capture_l7(pkt, &key, st, &parsed, meta, cfg);
            return true;
        }
        // A closed 5-tuple used again: a new connection, decided anew.
    }

    // SAFETY: as in `lookup`.
    let reply = match unsafe { FLOWS.get(&key.reverse()).copied() } {
        Some(r) => r.kind != kind::POLICY_DROP && r.flags & flags::REPLY == 0,
        None => false,
    };
    let mut verdict = kind::TRACE;
    if meta.enforce && !reply && cfg.policy_enabled != 0 && !policy_allows(&KernelPolicy, &key) {
        verdict = if cfg.policy_audit != 0 {
            kind::POLICY_AUDIT
        } else {
            kind::POLICY_DROP
        };
    }
    let mut state_flags = if reply { flags::REPLY } else { 0 };
    if parsed.tcp_flags & tcp::SYN != 0 {
        state_flags |= flags::STREAM_START;
    }
    let server = if !trace_all && client_side(key.point, reply) {
        lookup(&ENDPOINTS, if reply { &key.src } else { &key.dst })
    } else {
        None
    };
    if l7_elsewhere(key.point, reply, server, trace_all) {
        state_flags |= flags::NO_L7;
    }
    let mut st = FlowState {
        packets: 1,
        bytes: u64::from(meta.len),
        last_emit_ns: now,
        kind: verdict,
        flags: state_flags,
        tcp_seen: parsed.tcp_flags & (tcp::SYN | tcp::FIN | tcp::RST),
        _pad: [0; 5],
    };
    let reason = if verdict == kind::POLICY_DROP {
        count(counter::POLICY_DROPS);
        emit::DROP
    } else {
        emit::NEW
    };
    send(&key, &mut st, &parsed, meta, reason, cfg);
    let allowed = verdict != kind::POLICY_DROP;
    if allowed {
        capture_l7(pkt, &key, &mut st, &parsed, meta, cfg);
    }
    // A full LRU map evicts its oldest entry; insert only fails on memory
    // pressure, and the event above still reported the packet.
    let _ = FLOWS.insert(&key, &st, 0);
    allowed
}

/// A host socket talking to a pod watched here: notes the socket's cgroup
/// under the 5-tuple as the host side sends it, for the TC report at the
/// pod's interface (only when it changed, so a busy flow writes nothing).
#[inline(always)]
fn note_socket_cgroup(parsed: &Parsed, meta: &Meta) {
    let key = if meta.point == point::CGROUP_EGRESS {
        socket_key(
            &parsed.src,
            &parsed.dst,
            parsed.sport,
            parsed.dport,
            parsed.proto,
        )
    } else {
        socket_key(
            &parsed.dst,
            &parsed.src,
            parsed.dport,
            parsed.sport,
            parsed.proto,
        )
    };
    let cgroup_id = socket_cgroup(meta);
    // SAFETY: as in `lookup`.
    if unsafe { SOCKET_CGROUPS.get(&key) }.copied() != Some(cgroup_id) {
        let _ = SOCKET_CGROUPS.insert(&key, &cgroup_id, 0);
    }
}

/// The cgroup of the socket a cgroup program's packet belongs to.
#[inline(always)]
fn socket_cgroup(meta: &Meta) -> u64 {
    // SAFETY: cgroup programs pass their context's valid skb pointer, and
    // bpf_skb_cgroup_id is allowed for them.
    unsafe { bpf_skb_cgroup_id(meta.skb.cast()) }
}

/// The key of [`SOCKET_CGROUPS`]: the host socket's end first.
#[inline(always)]
fn socket_key(local: &Addr, peer: &Addr, local_port: u16, peer_port: u16, proto: u8) -> FlowKey {
    FlowKey {
        src: *local,
        dst: *peer,
        sport: local_port,
        dport: peer_port,
        proto,
        point: 0,
        _pad: [0; 2],
    }
}

/// The cgroup a cgroup program noted for the host end of a flow TC reports
/// at a pod's interface (0 when none): the sender at TC egress, the
/// receiver at TC ingress.
#[inline(always)]
fn noted_socket_cgroup(key: &FlowKey) -> u64 {
    let k = match key.point {
        point::TC_EGRESS => socket_key(&key.src, &key.dst, key.sport, key.dport, key.proto),
        point::TC_INGRESS => socket_key(&key.dst, &key.src, key.dport, key.sport, key.proto),
        _ => return 0,
    };
    // SAFETY: as in `lookup`.
    unsafe { SOCKET_CGROUPS.get(&k) }.copied().unwrap_or(0)
}

/// The kernel's policy maps, as the shared decision reads them.
struct KernelPolicy;

impl PolicyRules for KernelPolicy {
    #[inline(always)]
    fn has_rule(&self, key: &PolicyKey) -> bool {
        lookup(&POLICY, key).is_some()
    }
}

impl PolicyMaps for KernelPolicy {
    #[inline(always)]
    fn endpoint(&self, addr: &Addr) -> Option<EndpointInfo> {
        lookup(&ENDPOINTS, addr)
    }

    #[inline(always)]
    fn cidr_identity(&self, addr: &Addr) -> Option<u32> {
        CIDRS.get(&Key::new(128, *addr)).copied()
    }
}

/// Copies the payload prefix of a DNS message or of a TCP segment that starts
/// like an HTTP/1.x head or a TLS ClientHello into the ring, behind the flow
/// event. Userspace parses it; nothing else is copied.
#[inline(always)]
fn capture_l7<P: Packet>(
    pkt: &P,
    key: &FlowKey,
    st: &mut FlowState,
    parsed: &Parsed,
    meta: &Meta,
    cfg: &Config,
) {
    if parsed.payload_off == 0 || parsed.payload_len == 0 || st.flags & flags::NO_L7 != 0 {
        return;
    }
    let snap = cfg.l7_capture;
    if snap == 0 {
        return;
    }
    let dns = is_dns_port(&cfg.dns_ports, key.sport, key.dport);
    let proto = match key.proto {
        IPPROTO_UDP if dns => l7::DNS_UDP,
        IPPROTO_TCP if dns => l7::DNS_TCP,
        IPPROTO_TCP => {
            let stream_start = st.flags & flags::STREAM_START != 0;
            st.flags &= !flags::STREAM_START;
            match pkt.load::<6>(parsed.payload_off as usize) {
                Some(h) if looks_like_http([h[0], h[1], h[2], h[3]]) => l7::HTTP,
                Some(h) if looks_like_client_hello(h) => {
                    // What follows a ClientHello is encrypted.
                    st.flags |= flags::NO_L7;
                    l7::TLS
                }
                _ => {
                    if stream_start {
                        st.flags |= flags::NO_L7;
                    }
                    return;
                }
            }
        }
        _ => return,
    };
    let off = parsed.payload_off;
    if meta.len <= off {
        return;
    }
    let in_packet = meta.len - off;
    let payload_len = if parsed.payload_len < in_packet {
        parsed.payload_len
    } else {
        in_packet
    };
    let snap = if proto == l7::TLS && snap < TLS_CAPTURE {
        TLS_CAPTURE
    } else {
        snap
    };
    let mut n = if payload_len < snap {
        payload_len
    } else {
        snap
    };
    if n > MAX_CAPTURE as u32 {
        n = MAX_CAPTURE as u32;
    }
    // Hidden from the optimizer so that the range check below stays on the
    // very register passed to the helper: the verifier must see 1..=4096.
    let n = core::hint::black_box(n);
    if n == 0 || n > MAX_CAPTURE as u32 {
        return;
    }
    let Some(rec) = L7_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let report = Report {
        packets: 0,
        bytes: 0,
        kind: st.kind,
        flags: st.flags,
        emit: emit::L7,
        drop_reason: 0,
    };
    // SAFETY: `rec` is this CPU's scratch slot, valid and exclusively ours
    // while the program runs; `n` is in 1..=MAX_CAPTURE, the size of `data`.
    let ok = unsafe {
        fill_event(&raw mut (*rec).event, key, &report, parsed, meta, cfg);
        (*rec).header = L7Header {
            tcp_seq: parsed.tcp_seq,
            payload_len,
            captured: n,
            proto,
            _pad: [0; 3],
        };
        bpf_skb_load_bytes(meta.skb, off, (&raw mut (*rec).data).cast::<c_void>(), n) == 0
    };
    if !ok {
        count(counter::MALFORMED);
        return;
    }
    let size = L7_RECORD_HEADER + n as usize;
    // SAFETY: the first `size` bytes of the slot were all written above.
    let bytes = unsafe { core::slice::from_raw_parts(rec as *const u8, size) };
    if EVENTS.output::<[u8]>(bytes, wake_flags()).is_err() {
        count(counter::RING_FULL);
        count(counter::L7_RING_FULL);
    } else {
        count(counter::EVENTS);
        count(counter::L7_CAPTURED);
    }
}

/// What an event says beyond the packet: the flow's counts since its last
/// report, its verdict and flags, and why it is sent.
pub(crate) struct Report {
    pub packets: u64,
    pub bytes: u64,
    pub kind: u8,
    pub flags: u8,
    pub emit: u8,
    pub drop_reason: u32,
}

/// Reports the flow: its counts since the last report go into the event and
/// start over.
#[inline(always)]
pub(crate) fn send(
    key: &FlowKey,
    st: &mut FlowState,
    parsed: &Parsed,
    meta: &Meta,
    reason: u8,
    cfg: &Config,
) {
    let report = Report {
        packets: st.packets,
        bytes: st.bytes,
        kind: st.kind,
        flags: st.flags,
        emit: reason,
        drop_reason: 0,
    };
    if send_report(key, &report, parsed, meta, cfg) {
        st.packets = 0;
        st.bytes = 0;
    }
}

/// Writes one event to the ring; false when the ring is full (counted).
#[inline(always)]
pub(crate) fn send_report(
    key: &FlowKey,
    report: &Report,
    parsed: &Parsed,
    meta: &Meta,
    cfg: &Config,
) -> bool {
    let Some(mut entry) = EVENTS.reserve::<FlowEvent>(0) else {
        count(counter::RING_FULL);
        return false;
    };
    // Written field by field into the reserved slot: building the event on
    // the stack first would exceed the 512-byte BPF stack.
    // SAFETY: the slot is reserved, exclusively owned, of the right size and
    // alignment; `fill_event` writes every field before submit.
    unsafe { fill_event(entry.as_mut_ptr(), key, report, parsed, meta, cfg) };
    entry.submit(wake_flags());
    count(counter::EVENTS);
    true
}

/// Wake the consumer only once the ring holds more than WAKEUP_BYTES.
#[inline(always)]
fn wake_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) > WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Writes every field of the event at `ev`.
///
/// # Safety
/// `ev` must be valid for writes of a `FlowEvent`.
#[inline(always)]
unsafe fn fill_event(
    ev: *mut FlowEvent,
    key: &FlowKey,
    report: &Report,
    parsed: &Parsed,
    meta: &Meta,
    cfg: &Config,
) {
    let mut f = report.flags & flags::REPLY;
    if parsed.has_eth {
        f |= flags::HAS_ETH;
    }
    // A TC report names a host socket's end by the cgroup its program
    // noted; events are rare enough for the lookup.
    let cgroup_id = if meta.cgroup {
        socket_cgroup(meta)
    } else if cfg.cgroup_names != 0 {
        noted_socket_cgroup(key)
    } else {
        0
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the caller's contract.
    unsafe {
        (*ev).ts_ns = now;
        (*ev).cgroup_id = cgroup_id;
        (*ev).packets = report.packets;
        (*ev).bytes = report.bytes;
        (*ev).key = *key;
        (*ev).ifindex = meta.ifindex;
        (*ev).drop_reason = report.drop_reason;
        (*ev).kind = report.kind;
        (*ev).emit = report.emit;
        (*ev).tcp_flags = parsed.tcp_flags;
        (*ev).flags = f;
        (*ev).eth_src = parsed.eth_src;
        (*ev).eth_dst = parsed.eth_dst;
        (*ev).icmp_type = parsed.icmp_type;
        (*ev).icmp_code = parsed.icmp_code;
        (*ev).ip_version = parsed.ip_version;
        (*ev)._pad = 0;
        (*ev).pkt_len = meta.len;
    }
}
