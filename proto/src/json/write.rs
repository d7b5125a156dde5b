//! The JSON of a `Flow`, written straight into a byte buffer.
//!
//! `webb observe -o json` writes one line per flow, and draining a full ring
//! spends more time here than in protobuf decoding when it goes through
//! serde: every key is escaped byte by byte and every field passes through
//! the serializer's state machine. This writes the fields every flow has
//! (time, endpoints, addresses, ports, flags, enums) by hand, in the order
//! and with the omissions of the generated serde code, and hands the rare
//! ones (L7 records, services, policies, extensions...) to that code.
//! `tests` checks the output is byte-identical to serde's on recorded flows
//! and on generated ones.

use std::io::Write as _;

use crate::flow::{
    AuthType, DebugCapturePoint, DropReason, Endpoint, Flow, FlowType, IpVersion, Layer4,
    SocketTranslationPoint, TraceObservationPoint, TraceReason, TrafficDirection, Verdict,
    WebbEmitReason, layer4::Protocol,
};
use crate::{
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
    wkt::Timestamp,
};

/// Writes one response as `hubble observe -o json` does: the oneof member
/// (`flow`, `node_status` or `lost_events`) first, then `node_name` and
/// `time`, in the order Go's protojson writes them.
pub(crate) fn response(buf: &mut Vec<u8>, r: &GetFlowsResponse, texts: Option<&mut Texts>) {
    let mut o = Object::open(buf);
    match &r.response_types {
        Some(ResponseTypes::Flow(f)) => {
            o.key("flow");
            flow(o.buf, f, texts);
        }
        Some(ResponseTypes::NodeStatus(n)) => o.serde("node_status", Some(n)),
        Some(ResponseTypes::LostEvents(l)) => o.serde("lost_events", Some(l)),
        None => {}
    }
    o.string("node_name", &r.node_name);
    o.timestamp("time", r.time.as_ref());
    o.close();
}

/// The JSON of the endpoints written lately, by identity. Flows decoded by
/// [`crate::decoder::ResponseDecoder`] (or held in a ring) share their
/// [`Endpoint`]s, so each is written once and then copied; a third of a
/// flow's JSON is its two endpoints. A fixed table: each entry holds a
/// clone of its endpoint, so the address it is keyed by cannot be reused by
/// another while the entry lives.
pub(crate) struct Texts {
    slots: Box<[Option<Text>]>,
}

/// An endpoint and its JSON.
type Text = (Endpoint, Vec<u8>);

impl Default for Texts {
    fn default() -> Self {
        Self {
            slots: (0..TEXT_SLOTS).map(|_| None).collect(),
        }
    }
}

const TEXT_SLOTS: usize = 256;

impl Texts {
    fn write(&mut self, buf: &mut Vec<u8>, e: &Endpoint) {
        // An endpoint no other flow holds (one parsed from a JSON line)
        // will not come again: writing it is all there is to do.
        if !e.is_shared() {
            return endpoint(buf, e);
        }
        // Fibonacci hashing of the address: allocations are aligned, so
        // the low bits alone would crowd a few slots.
        let index =
            ((e.addr() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize % TEXT_SLOTS;
        let slot = &mut self.slots[index];
        if let Some((known, text)) = slot
            && known.ptr_eq(e)
        {
            buf.extend_from_slice(text);
            return;
        }
        let start = buf.len();
        endpoint(buf, e);
        let mut text = slot.take().map(|(_, t)| t).unwrap_or_default();
        text.clear();
        text.extend_from_slice(&buf[start..]);
        *slot = Some((e.clone(), text));
    }
}

/// Writes `flow` as a JSON object.
fn flow(buf: &mut Vec<u8>, f: &Flow, mut texts: Option<&mut Texts>) {
    let mut o = Object::open(buf);
    o.timestamp("time", f.time.as_ref());
    o.string("uuid", &f.uuid);
    if let Some(e) = &f.emitter {
        o.object("emitter", |o| {
            o.string("name", &e.name);
            o.string("version", &e.version);
        });
    }
    o.enumeration("verdict", f.verdict, |v| {
        Verdict::try_from(v).ok().map(|v| v.as_str_name())
    });
    #[allow(deprecated)]
    o.number("drop_reason", f.drop_reason.into());
    o.enumeration("auth_type", f.auth_type, |v| {
        AuthType::try_from(v).ok().map(|v| v.as_str_name())
    });
    if let Some(e) = &f.ethernet {
        o.object("ethernet", |o| {
            o.string("source", &e.source);
            o.string("destination", &e.destination);
        });
    }
    if let Some(ip) = &f.ip {
        o.object("IP", |o| {
            o.string("source", &ip.source);
            o.string("source_xlated", &ip.source_xlated);
            o.string("destination", &ip.destination);
            o.enumeration("ipVersion", ip.ip_version, |v| {
                IpVersion::try_from(v).ok().map(|v| v.as_str_name())
            });
            o.boolean("encrypted", ip.encrypted);
        });
    }
    if let Some(l4) = &f.l4 {
        o.key("l4");
        layer4(o.buf, l4);
    }
    o.serde("tunnel", f.tunnel.as_deref());
    for (name, e) in [("source", &f.source), ("destination", &f.destination)] {
        if let Some(e) = e {
            o.key(name);
            match texts.as_deref_mut() {
                Some(texts) => texts.write(o.buf, e),
                None => endpoint(o.buf, e),
            }
        }
    }
    o.enumeration("Type", f.r#type, |v| {
        FlowType::try_from(v).ok().map(|v| v.as_str_name())
    });
    o.string("node_name", &f.node_name);
    o.strings("node_labels", &f.node_labels);
    o.strings("source_names", &f.source_names);
    o.strings("destination_names", &f.destination_names);
    o.serde("l7", f.l7.as_deref());
    #[allow(deprecated)]
    o.boolean("reply", f.reply);
    if let Some(et) = &f.event_type {
        o.object("event_type", |o| {
            o.number("type", et.r#type.into());
            o.number("sub_type", et.sub_type.into());
        });
    }
    o.serde("source_service", f.source_service.as_deref());
    o.serde("destination_service", f.destination_service.as_deref());
    o.enumeration("traffic_direction", f.traffic_direction, |v| {
        TrafficDirection::try_from(v).ok().map(|v| v.as_str_name())
    });
    o.number("policy_match_type", f.policy_match_type.into());
    o.enumeration("trace_observation_point", f.trace_observation_point, |v| {
        TraceObservationPoint::try_from(v)
            .ok()
            .map(|v| v.as_str_name())
    });
    o.enumeration("trace_reason", f.trace_reason, |v| {
        TraceReason::try_from(v).ok().map(|v| v.as_str_name())
    });
    o.serde("file", f.file.as_deref());
    o.serde("ip_trace_id", f.ip_trace_id.as_deref());
    o.enumeration("drop_reason_desc", f.drop_reason_desc, |v| {
        DropReason::try_from(v).ok().map(|v| v.as_str_name())
    });
    if let Some(r) = &f.is_reply {
        o.key("is_reply");
        o.buf
            .extend_from_slice(if r.value { b"true" } else { b"false" });
    }
    o.enumeration("debug_capture_point", f.debug_capture_point, |v| {
        DebugCapturePoint::try_from(v).ok().map(|v| v.as_str_name())
    });
    if let Some(i) = &f.interface {
        o.object("interface", |o| {
            o.number("index", i.index.into());
            o.string("name", &i.name);
        });
    }
    o.number("proxy_port", f.proxy_port.into());
    o.serde("trace_context", f.trace_context.as_deref());
    o.enumeration("sock_xlate_point", f.sock_xlate_point, |v| {
        SocketTranslationPoint::try_from(v)
            .ok()
            .map(|v| v.as_str_name())
    });
    o.quoted_number("socket_cookie", f.socket_cookie);
    o.quoted_number("cgroup_id", f.cgroup_id);
    #[allow(deprecated)]
    o.string("Summary", &f.summary);
    o.serde("extensions", f.extensions.as_deref());
    o.serde_list("egress_allowed_by", &f.egress_allowed_by);
    o.serde_list("ingress_allowed_by", &f.ingress_allowed_by);
    o.serde_list("egress_denied_by", &f.egress_denied_by);
    o.serde_list("ingress_denied_by", &f.ingress_denied_by);
    o.strings("policy_log", &f.policy_log);
    o.serde("aggregate", f.aggregate.as_deref());
    o.string("webb_kernel_drop_reason", &f.webb_kernel_drop_reason);
    o.quoted_number("webb_packets", f.webb_packets);
    o.quoted_number("webb_bytes", f.webb_bytes);
    o.enumeration("webb_emit_reason", f.webb_emit_reason, |v| {
        WebbEmitReason::try_from(v).ok().map(|v| v.as_str_name())
    });
    o.close();
}

fn layer4(buf: &mut Vec<u8>, l4: &Layer4) {
    let mut o = Object::open(buf);
    match &l4.protocol {
        Some(Protocol::Tcp(t)) => o.object("TCP", |o| {
            o.number("source_port", t.source_port.into());
            o.number("destination_port", t.destination_port.into());
            if let Some(fl) = &t.flags {
                o.object("flags", |o| {
                    for (name, set) in [
                        ("FIN", fl.fin),
                        ("SYN", fl.syn),
                        ("RST", fl.rst),
                        ("PSH", fl.psh),
                        ("ACK", fl.ack),
                        ("URG", fl.urg),
                        ("ECE", fl.ece),
                        ("CWR", fl.cwr),
                        ("NS", fl.ns),
                    ] {
                        o.boolean(name, set);
                    }
                });
            }
        }),
        Some(Protocol::Udp(u)) => o.pair(
            "UDP",
            ("source_port", u.source_port),
            ("destination_port", u.destination_port),
        ),
        Some(Protocol::IcmPv4(i)) => o.pair("ICMPv4", ("type", i.r#type), ("code", i.code)),
        Some(Protocol::IcmPv6(i)) => o.pair("ICMPv6", ("type", i.r#type), ("code", i.code)),
        Some(Protocol::Sctp(v)) => o.serde("SCTP", Some(v)),
        Some(Protocol::Vrrp(v)) => o.serde("VRRP", Some(v)),
        Some(Protocol::Igmp(v)) => o.serde("IGMP", Some(v)),
        None => {}
    }
    o.close();
}

fn endpoint(buf: &mut Vec<u8>, e: &Endpoint) {
    let mut o = Object::open(buf);
    o.number("ID", e.id.into());
    o.number("identity", e.identity.into());
    o.string("cluster_name", &e.cluster_name);
    o.string("namespace", &e.namespace);
    o.strings("labels", &e.labels);
    o.string("pod_name", &e.pod_name);
    if !e.workloads.is_empty() {
        o.key("workloads");
        o.buf.push(b'[');
        for (i, w) in e.workloads.iter().enumerate() {
            if i > 0 {
                o.buf.push(b',');
            }
            let mut w_o = Object::open(o.buf);
            w_o.string("name", &w.name);
            w_o.string("kind", &w.kind);
            w_o.close();
        }
        o.buf.push(b']');
    }
    o.close();
}

/// An object being written: keys get their comma, unset values are skipped
/// the way the generated code skips them (proto3 defaults).
struct Object<'a> {
    buf: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    fn open(buf: &'a mut Vec<u8>) -> Self {
        buf.push(b'{');
        Self { buf, first: true }
    }

    fn close(self) {
        self.buf.push(b'}');
    }

    /// Keys here are field names: nothing in them needs escaping.
    fn key(&mut self, name: &str) {
        self.buf
            .extend_from_slice(if self.first { b"\"" } else { b",\"" });
        self.first = false;
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    fn string(&mut self, name: &str, s: &str) {
        if !s.is_empty() {
            self.key(name);
            string(self.buf, s);
        }
    }

    fn strings(&mut self, name: &str, v: &[String]) {
        if v.is_empty() {
            return;
        }
        self.key(name);
        self.buf.push(b'[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            string(self.buf, s);
        }
        self.buf.push(b']');
    }

    fn number(&mut self, name: &str, n: i64) {
        if n != 0 {
            self.key(name);
            self.buf
                .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        }
    }

    /// 64-bit integers are strings in protojson.
    fn quoted_number(&mut self, name: &str, n: u64) {
        if n != 0 {
            self.key(name);
            self.buf.push(b'"');
            self.buf
                .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            self.buf.push(b'"');
        }
    }

    /// A nested message, written by `fill`.
    fn object(&mut self, name: &str, fill: impl FnOnce(&mut Object<'_>)) {
        self.key(name);
        let mut o = Object::open(self.buf);
        fill(&mut o);
        o.close();
    }

    /// A message of two numbers (ports, ICMP type and code).
    fn pair(&mut self, name: &str, a: (&str, u32), b: (&str, u32)) {
        self.object(name, |o| {
            o.number(a.0, a.1.into());
            o.number(b.0, b.1.into());
        });
    }

    /// A time in protojson's form; nothing in it needs escaping.
    fn timestamp(&mut self, name: &str, t: Option<&Timestamp>) {
        let Some(t) = t else { return };
        self.key(name);
        self.buf.push(b'"');
        match t.rfc3339() {
            Some((b, len)) => self.buf.extend_from_slice(&b[..len]),
            None => {
                let _ = write!(self.buf, "{t}");
            }
        }
        self.buf.push(b'"');
    }

    fn boolean(&mut self, name: &str, b: bool) {
        if b {
            self.key(name);
            self.buf.extend_from_slice(b"true");
        }
    }

    /// An enum by name; a number no variant has is written as the number,
    /// as protojson writes it.
    fn enumeration(&mut self, name: &str, v: i32, names: impl Fn(i32) -> Option<&'static str>) {
        if v == 0 {
            return;
        }
        self.key(name);
        match names(v) {
            Some(n) => {
                self.buf.push(b'"');
                self.buf.extend_from_slice(n.as_bytes());
                self.buf.push(b'"');
            }
            None => self
                .buf
                .extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
        }
    }

    /// A field left to the generated serde code.
    fn serde<T: serde::Serialize + ?Sized>(&mut self, name: &str, v: Option<&T>) {
        if let Some(v) = v {
            self.key(name);
            super::to_go_writer(self.buf, v);
        }
    }

    fn serde_list<T: serde::Serialize>(&mut self, name: &str, v: &[T]) {
        if !v.is_empty() {
            self.serde(name, Some(v));
        }
    }
}

/// A JSON string as Go's `encoding/json` writes it (see
/// [`super::to_go_writer`]).
fn string(buf: &mut Vec<u8>, s: &str) {
    if !super::needs_escape(s) {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        super::to_go_writer(buf, s);
    }
}

#[cfg(test)]
mod tests;
