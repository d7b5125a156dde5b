//! Types shared by webb's kernel programs and the userspace agent, and the
//! packet parser both use.
//!
//! Every struct here is `#[repr(C)]`, `Copy`, with explicit padding fields so
//! its layout is the same for the BPF target and the host. The parser is
//! generic over [`Packet`], so `cargo test` (and the fuzzers) run the very code
//! the kernel runs, on byte slices.
//!
//! Architecture invariant: a change to any struct here changes the kernel
//! object too; node-agent's build.rs rebuilds the object when this file
//! changes, so the two can never disagree silently.
#![no_std]

/// Where in the datapath a packet was seen. Part of the flow key, so the same
/// 5-tuple seen at two points is two flows, as in Hubble.
pub mod point {
    /// TC ingress on a watched interface: the host side of a pod's veth, so
    /// the packet is leaving the pod (Hubble's FROM_ENDPOINT, pod egress).
    pub const TC_INGRESS: u8 = 1;
    /// TC egress on a watched interface: the packet is entering the pod
    /// (Hubble's TO_ENDPOINT, pod ingress).
    pub const TC_EGRESS: u8 = 2;
    /// cgroup_skb egress: a socket of the watched cgroup sends (TO_STACK).
    pub const CGROUP_EGRESS: u8 = 3;
    /// cgroup_skb ingress: a socket of the watched cgroup receives (FROM_STACK).
    pub const CGROUP_INGRESS: u8 = 4;
    /// skb:kfree_skb: the kernel freed the packet as a drop.
    pub const KFREE_SKB: u8 = 5;
}

/// What the datapath decided about the packet that produced an event.
pub mod kind {
    pub const TRACE: u8 = 1;
    /// Dropped by webb's policy map.
    pub const POLICY_DROP: u8 = 2;
    /// Would have been dropped by policy; let through because of audit mode.
    pub const POLICY_AUDIT: u8 = 3;
    /// Dropped by the kernel itself, seen at skb:kfree_skb.
    pub const KERNEL_DROP: u8 = 4;
}

/// Why the datapath sent an event for a flow it already tracks.
pub mod emit {
    pub const NEW: u8 = 1;
    pub const TCP_FLAGS: u8 = 2;
    pub const FLUSH: u8 = 3;
    pub const DROP: u8 = 4;
    /// An [`L7Record`]: the packet's payload prefix follows the event.
    pub const L7: u8 = 5;
}

/// Application protocols whose payloads the datapath copies
/// ([`L7Header::proto`]).
pub mod l7 {
    /// DNS over UDP, or over TCP with its 2-byte length prefix.
    pub const DNS_UDP: u8 = 1;
    pub const DNS_TCP: u8 = 2;
    /// A TCP segment that starts like an HTTP/1.x request or status line.
    pub const HTTP: u8 = 3;
    /// A TCP segment that starts a TLS handshake record holding a
    /// ClientHello.
    pub const TLS: u8 = 4;
}

/// The bytes a TLS ClientHello's copy takes at least (the hello's
/// extensions, SNI among them, often come after a kilobyte of key shares),
/// whatever [`Config::l7_capture`] asks for.
pub const TLS_CAPTURE: u32 = 2048;

/// The most payload bytes one L7 record can carry, whatever
/// [`Config::l7_capture`] asks for.
pub const MAX_CAPTURE: usize = 4096;
/// How many DNS ports [`Config::dns_ports`] holds.
pub const DNS_PORTS: usize = 8;

/// Bits of [`FlowEvent::flags`] and [`FlowState::flags`].
pub mod flags {
    /// The packet belongs to the reverse direction of a tracked flow.
    pub const REPLY: u8 = 1;
    /// The event carries Ethernet addresses (events only).
    pub const HAS_ETH: u8 = 2;
    /// The flow's payloads are not looked at for L7 at this point: another
    /// point of this node reports them, or its first payload was neither
    /// HTTP nor a TLS ClientHello (state only).
    pub const NO_L7: u8 = 4;
    /// Set from the flow's SYN until its first payload, which starts the
    /// stream and so alone decides whether later payloads can be HTTP: a
    /// stream that starts otherwise is not looked at again (state only).
    pub const STREAM_START: u8 = 8;
}

/// TCP flag bits as in the TCP header's 13th byte (plus NS from the 12th).
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Indexes of the per-CPU counters array.
pub mod counter {
    /// Events the ring buffer had no room for (Hubble's lost events at the
    /// perf/ring buffer).
    pub const RING_FULL: u32 = 0;
    /// Packets whose headers could not be parsed (truncated or malformed).
    pub const MALFORMED: u32 = 1;
    /// Packets that were not IPv4/IPv6 (ARP, LLDP, garbage ethertypes).
    pub const NOT_IP: u32 = 2;
    /// Packets seen by the TC and cgroup programs.
    pub const PACKETS: u32 = 3;
    /// Packets dropped by policy.
    pub const POLICY_DROPS: u32 = 4;
    /// L7 payloads copied into the ring.
    pub const L7_CAPTURED: u32 = 5;
    /// L7 payloads the ring had no room for (also counted in RING_FULL).
    pub const L7_RING_FULL: u32 = 6;
    /// Packets the cgroup programs did not report themselves: TC reports
    /// them at a pod's interface (see [`super::cgroup_role`]).
    pub const LEFT_TO_TC: u32 = 7;
    /// Events (flow reports and L7 records) written to the ring.
    pub const EVENTS: u32 = 8;
    pub const COUNT: u32 = 9;
}

/// Policy directions, relative to the subject endpoint.
pub mod dir {
    pub const INGRESS: u8 = 1;
    pub const EGRESS: u8 = 2;
}

/// Bits of [`EndpointInfo::flags`].
pub mod endpoint_flags {
    /// A NetworkPolicy selects this endpoint for ingress: what no rule allows
    /// is denied.
    pub const INGRESS_ISOLATED: u32 = 1;
    pub const EGRESS_ISOLATED: u32 = 2;
    /// The endpoint's interface is watched by the TC programs, which report
    /// its traffic where it leaves and enters the pod; the cgroup programs
    /// leave it to them (see [`super::cgroup_role`]), so a packet is
    /// reported once per point.
    pub const AT_TC: u32 = 4;
    /// The endpoint lives on this node (it has a watched interface or
    /// cgroup, or is the node itself); others are remote pods, known for
    /// their identity. Kernel drops are reported only for local endpoints,
    /// so that agents sharing a kernel (a lab) do not report each other's.
    pub const LOCAL: u32 = 8;
}

/// Reserved identities, as Cilium numbers them.
pub mod identity {
    /// Any peer: the wildcard in policy keys.
    pub const ANY: u32 = 0;
    pub const HOST: u32 = 1;
    pub const WORLD: u32 = 2;
    /// Another node of the cluster (Cilium's `reserved:remote-node`).
    pub const REMOTE_NODE: u32 = 6;
}

/// An address in IPv6 form; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`).
pub type Addr = [u8; 16];

/// A flow: 5-tuple plus the observation point. For ICMP echo both ports hold
/// the echo identifier, so a request and its reply are each other's reverse.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub point: u8,
    pub _pad: [u8; 2],
}

impl FlowKey {
    /// The key the other direction of this flow has at the opposite point of
    /// the same interface or cgroup.
    #[inline(always)]
    pub fn reverse(&self) -> Self {
        let point = match self.point {
            point::TC_INGRESS => point::TC_EGRESS,
            point::TC_EGRESS => point::TC_INGRESS,
            point::CGROUP_EGRESS => point::CGROUP_INGRESS,
            point::CGROUP_INGRESS => point::CGROUP_EGRESS,
            p => p,
        };
        Self {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            point,
            _pad: [0; 2],
        }
    }
}

/// Per-flow state in the kernel's LRU map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowState {
    /// Packets and bytes since the flow was last reported; a report carries
    /// them and starts them over.
    pub packets: u64,
    pub bytes: u64,
    /// When the flow was last reported, on the coarse monotonic clock.
    pub last_emit_ns: u64,
    /// One of [`kind`]: the verdict given to the flow's first packet.
    pub kind: u8,
    /// Bits of [`flags`]: REPLY when the flow is the reverse of an earlier
    /// one, NO_L7, STREAM_START.
    pub flags: u8,
    /// Union of the TCP flags seen, to report each flag change once.
    pub tcp_seen: u8,
    pub _pad: [u8; 5],
}

/// Why a tracked flow's packet is reported, if it is: the first time a
/// TCP flag (SYN, FIN, RST) shows on the flow, every packet once it has
/// closed (FIN or RST seen), so that its last counts are reported, and a
/// busy flow again once `flush_ns` has passed since its last report.
#[inline(always)]
pub fn report_reason(st: &FlowState, tcp_flags: u8, now_ns: u64, flush_ns: u64) -> Option<u8> {
    const STATE: u8 = tcp::SYN | tcp::FIN | tcp::RST;
    let closed = st.tcp_seen & (tcp::FIN | tcp::RST) != 0;
    let due = flush_ns != 0 && now_ns.saturating_sub(st.last_emit_ns) >= flush_ns;
    if tcp_flags & STATE & !st.tcp_seen != 0 {
        Some(emit::TCP_FLAGS)
    } else if closed || due {
        Some(emit::FLUSH)
    } else {
        None
    }
}

/// What a cgroup program does with a packet of a socket in its cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupRole {
    /// Track and report it (to-stack, from-stack): a host process or
    /// host-network pod talking to anything but a pod watched here.
    Report,
    /// Nothing: the socket's pod has a watched interface, where TC reports
    /// the packet leaving and entering the pod; or its address is another
    /// node's pod (agents sharing one kernel in a lab), which that node
    /// reports.
    Skip,
    /// Note the socket's cgroup for the 5-tuple, which TC adds to its
    /// report at the peer pod's interface: a host socket talking to a pod
    /// watched here.
    NameForTc,
}

/// The role of a cgroup program for a packet between a socket in its
/// cgroup (`local`) and a peer, from their entries in the endpoint map.
/// With every trace point on (`trace_all`) the cgroup programs report
/// everything.
#[inline(always)]
pub fn cgroup_role(
    local: Option<EndpointInfo>,
    peer: Option<EndpointInfo>,
    trace_all: bool,
) -> CgroupRole {
    let at_tc = |e: Option<EndpointInfo>| e.is_some_and(|e| e.flags & endpoint_flags::AT_TC != 0);
    let remote = local.is_some_and(|e| e.flags & endpoint_flags::LOCAL == 0);
    if trace_all {
        CgroupRole::Report
    } else if at_tc(local) || remote {
        CgroupRole::Skip
    } else if at_tc(peer) {
        CgroupRole::NameForTc
    } else {
        CgroupRole::Report
    }
}

/// Does a TC point leave a flow's L7 payloads (DNS messages, HTTP heads) to
/// another point of this node? Each message is copied once per node: at
/// the server's interface when the server is a pod watched here (the
/// request entering it, the response leaving it), else at the client's,
/// so both halves of an exchange are seen from one end, as one proxy sees
/// them. `server` is the endpoint-map entry of the flow's server end (the
/// destination, or the source of a reply); it is needed only when the pod
/// at this interface is the client.
#[inline(always)]
pub fn l7_elsewhere(point: u8, reply: bool, server: Option<EndpointInfo>, trace_all: bool) -> bool {
    !trace_all
        && client_side(point, reply)
        && server.is_some_and(|e| e.flags & endpoint_flags::AT_TC != 0)
}

/// Is the pod at this TC point the connection's client: its request leaving
/// (TC ingress) or a reply entering it (TC egress)?
#[inline(always)]
pub fn client_side(point: u8, reply: bool) -> bool {
    match point {
        point::TC_INGRESS => !reply,
        point::TC_EGRESS => reply,
        _ => false,
    }
}

/// One record in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC); userspace adds the boot offset.
    pub ts_ns: u64,
    pub cgroup_id: u64,
    /// Packets and bytes of this flow (key) since its previous report,
    /// this packet's included; 0 in L7 records.
    pub packets: u64,
    pub bytes: u64,
    pub key: FlowKey,
    pub ifindex: u32,
    /// For kernel drops, the `enum skb_drop_reason` value.
    pub drop_reason: u32,
    /// One of [`kind`].
    pub kind: u8,
    /// One of [`emit`].
    pub emit: u8,
    /// TCP flags of the packet that produced the event.
    pub tcp_flags: u8,
    /// Bits of [`flags`].
    pub flags: u8,
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// 4 or 6.
    pub ip_version: u8,
    pub _pad: u8,
    /// Length of the packet that produced the event.
    pub pkt_len: u32,
}

/// What follows a [`FlowEvent`] whose `emit` is [`emit::L7`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct L7Header {
    /// TCP sequence number of the segment (0 for UDP): a retransmitted
    /// segment repeats it.
    pub tcp_seq: u32,
    /// Payload bytes the packet carried.
    pub payload_len: u32,
    /// Payload bytes copied after this header (at most [`MAX_CAPTURE`]).
    pub captured: u32,
    /// One of [`l7`].
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// The ring record for an L7 payload: the flow event, the header, then
/// `header.captured` bytes of payload (the record is cut there).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct L7Record {
    pub event: FlowEvent,
    pub header: L7Header,
    pub data: [u8; MAX_CAPTURE],
}

/// Bytes of an [`L7Record`] before its payload.
pub const L7_RECORD_HEADER: usize =
    core::mem::size_of::<FlowEvent>() + core::mem::size_of::<L7Header>();

/// Key of the policy map: may `subject` talk to/hear from `peer` on `port`
/// with `proto` in direction `dir`? Zero in `peer`, `port` or `proto` is a
/// wildcard entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyKey {
    pub subject: u32,
    pub peer: u32,
    pub port: u16,
    pub proto: u8,
    pub dir: u8,
}

/// Value of the endpoint map, keyed by [`Addr`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    pub identity: u32,
    /// Bits of [`endpoint_flags`].
    pub flags: u32,
}

/// What the policy decision reads: the kernel's policy map, or the agent's
/// compiled policy. Both answer through [`rules_allow`] and
/// [`policy_allows`], so the decision the kernel enforces is the one the
/// host tests, fuzzes and replays (`webb policy what-if`).
pub trait PolicyRules {
    /// Is there an entry for exactly this key (wildcards are entries of
    /// their own)?
    fn has_rule(&self, key: &PolicyKey) -> bool;
}

/// [`PolicyRules`] with the endpoint and CIDR maps, for decisions on
/// addresses.
pub trait PolicyMaps: PolicyRules {
    fn endpoint(&self, addr: &Addr) -> Option<EndpointInfo>;
    /// The identity of the longest CIDR prefix holding `addr`, if any.
    fn cidr_identity(&self, addr: &Addr) -> Option<u32>;
}

/// Do the rules let `peer` reach `subject` (ingress) or `subject` reach
/// `peer` (egress) on `port`/`proto`, the subject being isolated in that
/// direction? A rule for the peer or for any peer, on the port, on any
/// port of the protocol, or on anything, allows.
#[inline(always)]
pub fn rules_allow<R: PolicyRules + ?Sized>(
    rules: &R,
    subject: u32,
    peer: u32,
    port: u16,
    proto: u8,
    direction: u8,
) -> bool {
    let peers = [peer, identity::ANY];
    let ports = [(port, proto), (0, proto), (0, 0)];
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
            if rules.has_rule(&k) {
                return true;
            }
            j += 1;
        }
        i += 1;
    }
    false
}

/// The policy decision for the first packet of a flow at a TC point: at TC
/// ingress (leaving a pod) the sender's egress rules, at TC egress
/// (entering a pod) the receiver's ingress rules. An endpoint that no
/// policy isolates in that direction, or an address that is no endpoint,
/// allows everything; a peer that is no endpoint is its CIDR's identity,
/// else `world`. Other points always allow: policy is enforced at TC.
#[inline(always)]
pub fn policy_allows<M: PolicyMaps + ?Sized>(maps: &M, key: &FlowKey) -> bool {
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
    let Some(subject) = maps.endpoint(subject_addr) else {
        return true;
    };
    if subject.flags & isolated_bit == 0 {
        return true;
    }
    let peer = match maps.endpoint(peer_addr) {
        Some(p) => p.identity,
        None => match maps.cidr_identity(peer_addr) {
            Some(id) => id,
            None => identity::WORLD,
        },
    };
    rules_allow(
        maps,
        subject.identity,
        peer,
        key.dport,
        key.proto,
        direction,
    )
}

/// Runtime configuration, element 0 of the config array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// Report a tracked flow again after this long with traffic (0: never).
    pub flush_ns: u64,
    /// Non-zero when a policy is loaded and enforced.
    pub policy_enabled: u32,
    /// Non-zero: policy denials pass with verdict AUDIT.
    pub policy_audit: u32,
    /// Offsets in `struct sk_buff` (from BTF) for the kfree_skb program.
    pub skb_head_off: u32,
    pub skb_network_header_off: u32,
    /// Offsets in the skb:kfree_skb tracepoint record (from its format file).
    pub tp_skbaddr_off: u32,
    pub tp_protocol_off: u32,
    pub tp_reason_off: u32,
    /// Non-zero when the offsets above are valid.
    pub kfree_enabled: u32,
    /// Payload bytes to copy for DNS and HTTP (0: no L7 capture).
    pub l7_capture: u32,
    /// Kernel drop reasons that are not network drops (a socket's queue
    /// purged on close): the kfree_skb program skips them. 0 is unused.
    pub kfree_skip: [u32; 2],
    /// Non-zero when other agents share this kernel (lab nodes in network
    /// namespaces): a kernel drop is reported only when it was headed for
    /// a local endpoint, or came from one and was not headed for another
    /// node's pod, so each drop is reported by one node.
    pub kfree_shared_kernel: u32,
    /// UDP/TCP ports whose traffic is DNS; 0 ends the list.
    pub dns_ports: [u16; DNS_PORTS],
    /// Non-zero: every program reports every packet at its own point
    /// (`--trace-points all`), for debugging. Zero: each packet is reported
    /// once per point as Cilium reports it (see [`cgroup_role`]).
    pub trace_all: u32,
    /// Non-zero when the cgroup programs are attached: TC reports look up
    /// the host socket's cgroup they noted ([`CgroupRole::NameForTc`]).
    pub cgroup_names: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, and have no implicit padding, so
    // every byte pattern is a valid value.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowState {}
    unsafe impl aya::Pod for super::FlowEvent {}
    unsafe impl aya::Pod for super::L7Header {}
    unsafe impl aya::Pod for super::PolicyKey {}
    unsafe impl aya::Pod for super::EndpointInfo {}
    unsafe impl aya::Pod for super::Config {}
}

/// Byte access to a packet: bounds-checked loads at an offset.
pub trait Packet {
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
}

impl Packet for &[u8] {
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        let bytes = self.get(offset..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Some(out)
    }
}

/// Why a packet could not be turned into a flow key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not IPv4 or IPv6: counted, not an error.
    NotIp,
    /// Shorter than its headers claim, or headers with impossible values.
    Malformed,
}

/// What the parser extracts from one packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(8))]
pub struct Parsed {
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub ip_version: u8,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub has_eth: bool,
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    /// TCP sequence number.
    pub tcp_seq: u32,
    /// Offset of the TCP/UDP payload (0: none, or not a first fragment).
    pub payload_off: u32,
    /// Payload length as the IP and UDP headers give it; the packet may
    /// hold fewer bytes (a GSO packet's IP length is the whole burst's).
    pub payload_len: u32,
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

/// Maps an IPv4 address into [`Addr`] form.
#[inline(always)]
pub fn v4_mapped(a: [u8; 4]) -> Addr {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// Where the transport header of a packet parsed up to its IP header(s)
/// is: what [`parse_l4`] needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L4Start {
    /// Offset of the transport header.
    pub offset: usize,
    /// Where the IP packet ends by its own length field (0: unknown).
    pub ip_end: usize,
    /// Later fragments carry no transport header.
    pub first_fragment: bool,
}

/// Parses a packet. With `with_eth` it starts at an Ethernet header (TC),
/// otherwise at the IP header (cgroup_skb, where `l3_proto` gives the family).
#[inline(always)]
pub fn parse_packet<P: Packet>(
    p: &P,
    with_eth: bool,
    l3_proto: u16,
    out: &mut Parsed,
) -> Result<(), ParseError> {
    let l4 = parse_l3(p, with_eth, l3_proto, out)?;
    parse_l4(p, l4, out)
}

/// The first half of [`parse_packet`]: the Ethernet and IP headers, so
/// that a program can decide from the addresses alone whether the packet
/// is its to report before reading further.
#[inline(always)]
pub fn parse_l3<P: Packet>(
    p: &P,
    with_eth: bool,
    l3_proto: u16,
    out: &mut Parsed,
) -> Result<L4Start, ParseError> {
    let mut off = 0usize;
    let mut ethertype = l3_proto;
    if with_eth {
        let eth: [u8; 14] = p.load(0).ok_or(ParseError::Malformed)?;
        out.has_eth = true;
        out.eth_dst.copy_from_slice(&eth[0..6]);
        out.eth_src.copy_from_slice(&eth[6..12]);
        ethertype = u16::from_be_bytes([eth[12], eth[13]]);
        off = 14;
        // Up to two VLAN tags (QinQ).
        let mut i = 0;
        while i < 2 && (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) {
            let tag: [u8; 4] = p.load(off).ok_or(ParseError::Malformed)?;
            ethertype = u16::from_be_bytes([tag[2], tag[3]]);
            off += 4;
            i += 1;
        }
    }
    let l4_off;
    // Where the IP packet ends, by its own length field (0: unknown).
    let ip_end;
    let mut proto;
    let mut first_fragment = true;
    match ethertype {
        ETH_P_IP => {
            let ip: [u8; 20] = p.load(off).ok_or(ParseError::Malformed)?;
            if ip[0] >> 4 != 4 {
                return Err(ParseError::Malformed);
            }
            let ihl = ((ip[0] & 0x0f) as usize) * 4;
            if ihl < 20 {
                return Err(ParseError::Malformed);
            }
            out.ip_version = 4;
            proto = ip[9];
            out.src = v4_mapped([ip[12], ip[13], ip[14], ip[15]]);
            out.dst = v4_mapped([ip[16], ip[17], ip[18], ip[19]]);
            let frag_off = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
            first_fragment = frag_off == 0;
            l4_off = off + ihl;
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            ip_end = if total == 0 { 0 } else { off + total };
        }
        ETH_P_IPV6 => {
            // Loaded in parts to keep the BPF stack small.
            let ip: [u8; 8] = p.load(off).ok_or(ParseError::Malformed)?;
            if ip[0] >> 4 != 6 {
                return Err(ParseError::Malformed);
            }
            out.ip_version = 6;
            proto = ip[6];
            let payload = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            ip_end = if payload == 0 { 0 } else { off + 40 + payload };
            out.src = p.load(off + 8).ok_or(ParseError::Malformed)?;
            out.dst = p.load(off + 24).ok_or(ParseError::Malformed)?;
            let mut next_off = off + 40;
            // Skip up to four extension headers; what lies beyond is reported
            // with the last next-header value and no ports.
            let mut i = 0;
            while i < 4 {
                match proto {
                    0 | 43 | 60 => {
                        let h: [u8; 2] = p.load(next_off).ok_or(ParseError::Malformed)?;
                        proto = h[0];
                        next_off += (h[1] as usize + 1) * 8;
                    }
                    51 => {
                        let h: [u8; 2] = p.load(next_off).ok_or(ParseError::Malformed)?;
                        proto = h[0];
                        next_off += (h[1] as usize + 2) * 4;
                    }
                    44 => {
                        let h: [u8; 4] = p.load(next_off).ok_or(ParseError::Malformed)?;
                        proto = h[0];
                        first_fragment = (u16::from_be_bytes([h[2], h[3]]) >> 3) == 0;
                        next_off += 8;
                    }
                    _ => break,
                }
                i += 1;
            }
            l4_off = next_off;
        }
        _ => return Err(ParseError::NotIp),
    }
    out.proto = proto;
    Ok(L4Start {
        offset: l4_off,
        ip_end,
        first_fragment,
    })
}

/// The second half of [`parse_packet`]: ports, TCP flags and sequence,
/// ICMP type, and where the payload is.
#[inline(always)]
pub fn parse_l4<P: Packet>(p: &P, l4: L4Start, out: &mut Parsed) -> Result<(), ParseError> {
    if !l4.first_fragment {
        // Later fragments carry no L4 header.
        return Ok(());
    }
    let (l4_off, ip_end, proto) = (l4.offset, l4.ip_end, out.proto);
    match proto {
        IPPROTO_TCP => {
            let t: [u8; 14] = p.load(l4_off).ok_or(ParseError::Malformed)?;
            out.sport = u16::from_be_bytes([t[0], t[1]]);
            out.dport = u16::from_be_bytes([t[2], t[3]]);
            out.tcp_flags = t[13];
            out.tcp_seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
            let doff = (t[12] >> 4) as usize * 4;
            if doff < 20 {
                return Err(ParseError::Malformed);
            }
            set_payload(out, l4_off + doff, ip_end, 0);
        }
        IPPROTO_UDP => {
            let u: [u8; 8] = p.load(l4_off).ok_or(ParseError::Malformed)?;
            out.sport = u16::from_be_bytes([u[0], u[1]]);
            out.dport = u16::from_be_bytes([u[2], u[3]]);
            let udp_len = u16::from_be_bytes([u[4], u[5]]) as usize;
            let udp_end = if udp_len == 0 { 0 } else { l4_off + udp_len };
            set_payload(out, l4_off + 8, ip_end, udp_end);
        }
        IPPROTO_SCTP => {
            let u: [u8; 4] = p.load(l4_off).ok_or(ParseError::Malformed)?;
            out.sport = u16::from_be_bytes([u[0], u[1]]);
            out.dport = u16::from_be_bytes([u[2], u[3]]);
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let c: [u8; 8] = p.load(l4_off).ok_or(ParseError::Malformed)?;
            out.icmp_type = c[0];
            out.icmp_code = c[1];
            // Echo request/reply (v4: 8/0, v6: 128/129): key on the identifier
            // in both ports so the reply is the request's reverse.
            let echo = matches!(
                (proto, c[0]),
                (IPPROTO_ICMP, 0 | 8) | (IPPROTO_ICMPV6, 128 | 129)
            );
            if echo {
                let id = u16::from_be_bytes([c[4], c[5]]);
                out.sport = id;
                out.dport = id;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Records where the L4 payload starts and how long the headers say it is.
/// An end of 0 is unknown (an IP length of 0 on a GSO or jumbo packet); with
/// both unknown the payload runs to the end of the packet, which the kernel
/// bounds by the packet's length.
#[inline(always)]
fn set_payload(out: &mut Parsed, start: usize, ip_end: usize, l4_end: usize) {
    let mut end = usize::MAX;
    if ip_end != 0 {
        end = ip_end;
    }
    if l4_end != 0 && l4_end < end {
        end = l4_end;
    }
    out.payload_off = start as u32;
    out.payload_len = if end == usize::MAX {
        u32::MAX
    } else {
        end.saturating_sub(start) as u32
    };
}

/// Is one of the ports a DNS port? `ports` ends at its first 0.
#[inline(always)]
pub fn is_dns_port(ports: &[u16; DNS_PORTS], sport: u16, dport: u16) -> bool {
    let mut i = 0;
    while i < DNS_PORTS {
        let p = ports[i];
        if p == 0 {
            return false;
        }
        if p == sport || p == dport {
            return true;
        }
        i += 1;
    }
    false
}

/// Does a TCP payload start like an HTTP/1.x request line (a method and a
/// space) or a status line (`HTTP/`)? Userspace parses it properly; this
/// only keeps other traffic out of the ring.
#[inline(always)]
pub fn looks_like_http(head: [u8; 4]) -> bool {
    matches!(
        &head,
        b"GET "
            | b"HEAD"
            | b"POST"
            | b"PUT "
            | b"DELE"
            | b"PATC"
            | b"OPTI"
            | b"CONN"
            | b"TRAC"
            | b"HTTP"
    )
}

/// A TLS record carrying a ClientHello: content type 22 (handshake),
/// version 3.0 to 3.4, then handshake type 1 after the 2-byte length.
#[inline(always)]
pub fn looks_like_client_hello(head: [u8; 6]) -> bool {
    head[0] == 22 && head[1] == 3 && head[2] <= 4 && head[5] == 1
}

#[cfg(any(test, feature = "testing"))]
extern crate std;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;
