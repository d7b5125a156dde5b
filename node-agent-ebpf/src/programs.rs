//! Maps and the per-packet flow logic shared by the TC and cgroup programs.

mod cgroup;
mod kfree_skb;
mod tc;

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_skb_load_bytes},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
};
use node_agent_ebpf::{
    Addr, Config, EndpointInfo, FlowEvent, FlowKey, FlowState, IPPROTO_TCP, IPPROTO_UDP,
    L7_RECORD_HEADER, L7Header, L7Record, MAX_CAPTURE, Packet, ParseError, Parsed, PolicyKey,
    TLS_CAPTURE, counter, dir, emit, endpoint_flags, flags, identity, is_dns_port, kind, l7,
    looks_like_client_hello, looks_like_http, parse_packet, point, tcp,
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
    Some(unsafe { core::ptr::read_unaligned(p as *const [u8; N]) })
}

#[inline(always)]
fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

/// What the caller knows about the packet beyond its bytes.
pub(crate) struct Meta {
    pub point: u8,
    pub len: u32,
    pub ifindex: u32,
    pub cgroup_id: u64,
    /// TC programs enforce policy; cgroup programs only observe.
    pub enforce: bool,
    /// The `__sk_buff`, for bpf_skb_load_bytes.
    pub skb: *mut c_void,
}

/// Tracks the packet's flow, emits an event when the flow is new, changes TCP
/// state, is due for a flush, or is dropped. Returns false to drop the packet.
#[inline(always)]
pub(crate) fn handle_packet<P: Packet>(
    pkt: &P,
    with_eth: bool,
    l3_proto: u16,
    meta: &Meta,
) -> bool {
    count(counter::PACKETS);
    let mut parsed = Parsed::default();
    match parse_packet(pkt, with_eth, l3_proto, &mut parsed) {
        Ok(()) => {}
        Err(ParseError::NotIp) => {
            count(counter::NOT_IP);
            return true;
        }
        Err(ParseError::Malformed) => {
            count(counter::MALFORMED);
            return true;
        }
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
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // Read once per packet: the flush interval and the L7 settings.
    let cfg = config();
    let flush_ns = cfg.map_or(0, |c| c.flush_ns);

    if let Some(state) = FLOWS.get_ptr_mut(&key) {
        // SAFETY: map values stay valid while the program runs. The counters
        // are plain adds: the BPF target offers no atomic fetch_add here, and
        // two CPUs updating one flow at the same instant may lose a count,
        // which the per-flow counters document as approximate.
        let st = unsafe { &mut *state };
        st.packets += 1;
        st.bytes += u64::from(meta.len);
        if st.kind == kind::POLICY_DROP {
            count(counter::POLICY_DROPS);
            send(&key, st, &parsed, meta, emit::DROP, now, 0);
            return false;
        }
        let changes = parsed.tcp_flags & (tcp::SYN | tcp::FIN | tcp::RST) & !st.tcp_seen;
        if changes != 0 {
            st.tcp_seen |= changes;
            st.last_emit_ns = now;
            send(&key, st, &parsed, meta, emit::TCP_FLAGS, now, 0);
        } else if flush_ns != 0 && now.saturating_sub(st.last_emit_ns) >= flush_ns {
            st.last_emit_ns = now;
            send(&key, st, &parsed, meta, emit::FLUSH, now, 0);
        }
        capture_l7(pkt, &key, st, &parsed, meta, now, cfg);
        return true;
    }

    // SAFETY: as in `lookup`.
    let reply = match unsafe { FLOWS.get(&key.reverse()).copied() } {
        Some(r) => r.kind != kind::POLICY_DROP && r.flags & flags::REPLY == 0,
        None => false,
    };
    let mut verdict = kind::TRACE;
    if meta.enforce && !reply && !policy_allows(&key) {
        let audit = config().is_some_and(|c| c.policy_audit != 0);
        verdict = if audit {
            kind::POLICY_AUDIT
        } else {
            kind::POLICY_DROP
        };
    }
    let st = FlowState {
        packets: 1,
        bytes: u64::from(meta.len),
        first_ns: now,
        last_emit_ns: now,
        kind: verdict,
        flags: if reply { flags::REPLY } else { 0 },
        tcp_seen: parsed.tcp_flags & (tcp::SYN | tcp::FIN | tcp::RST),
        _pad: [0; 5],
    };
    // A full LRU map evicts its oldest entry; insert only fails on memory
    // pressure, and the event below still reports the packet.
    let _ = FLOWS.insert(&key, &st, 0);
    let reason = if verdict == kind::POLICY_DROP {
        count(counter::POLICY_DROPS);
        emit::DROP
    } else {
        emit::NEW
    };
    send(&key, &st, &parsed, meta, reason, now, 0);
    if verdict == kind::POLICY_DROP {
        return false;
    }
    capture_l7(pkt, &key, &st, &parsed, meta, now, cfg);
    true
}

/// Copies the payload prefix of a DNS message or of a TCP segment that starts
/// like an HTTP/1.x head into the ring, behind the flow event. Userspace
/// parses it; nothing else is copied.
#[inline(always)]
fn capture_l7<P: Packet>(
    pkt: &P,
    key: &FlowKey,
    st: &FlowState,
    parsed: &Parsed,
    meta: &Meta,
    now: u64,
    cfg: Option<&Config>,
) {
    if parsed.payload_off == 0 || parsed.payload_len == 0 {
        return;
    }
    let Some(cfg) = cfg else {
        return;
    };
    let snap = cfg.l7_capture;
    if snap == 0 {
        return;
    }
    let dns = is_dns_port(&cfg.dns_ports, key.sport, key.dport);
    let proto = match key.proto {
        IPPROTO_UDP if dns => l7::DNS_UDP,
        IPPROTO_TCP if dns => l7::DNS_TCP,
        IPPROTO_TCP => match pkt.load::<6>(parsed.payload_off as usize) {
            Some(h) if looks_like_http([h[0], h[1], h[2], h[3]]) => l7::HTTP,
            Some(h) if looks_like_client_hello(h) => l7::TLS,
            _ => return,
        },
        _ => return,
    };
    let local = match key.point {
        point::CGROUP_EGRESS => Some(&key.src),
        point::CGROUP_INGRESS => Some(&key.dst),
        _ => None,
    };
    if let Some(local) = local
        && lookup(&ENDPOINTS, local).is_some_and(|e| e.flags & endpoint_flags::L7_AT_TC != 0)
    {
        return;
    }
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
    // SAFETY: `rec` is this CPU's scratch slot, valid and exclusively ours
    // while the program runs; `n` is in 1..=MAX_CAPTURE, the size of `data`.
    let ok = unsafe {
        fill_event(
            &raw mut (*rec).event,
            key,
            st,
            parsed,
            meta,
            emit::L7,
            now,
            0,
        );
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
        count(counter::L7_CAPTURED);
    }
}

/// Evaluates the policy map for a packet seen at a TC point.
#[inline(always)]
fn policy_allows(key: &FlowKey) -> bool {
    if !config().is_some_and(|c| c.policy_enabled != 0) {
        return true;
    }
    let (subject_addr, peer_addr, direction, isolated_bit) = match key.point {
        point::TC_INGRESS => (
            &key.src,
            &key.dst,
            dir::EGRESS,
            endpoint_flags::EGRESS_ISOLATED,
        ),
        point::TC_EGRESS => (
            &key.dst,
            &key.src,
            dir::INGRESS,
            endpoint_flags::INGRESS_ISOLATED,
        ),
        _ => return true,
    };
    let Some(subject) = lookup(&ENDPOINTS, subject_addr) else {
        return true;
    };
    if subject.flags & isolated_bit == 0 {
        return true;
    }
    let subject = subject.identity;
    let peer = match lookup(&ENDPOINTS, peer_addr) {
        Some(p) => p.identity,
        None => match CIDRS.get(&Key::new(128, *peer_addr)) {
            Some(id) => *id,
            None => identity::WORLD,
        },
    };
    let peers = [peer, identity::ANY];
    let ports = [(key.dport, key.proto), (0, key.proto), (0, 0)];
    let mut i = 0;
    while i < 2 {
        let mut j = 0;
        while j < 3 {
            let k = PolicyKey {
                subject,
                peer: peers[i],
                port: ports[j].0,
                proto: ports[j].1,
                dir: direction,
            };
            if lookup(&POLICY, &k).is_some() {
                return true;
            }
            j += 1;
        }
        i += 1;
    }
    false
}

#[inline(always)]
fn send(
    key: &FlowKey,
    st: &FlowState,
    parsed: &Parsed,
    meta: &Meta,
    reason: u8,
    now: u64,
    drop_reason: u32,
) {
    let Some(mut entry) = EVENTS.reserve::<FlowEvent>(0) else {
        count(counter::RING_FULL);
        return;
    };
    // Written field by field into the reserved slot: building the event on
    // the stack first would exceed the 512-byte BPF stack.
    // SAFETY: the slot is reserved, exclusively owned, of the right size and
    // alignment; `fill_event` writes every field before submit.
    unsafe {
        fill_event(
            entry.as_mut_ptr(),
            key,
            st,
            parsed,
            meta,
            reason,
            now,
            drop_reason,
        )
    };
    entry.submit(wake_flags());
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
#[allow(clippy::too_many_arguments)]
unsafe fn fill_event(
    ev: *mut FlowEvent,
    key: &FlowKey,
    st: &FlowState,
    parsed: &Parsed,
    meta: &Meta,
    reason: u8,
    now: u64,
    drop_reason: u32,
) {
    let mut f = st.flags & flags::REPLY;
    if parsed.has_eth {
        f |= flags::HAS_ETH;
    }
    // SAFETY: the caller's contract.
    unsafe {
        (*ev).ts_ns = now;
        (*ev).cgroup_id = meta.cgroup_id;
        (*ev).packets = st.packets;
        (*ev).bytes = st.bytes;
        (*ev).key = *key;
        (*ev).ifindex = meta.ifindex;
        (*ev).drop_reason = drop_reason;
        (*ev).kind = st.kind;
        (*ev).emit = reason;
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
