//! Turns kernel [`FlowEvent`]s into Hubble [`Flow`]s: addresses to endpoints,
//! kernel drop reasons to names, observation points to Hubble's, and a Summary
//! in Hubble's words.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use node_agent_ebpf::{FlowEvent, L7_RECORD_HEADER, L7Header, dir, emit, flags, kind, point, tcp};
use webb_proto::{
    flow::{
        CiliumEventType, DropReason, Emitter, Ethernet, Flow, FlowType, IcmPv4, IcmPv6, Ip,
        IpVersion, Layer4, NetworkInterface, Sctp, Tcp, TcpFlags, TraceObservationPoint,
        TraceReason, TrafficDirection, Udp, Verdict, WebbEmitReason, layer4,
    },
    names,
    wkt::{BoolValue, Timestamp},
};

use crate::{
    endpoints::EndpointTable,
    kernel::{DropReasons, hubble_drop_reason},
    l7,
    policy::CompiledPolicy,
};

/// Cilium's trace notification sub types (the observation point), which
/// Hubble's printers turn into `to-endpoint`, `from-endpoint`, ...
mod trace_subtype {
    pub const TO_ENDPOINT: i32 = 0;
    pub const TO_STACK: i32 = 3;
    pub const FROM_ENDPOINT: i32 = 5;
    pub const FROM_STACK: i32 = 8;
}

/// Everything the decoder needs to know about the node; replaced as a whole
/// when the endpoints or policy file changes.
#[derive(Clone)]
pub struct Context {
    pub node_name: String,
    pub endpoints: Arc<EndpointTable>,
    pub policy: Arc<CompiledPolicy>,
    pub drop_reasons: Arc<DropReasons>,
}

pub struct Decoder {
    pub ctx: Context,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, to date kernel timestamps.
    boot_offset_ns: i128,
    interfaces: HashMap<u32, String>,
    emitter: Emitter,
    /// L7 parsing and pairing, and the DNS names it learnt.
    pub l7: l7::Tracker,
}

/// What one ring record turned into. Not boxed: it is moved straight into
/// the batch, and a box would cost an allocation per flow.
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    Flow(Flow),
    /// Deliberately not shown (see `is_raw_socket_echo_reply`), or an L7
    /// payload that yields no flow (counted by the L7 tracker).
    Skipped,
    /// Too short for the record it claims to be: counted as lost.
    Undecodable,
}

impl Decoder {
    pub fn new(ctx: Context) -> Self {
        Self {
            ctx,
            boot_offset_ns: boot_offset_ns(),
            interfaces: HashMap::new(),
            emitter: Emitter {
                name: "webb".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            l7: l7::Tracker::new(l7::http::Redaction::default(), Default::default()),
        }
    }

    /// Decodes one ring record: a [`FlowEvent`], or an L7 record (the event,
    /// an [`L7Header`] and the payload).
    pub fn decode_record(&mut self, bytes: &[u8]) -> Decoded {
        let size = std::mem::size_of::<FlowEvent>();
        if bytes.len() < size {
            return Decoded::Undecodable;
        }
        // SAFETY: the record holds at least one FlowEvent, which is Pod;
        // read_unaligned tolerates any alignment.
        let ev: FlowEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        if ev.emit != emit::L7 {
            if is_raw_socket_echo_reply(&ev, self) {
                return Decoded::Skipped;
            }
            return Decoded::Flow(self.decode(&ev));
        }
        if bytes.len() < L7_RECORD_HEADER {
            return Decoded::Undecodable;
        }
        // SAFETY: as above; the header follows the event.
        let hdr: L7Header = unsafe { std::ptr::read_unaligned(bytes[size..].as_ptr().cast()) };
        let payload = &bytes[L7_RECORD_HEADER..];
        let Some(payload) = payload.get(..hdr.captured as usize) else {
            self.l7.counters.add(l7::Count::Error(l7::Error::BadRecord));
            return Decoded::Skipped;
        };
        match self.decode_l7(&ev, &hdr, payload) {
            Some(f) => Decoded::Flow(f),
            None => Decoded::Skipped,
        }
    }

    /// An L7 flow from a payload, or `None` when it yields none (counted).
    pub fn decode_l7(&mut self, ev: &FlowEvent, hdr: &L7Header, payload: &[u8]) -> Option<Flow> {
        let rec = self.l7.record(ev, hdr, payload)?;
        let mut f = self.decode(ev);
        f.r#type = FlowType::L7 as i32;
        f.event_type = Some(CiliumEventType {
            r#type: names::EVENT_L7,
            sub_type: 0,
        });
        f.l7 = Some(Box::new(rec.l7));
        #[allow(deprecated)]
        {
            f.summary = rec.summary;
        }
        f.is_reply = Some(BoolValue {
            value: rec.response,
        });
        #[allow(deprecated)]
        {
            f.reply = rec.response;
        }
        // As in Hubble's proxy records: no trace point or reason.
        f.trace_observation_point = TraceObservationPoint::UnknownPoint as i32;
        f.trace_reason = TraceReason::Unknown as i32;
        f.webb_emit_reason = WebbEmitReason::WebbEmitL7 as i32;
        f.webb_packets = 0;
        f.webb_bytes = 0;
        Some(f)
    }

    /// Re-reads the clock offset (it drifts when NTP slews the wall clock).
    pub fn refresh_clock(&mut self) {
        self.boot_offset_ns = boot_offset_ns();
    }

    fn interface_name(&mut self, ifindex: u32) -> String {
        if ifindex == 0 {
            return String::new();
        }
        self.interfaces
            .entry(ifindex)
            .or_insert_with(|| interface_name(ifindex).unwrap_or_default())
            .clone()
    }

    pub fn decode(&mut self, ev: &FlowEvent) -> Flow {
        let key = &ev.key;
        let src = l7::to_ip(&key.src, ev.ip_version);
        let dst = l7::to_ip(&key.dst, ev.ip_version);
        let reply = ev.flags & flags::REPLY != 0;
        let table = &self.ctx.endpoints;

        let (verdict, drop_reason, kernel_reason) = match ev.kind {
            kind::POLICY_DROP => (
                Verdict::Dropped,
                DropReason::PolicyDenied as i32,
                String::new(),
            ),
            kind::POLICY_AUDIT => (
                Verdict::Audit,
                DropReason::PolicyDenied as i32,
                String::new(),
            ),
            kind::KERNEL_DROP => {
                let name = self.ctx.drop_reasons.name(ev.drop_reason);
                (Verdict::Dropped, hubble_drop_reason(&name), name)
            }
            _ => (Verdict::Forwarded, 0, String::new()),
        };
        let is_drop = verdict == Verdict::Dropped;

        // The hook's direction from the pod's point of view; Hubble reports
        // the direction of the connection, so replies flip it.
        let hook_dir = match key.point {
            point::TC_INGRESS | point::CGROUP_EGRESS => Some(dir::EGRESS),
            point::TC_EGRESS | point::CGROUP_INGRESS => Some(dir::INGRESS),
            _ => {
                if table.by_ip(&dst).is_some() {
                    Some(dir::INGRESS)
                } else if table.by_ip(&src).is_some() {
                    Some(dir::EGRESS)
                } else {
                    None
                }
            }
        };
        let direction = match (hook_dir, reply) {
            (Some(dir::INGRESS), false) | (Some(dir::EGRESS), true) => TrafficDirection::Ingress,
            (Some(dir::EGRESS), false) | (Some(dir::INGRESS), true) => TrafficDirection::Egress,
            _ => TrafficDirection::Unknown,
        };
        let (obs_point, subtype) = match key.point {
            point::TC_INGRESS => (
                TraceObservationPoint::FromEndpoint,
                trace_subtype::FROM_ENDPOINT,
            ),
            point::TC_EGRESS => (
                TraceObservationPoint::ToEndpoint,
                trace_subtype::TO_ENDPOINT,
            ),
            point::CGROUP_EGRESS => (TraceObservationPoint::ToStack, trace_subtype::TO_STACK),
            point::CGROUP_INGRESS => (TraceObservationPoint::FromStack, trace_subtype::FROM_STACK),
            _ => (TraceObservationPoint::UnknownPoint, 0),
        };
        let event_type = if is_drop {
            CiliumEventType {
                r#type: names::EVENT_DROP,
                sub_type: drop_reason,
            }
        } else {
            CiliumEventType {
                r#type: names::EVENT_TRACE,
                sub_type: subtype,
            }
        };

        let (l4, summary) = layer4(ev);
        let source_service = table.service(&src, key.sport).cloned().map(Box::new);
        let destination_service = table.service(&dst, key.dport).cloned().map(Box::new);
        let mut source = table.endpoint_for(&src).clone();
        let mut destination = table.endpoint_for(&dst).clone();
        // A socket's own end is named with the pod its cgroup belongs to
        // when its address does not say (a host-network pod: the node's).
        // At TC the cgroup, when there is one, is the host socket's that
        // the cgroup programs noted: the end that is not the pod. A
        // loopback address is the socket's own too.
        if let Some(pod) = table.by_cgroup_id.get(&ev.cgroup_id) {
            let mine = match key.point {
                point::CGROUP_EGRESS | point::TC_EGRESS => Some(&mut source),
                point::CGROUP_INGRESS | point::TC_INGRESS => Some(&mut destination),
                _ => None,
            };
            let own_ip = match key.point {
                point::CGROUP_EGRESS | point::TC_EGRESS => &src,
                _ => &dst,
            };
            if let Some(end) = mine
                && end.pod_name.is_empty()
                && (end.identity == node_agent_ebpf::identity::HOST || own_ip.is_loopback())
            {
                *end = pod.proto.clone();
            }
        }
        let (source_names, destination_names) = if self.l7.names.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let names = &self.l7.names;
            (
                names.lookup(&key.dst, &src, ev.ts_ns).to_vec(),
                names.lookup(&key.src, &dst, ev.ts_ns).to_vec(),
            )
        };

        let (mut ingress_denied_by, mut egress_denied_by) = (Vec::new(), Vec::new());
        if ev.kind == kind::POLICY_DROP || ev.kind == kind::POLICY_AUDIT {
            match key.point {
                point::TC_EGRESS => {
                    ingress_denied_by = self
                        .ctx
                        .policy
                        .denied_by(destination.identity, dir::INGRESS)
                        .to_vec();
                }
                point::TC_INGRESS => {
                    egress_denied_by = self
                        .ctx
                        .policy
                        .denied_by(source.identity, dir::EGRESS)
                        .to_vec();
                }
                _ => {}
            }
        }

        let interface = if ev.ifindex != 0 {
            Some(NetworkInterface {
                index: ev.ifindex,
                name: self.interface_name(ev.ifindex),
            })
        } else {
            None
        };
        let time = Timestamp::from_nanos(self.boot_offset_ns + i128::from(ev.ts_ns));

        #[allow(deprecated)]
        Flow {
            time: Some(time),
            uuid: uuid_string(),
            emitter: Some(self.emitter.clone()),
            verdict: verdict as i32,
            drop_reason: drop_reason as u32,
            ethernet: (ev.flags & flags::HAS_ETH != 0).then(|| Ethernet {
                source: mac(&ev.eth_src),
                destination: mac(&ev.eth_dst),
            }),
            ip: Some(Ip {
                source: ip_string(&src),
                destination: ip_string(&dst),
                ip_version: if ev.ip_version == 6 {
                    IpVersion::IPv6
                } else {
                    IpVersion::IPv4
                } as i32,
                ..Default::default()
            }),
            l4,
            source: Some(source),
            destination: Some(destination),
            source_names,
            destination_names,
            r#type: FlowType::L3L4 as i32,
            node_name: self.ctx.node_name.clone(),
            node_labels: self.ctx.endpoints.node_labels.clone(),
            source_service,
            destination_service,
            event_type: Some(event_type),
            traffic_direction: direction as i32,
            trace_observation_point: obs_point as i32,
            trace_reason: if is_drop {
                TraceReason::Unknown
            } else if reply {
                TraceReason::Reply
            } else if ev.emit == emit::NEW {
                TraceReason::New
            } else {
                TraceReason::Established
            } as i32,
            drop_reason_desc: drop_reason,
            is_reply: (key.point != point::KFREE_SKB).then_some(BoolValue { value: reply }),
            reply,
            interface,
            cgroup_id: ev.cgroup_id,
            summary,
            ingress_denied_by,
            egress_denied_by,
            webb_kernel_drop_reason: kernel_reason,
            webb_packets: ev.packets,
            webb_bytes: ev.bytes,
            webb_emit_reason: emit_reason(ev.emit) as i32,
            ..Default::default()
        }
    }
}

fn emit_reason(e: u8) -> WebbEmitReason {
    match e {
        emit::NEW => WebbEmitReason::WebbEmitNew,
        emit::TCP_FLAGS => WebbEmitReason::WebbEmitTcpFlags,
        emit::FLUSH => WebbEmitReason::WebbEmitFlush,
        emit::DROP => WebbEmitReason::WebbEmitDrop,
        emit::L7 => WebbEmitReason::WebbEmitL7,
        _ => WebbEmitReason::Unknown,
    }
}

/// The bytes of an L7 ring record, as the kernel writes them: the event,
/// the header, the payload. For tests, benchmarks and fuzzers.
pub fn l7_record_bytes(ev: &FlowEvent, hdr: &L7Header, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(L7_RECORD_HEADER + payload.len());
    // SAFETY: both are Pod structs without padding, viewed as bytes for the
    // length of their own size.
    unsafe {
        out.extend_from_slice(std::slice::from_raw_parts(
            (ev as *const FlowEvent).cast::<u8>(),
            std::mem::size_of::<FlowEvent>(),
        ));
        out.extend_from_slice(std::slice::from_raw_parts(
            (hdr as *const L7Header).cast::<u8>(),
            std::mem::size_of::<L7Header>(),
        ));
    }
    out.extend_from_slice(payload);
    out
}

/// Root's `ping` reads echo replies through a raw socket, which receives a
/// clone; the kernel then frees the original as NO_SOCKET because no ICMP
/// datagram socket wanted it. That is not a lost packet, so it is not shown.
fn is_raw_socket_echo_reply(ev: &FlowEvent, decoder: &Decoder) -> bool {
    let echo_reply = matches!(
        (ev.key.proto, ev.icmp_type),
        (node_agent_ebpf::IPPROTO_ICMP, 0) | (node_agent_ebpf::IPPROTO_ICMPV6, 129)
    );
    ev.kind == kind::KERNEL_DROP
        && echo_reply
        && decoder.ctx.drop_reasons.name(ev.drop_reason) == "NO_SOCKET"
}

fn mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// The L4 section and Hubble's Summary text for it.
fn layer4(ev: &FlowEvent) -> (Option<Layer4>, String) {
    let k = &ev.key;
    let (proto, summary) = match k.proto {
        node_agent_ebpf::IPPROTO_TCP => {
            let f = ev.tcp_flags;
            let flags = TcpFlags {
                fin: f & tcp::FIN != 0,
                syn: f & tcp::SYN != 0,
                rst: f & tcp::RST != 0,
                psh: f & tcp::PSH != 0,
                ack: f & tcp::ACK != 0,
                urg: f & tcp::URG != 0,
                ece: f & tcp::ECE != 0,
                cwr: f & tcp::CWR != 0,
                ns: false,
            };
            let mut summary = String::with_capacity(32);
            summary.push_str("TCP Flags: ");
            summary.push_str(&tcp_flags_text(&flags));
            (
                layer4::Protocol::Tcp(Tcp {
                    source_port: k.sport.into(),
                    destination_port: k.dport.into(),
                    flags: Some(flags),
                }),
                summary,
            )
        }
        node_agent_ebpf::IPPROTO_UDP => (
            layer4::Protocol::Udp(Udp {
                source_port: k.sport.into(),
                destination_port: k.dport.into(),
            }),
            "UDP".to_owned(),
        ),
        node_agent_ebpf::IPPROTO_SCTP => (
            layer4::Protocol::Sctp(Sctp {
                source_port: k.sport.into(),
                destination_port: k.dport.into(),
            }),
            "SCTP".to_owned(),
        ),
        node_agent_ebpf::IPPROTO_ICMP => (
            layer4::Protocol::IcmPv4(IcmPv4 {
                r#type: ev.icmp_type.into(),
                code: ev.icmp_code.into(),
            }),
            format!("ICMPv4 {}", icmpv4_text(ev.icmp_type, ev.icmp_code)),
        ),
        node_agent_ebpf::IPPROTO_ICMPV6 => (
            layer4::Protocol::IcmPv6(IcmPv6 {
                r#type: ev.icmp_type.into(),
                code: ev.icmp_code.into(),
            }),
            format!("ICMPv6 {}", icmpv6_text(ev.icmp_type, ev.icmp_code)),
        ),
        other => return (None, format!("IP protocol {other}")),
    };
    (
        Some(Layer4 {
            protocol: Some(proto),
        }),
        summary,
    )
}

/// Flag names in Hubble's order: SYN, ACK, RST, FIN, PSH, URG, ECE, CWR, NS.
pub fn tcp_flags_text(f: &TcpFlags) -> String {
    let all = [
        (f.syn, "SYN"),
        (f.ack, "ACK"),
        (f.rst, "RST"),
        (f.fin, "FIN"),
        (f.psh, "PSH"),
        (f.urg, "URG"),
        (f.ece, "ECE"),
        (f.cwr, "CWR"),
        (f.ns, "NS"),
    ];
    let mut out = String::with_capacity(24);
    for (_, name) in all.iter().filter(|(set, _)| *set) {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(name);
    }
    out
}

/// An address as text. IPv4 is written by hand: `Display` goes through the
/// formatting machinery and was a tenth of the ingest profile.
pub fn ip_string(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut s = String::with_capacity(15);
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                if o >= 100 {
                    s.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    s.push(char::from(b'0' + o / 10 % 10));
                }
                s.push(char::from(b'0' + o % 10));
            }
            s
        }
        IpAddr::V6(v6) => v6.to_string(),
    }
}

/// A flow's UUID, in its hyphenated lower-case form: version 8 (RFC 9562,
/// custom), the first half a random number drawn once per agent process,
/// the second a counter. Unique like a random UUID (60 random bits per
/// process, then a count), and the flow store compresses a block's UUIDs
/// to a few bytes each, where random ones cost 25 of a demo flow's 60.
fn uuid_string() -> String {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let bytes = ((u128::from(prefix) << 64) | u128::from(n)).to_be_bytes();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
}

/// ICMPv4 type/code names as gopacket (and so Hubble) prints them.
pub fn icmpv4_text(t: u8, c: u8) -> String {
    let name = match t {
        0 => "EchoReply",
        3 => {
            let code = match c {
                0 => "Net",
                1 => "Host",
                2 => "Protocol",
                3 => "Port",
                4 => "FragmentationNeeded",
                13 => "CommAdminProhibited",
                _ => return format!("DestinationUnreachable(Code: {c})"),
            };
            return format!("DestinationUnreachable({code})");
        }
        5 => "Redirect",
        8 => "EchoRequest",
        11 => "TimeExceeded",
        12 => "ParameterProblem",
        _ => return format!("Type{t}(Code: {c})"),
    };
    name.to_owned()
}

pub fn icmpv6_text(t: u8, c: u8) -> String {
    let name = match t {
        1 => "DestinationUnreachable",
        2 => "PacketTooBig",
        3 => "TimeExceeded",
        4 => "ParameterProblem",
        128 => "EchoRequest",
        129 => "EchoReply",
        133 => "RouterSolicitation",
        134 => "RouterAdvertisement",
        135 => "NeighborSolicitation",
        136 => "NeighborAdvertisement",
        _ => return format!("Type{t}(Code: {c})"),
    };
    name.to_owned()
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_MONOTONIC in nanoseconds: the kernel's `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

fn boot_offset_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC)
}

fn interface_name(ifindex: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes into buf.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(test)]
mod tests;
