//! The ring's storage: flows as compact records that share what they have
//! in common.
//!
//! Most flows of a node differ from many others only in their time, UUID,
//! L4 ports, TCP flags and packet and byte counts; everything else (the
//! endpoints and their labels, addresses, verdict, observation point,
//! summary, interface, node) repeats for every packet of a conversation.
//! A [`Compact`] record keeps the first kind of field (56 bytes) and points
//! at a shared [`Shape`], the flow with those fields cleared, interned in
//! [`Shapes`]. A flow is built back only when a query returns it, and is
//! then equal to the one stored: what a record cannot hold exactly (an L7
//! flow, a UUID not in canonical form, a port above 65535, a response whose
//! time or node differs from its flow's) stays whole, as [`Entry::Other`].
//!
//! Whether two flows have the same shape is decided by comparing every
//! field but the record's, in a function that names each field of `Flow`
//! (so a field added to the proto does not compile until it is placed).

use std::{collections::HashMap, hash::BuildHasher as _, sync::Arc};

use webb_proto::{
    filter::ItemKey,
    flow::{Flow, Ip, Layer4, Sctp, Tcp, TcpFlags, Udp, layer4::Protocol},
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
    wkt::Timestamp,
};

use super::Item;

/// A ring entry.
#[derive(Clone)]
pub enum Entry {
    Flow(Compact),
    /// Kept whole: not a flow, or a flow a record cannot hold exactly.
    Other(Item),
}

/// The fields in which flows of one shape differ.
#[derive(Clone)]
pub struct Compact {
    shape: Arc<Shape>,
    time_ns: i64,
    bytes: u64,
    packets: u32,
    sport: u16,
    dport: u16,
    /// [`HAS_UUID`], [`HAS_TCP_FLAGS`] and the TCP flags (bit 0 FIN .. bit
    /// 8 NS).
    bits: u16,
    uuid: [u8; 16],
}

const HAS_UUID: u16 = 1 << 14;
const HAS_TCP_FLAGS: u16 = 1 << 15;

/// A flow with the record's fields cleared, shared by its records.
pub struct Shape {
    flow: Flow,
    /// The filter key of the shape; a record adds its ports.
    key: ItemKey,
    /// L4 with ports (TCP, UDP, SCTP): the ports are the record's.
    ported: bool,
}

impl Entry {
    pub fn of(item: &Item, shapes: &mut Shapes) -> Self {
        match Compact::of(item, shapes) {
            Some(c) => Entry::Flow(c),
            None => Entry::Other(item.clone()),
        }
    }

    pub fn time(&self) -> Option<Timestamp> {
        match self {
            Entry::Flow(c) => Some(c.time()),
            Entry::Other(i) => i.time,
        }
    }

    /// The stored response, built back.
    pub fn item(&self) -> Item {
        match self {
            Entry::Flow(c) => c.item(),
            Entry::Other(i) => i.clone(),
        }
    }

    /// The key a query may rule the entry out by, before building a flow.
    pub fn key(&self) -> ItemKey {
        match self {
            Entry::Flow(c) if c.shape.ported => c.shape.key.with_ports(c.sport, c.dport),
            Entry::Flow(c) => c.shape.key,
            Entry::Other(i) => match &i.response_types {
                Some(ResponseTypes::Flow(f)) => ItemKey::of_flow(f),
                _ => ItemKey::non_flow(),
            },
        }
    }
}

impl Compact {
    fn of(item: &GetFlowsResponse, shapes: &mut Shapes) -> Option<Self> {
        let Some(ResponseTypes::Flow(f)) = &item.response_types else {
            return None;
        };
        if f.l7.is_some() || item.time != f.time || item.node_name != f.node_name {
            return None;
        }
        let t = f.time?;
        if !(0..1_000_000_000).contains(&t.nanos) {
            return None;
        }
        let time_ns = t
            .seconds
            .checked_mul(1_000_000_000)?
            .checked_add(i64::from(t.nanos))?;
        let mut bits = 0;
        let mut uuid = [0; 16];
        if !f.uuid.is_empty() {
            uuid = canonical_uuid(&f.uuid)?;
            bits |= HAS_UUID;
        }
        let (mut sport, mut dport) = (0, 0);
        let port = |p: u32| u16::try_from(p).ok();
        match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
            Some(Protocol::Tcp(t)) => {
                (sport, dport) = (port(t.source_port)?, port(t.destination_port)?);
                if let Some(fl) = &t.flags {
                    bits |= HAS_TCP_FLAGS | tcp_bits(fl);
                }
            }
            Some(Protocol::Udp(u)) => {
                (sport, dport) = (port(u.source_port)?, port(u.destination_port)?)
            }
            Some(Protocol::Sctp(s)) => {
                (sport, dport) = (port(s.source_port)?, port(s.destination_port)?)
            }
            _ => {}
        }
        Some(Self {
            shape: shapes.intern(f),
            time_ns,
            bytes: f.webb_bytes,
            packets: u32::try_from(f.webb_packets).ok()?,
            sport,
            dport,
            bits,
            uuid,
        })
    }

    fn time(&self) -> Timestamp {
        Timestamp::from_nanos(i128::from(self.time_ns))
    }

    /// Writes the record's fields into a flow of its shape.
    pub fn fill(&self, f: &mut Flow) {
        f.time = Some(self.time());
        f.uuid.clear();
        if self.bits & HAS_UUID != 0 {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            f.uuid.push_str(
                uuid::Uuid::from_bytes(self.uuid)
                    .hyphenated()
                    .encode_lower(&mut buf),
            );
        }
        match f.l4.as_mut().and_then(|l| l.protocol.as_mut()) {
            Some(Protocol::Tcp(t)) => {
                (t.source_port, t.destination_port) = (self.sport.into(), self.dport.into());
                t.flags = (self.bits & HAS_TCP_FLAGS != 0).then(|| flags_of(self.bits));
            }
            Some(Protocol::Udp(u)) => {
                (u.source_port, u.destination_port) = (self.sport.into(), self.dport.into());
            }
            Some(Protocol::Sctp(s)) => {
                (s.source_port, s.destination_port) = (self.sport.into(), self.dport.into());
            }
            _ => {}
        }
        f.webb_packets = self.packets.into();
        f.webb_bytes = self.bytes;
    }

    /// The shape's flow, to be filled with [`Compact::fill`].
    pub fn shape_flow(&self) -> &Flow {
        &self.shape.flow
    }

    /// The shape's identity while the record lives.
    pub fn shape_id(&self) -> usize {
        Arc::as_ptr(&self.shape) as usize
    }

    fn item(&self) -> Item {
        let mut f = self.shape.flow.clone();
        self.fill(&mut f);
        Arc::new(GetFlowsResponse {
            time: f.time,
            node_name: f.node_name.clone(),
            response_types: Some(ResponseTypes::Flow(Box::new(f))),
        })
    }
}

/// The bytes of a UUID written as `uuid_string` writes it (lowercase,
/// hyphenated), so that writing them back gives the same string.
fn canonical_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut out = [0u8; 16];
    for (byte, &i) in out.iter_mut().zip(&AT) {
        *byte = nibble(b[i])? << 4 | nibble(b[i + 1])?;
    }
    Some(out)
}

fn tcp_bits(f: &TcpFlags) -> u16 {
    [f.fin, f.syn, f.rst, f.psh, f.ack, f.urg, f.ece, f.cwr, f.ns]
        .iter()
        .enumerate()
        .fold(0, |b, (i, set)| b | (u16::from(*set) << i))
}

fn flags_of(bits: u16) -> TcpFlags {
    let on = |i: u16| bits & (1 << i) != 0;
    TcpFlags {
        fin: on(0),
        syn: on(1),
        rst: on(2),
        psh: on(3),
        ack: on(4),
        urg: on(5),
        ece: on(6),
        cwr: on(7),
        ns: on(8),
    }
}

/// The interned shapes. A shape no record holds any more is dropped at the
/// next sweep.
#[derive(Default)]
pub struct Shapes {
    /// By hash; a bucket holds the shapes whose hashes collide.
    by_hash: HashMap<u64, Vec<Arc<Shape>>, foldhash::fast::FixedState>,
    len: usize,
    /// Shapes made since the last sweep, and how many it left.
    created_since_sweep: usize,
    len_after_sweep: usize,
}

/// New shapes between sweeps, at least.
const SWEEP_EVERY: usize = 4096;

impl Shapes {
    fn intern(&mut self, f: &Flow) -> Arc<Shape> {
        let hash = shape_hash(f);
        let bucket = self.by_hash.entry(hash).or_default();
        if let Some(s) = bucket.iter().find(|s| same_shape(&s.flow, f)) {
            return s.clone();
        }
        let shape = Arc::new(Shape::of(f));
        bucket.push(shape.clone());
        self.len += 1;
        self.created_since_sweep += 1;
        shape
    }

    /// Drops the shapes only the table holds, once as many shapes were
    /// made since the last sweep as it left (and at least
    /// [`SWEEP_EVERY`]): a sweep looks at every shape, so its cost per new
    /// shape stays constant, and dead shapes are never more than the live
    /// ones and that many.
    pub fn maybe_sweep(&mut self) {
        if self.created_since_sweep < SWEEP_EVERY.max(self.len_after_sweep) {
            return;
        }
        self.created_since_sweep = 0;
        self.by_hash.retain(|_, bucket| {
            bucket.retain(|s| Arc::strong_count(s) > 1);
            !bucket.is_empty()
        });
        self.len = self.by_hash.values().map(Vec::len).sum();
        self.len_after_sweep = self.len;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Every shape some record holds.
    pub fn live(&self) -> impl Iterator<Item = &Flow> {
        self.by_hash
            .values()
            .flatten()
            .filter(|s| Arc::strong_count(s) > 1)
            .map(|s| &s.flow)
    }
}

impl Shape {
    fn of(f: &Flow) -> Self {
        let mut flow = Flow {
            time: None,
            uuid: String::new(),
            webb_packets: 0,
            webb_bytes: 0,
            ..f.clone()
        };
        let mut ported = false;
        if let Some(p) = flow.l4.as_mut().and_then(|l| l.protocol.as_mut()) {
            // Every field of these is the record's (named, so that a new
            // one does not compile until it is placed).
            match p {
                Protocol::Tcp(Tcp {
                    source_port,
                    destination_port,
                    flags,
                }) => {
                    (*source_port, *destination_port, *flags) = (0, 0, None);
                    ported = true;
                }
                Protocol::Udp(Udp {
                    source_port,
                    destination_port,
                })
                | Protocol::Sctp(Sctp {
                    source_port,
                    destination_port,
                }) => {
                    (*source_port, *destination_port) = (0, 0);
                    ported = true;
                }
                _ => {}
            }
        }
        let key = ItemKey::of_flow(&flow);
        Self { flow, key, ported }
    }
}

/// A hash of the fields that most often tell shapes apart (endpoints by
/// their shared pointer); [`same_shape`] decides.
#[allow(deprecated)]
fn shape_hash(f: &Flow) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = foldhash::fast::FixedState::with_seed(0x77eb_b0de).build_hasher();
    f.source.as_ref().map(|e| e.addr()).hash(&mut h);
    f.destination.as_ref().map(|e| e.addr()).hash(&mut h);
    if let Some(ip) = &f.ip {
        ip.source.hash(&mut h);
        ip.destination.hash(&mut h);
    }
    (
        f.verdict,
        f.trace_observation_point,
        f.traffic_direction,
        f.r#type,
    )
        .hash(&mut h);
    f.event_type
        .as_ref()
        .map(|e| (e.r#type, e.sub_type))
        .hash(&mut h);
    f.summary.hash(&mut h);
    f.is_reply.map(|b| b.value).hash(&mut h);
    f.cgroup_id.hash(&mut h);
    f.interface.as_ref().map(|i| i.index).hash(&mut h);
    f.l4.as_ref()
        .and_then(|l| l.protocol.as_ref())
        .map(std::mem::discriminant)
        .hash(&mut h);
    h.finish()
}

/// Whether `f` is a flow of the shape `shape` (a shape's flow): equal in
/// every field but the time, UUID, ports, TCP flags, packets and bytes.
#[allow(deprecated)]
fn same_shape(shape: &Flow, f: &Flow) -> bool {
    // Every field is named: a new one must be placed here to compile.
    let Flow {
        time: _,
        uuid: _,
        webb_packets: _,
        webb_bytes: _,
        l4,
        emitter,
        verdict,
        drop_reason,
        auth_type,
        ethernet,
        ip,
        tunnel,
        source,
        destination,
        r#type,
        node_name,
        node_labels,
        source_names,
        destination_names,
        l7,
        reply,
        event_type,
        source_service,
        destination_service,
        traffic_direction,
        policy_match_type,
        trace_observation_point,
        trace_reason,
        file,
        ip_trace_id,
        drop_reason_desc,
        is_reply,
        debug_capture_point,
        interface,
        proxy_port,
        trace_context,
        sock_xlate_point,
        socket_cookie,
        cgroup_id,
        summary,
        extensions,
        egress_allowed_by,
        ingress_allowed_by,
        egress_denied_by,
        ingress_denied_by,
        policy_log,
        aggregate,
        webb_kernel_drop_reason,
        webb_emit_reason,
    } = f;
    same_l4(&shape.l4, l4)
        && shape.verdict == *verdict
        && shape.trace_observation_point == *trace_observation_point
        && shape.traffic_direction == *traffic_direction
        && shape.is_reply == *is_reply
        && shape.reply == *reply
        && shape.event_type == *event_type
        && shape.source == *source
        && shape.destination == *destination
        && same_ip(&shape.ip, ip)
        && str_eq(&shape.summary, summary)
        && shape.trace_reason == *trace_reason
        && shape.webb_emit_reason == *webb_emit_reason
        && shape.drop_reason == *drop_reason
        && shape.drop_reason_desc == *drop_reason_desc
        && shape.cgroup_id == *cgroup_id
        && match (&shape.interface, interface) {
            (Some(a), Some(b)) => a.index == b.index && str_eq(&a.name, &b.name),
            (a, b) => a.is_none() && b.is_none(),
        }
        && match (&shape.ethernet, ethernet) {
            (Some(a), Some(b)) => {
                str_eq(&a.source, &b.source) && str_eq(&a.destination, &b.destination)
            }
            (a, b) => a.is_none() && b.is_none(),
        }
        && shape.r#type == *r#type
        && str_eq(&shape.node_name, node_name)
        && shape.node_labels == *node_labels
        && match (&shape.emitter, emitter) {
            (Some(a), Some(b)) => str_eq(&a.name, &b.name) && str_eq(&a.version, &b.version),
            (a, b) => a.is_none() && b.is_none(),
        }
        && shape.auth_type == *auth_type
        && shape.tunnel == *tunnel
        && shape.source_names == *source_names
        && shape.destination_names == *destination_names
        && shape.l7 == *l7
        && shape.source_service == *source_service
        && shape.destination_service == *destination_service
        && shape.policy_match_type == *policy_match_type
        && shape.file == *file
        && shape.ip_trace_id == *ip_trace_id
        && shape.debug_capture_point == *debug_capture_point
        && shape.proxy_port == *proxy_port
        && shape.trace_context == *trace_context
        && shape.sock_xlate_point == *sock_xlate_point
        && shape.socket_cookie == *socket_cookie
        && shape.extensions == *extensions
        && shape.egress_allowed_by == *egress_allowed_by
        && shape.ingress_allowed_by == *ingress_allowed_by
        && shape.egress_denied_by == *egress_denied_by
        && shape.ingress_denied_by == *ingress_denied_by
        && shape.policy_log == *policy_log
        && shape.aggregate == *aggregate
        && str_eq(&shape.webb_kernel_drop_reason, webb_kernel_drop_reason)
}

/// String equality that does not call `memcmp` for two empty strings: on
/// some CPUs glibc's `memcmp` of length 0 at an empty `String`'s dangling
/// pointer costs ~120 ns (a masked load on an unmapped page), measured on
/// the project's test machine, where most of a flow's optional strings are
/// empty.
fn str_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

fn same_ip(a: &Option<Ip>, b: &Option<Ip>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            let Ip {
                source,
                source_xlated,
                destination,
                ip_version,
                encrypted,
            } = b;
            str_eq(&a.source, source)
                && str_eq(&a.destination, destination)
                && str_eq(&a.source_xlated, source_xlated)
                && a.ip_version == *ip_version
                && a.encrypted == *encrypted
        }
        _ => false,
    }
}

/// L4 of a shape against a flow's: the same protocol, equal but for the
/// ports and TCP flags (which the record keeps).
fn same_l4(shape: &Option<Layer4>, l4: &Option<Layer4>) -> bool {
    let shape_p = shape.as_ref().map(|l| &l.protocol);
    let p = l4.as_ref().map(|l| &l.protocol);
    match (shape_p, p) {
        (Some(Some(Protocol::Tcp(_))), Some(Some(Protocol::Tcp(_))))
        | (Some(Some(Protocol::Udp(_))), Some(Some(Protocol::Udp(_))))
        | (Some(Some(Protocol::Sctp(_))), Some(Some(Protocol::Sctp(_)))) => true,
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests;
