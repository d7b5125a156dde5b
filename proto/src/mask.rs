//! Field masks: the `field_mask` of a GetFlows request, applied to every
//! flow served, so a client that prints five fields is sent five fields.
//!
//! Paths are protobuf field names joined by dots (`source.pod_name`, `l4`,
//! `IP`), resolved against the schema the build script writes from the
//! `.proto` files, and checked as Go's `fieldmaskpb` checks them: every
//! segment names a field, only a singular message field has sub-paths. A
//! path and its own sub-path is the path (`source` covers
//! `source.pod_name`).
//!
//! Applying builds a new [`Flow`] holding only the masked fields. The
//! top-level fields are copied by struct field; a sub-path filters the
//! encoded sub-message by field number and decodes the rest, so it works
//! for every message without per-message code. Endpoints repeat from flow
//! to flow, so a [`Masker`] remembers the masked form of each it has seen.

// Deprecated fields (`summary`, `reply`, ...) are still sent: copying
// them is the job.
#![allow(deprecated)]

use std::{collections::HashMap, fmt, sync::Arc};

use prost::{
    Message,
    bytes::Buf,
    encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint},
};

use crate::{
    endpoint::Endpoint,
    flow::Flow,
    observer::{GetFlowsRequest, GetFlowsResponse, get_flows_response::ResponseTypes},
};

/// The fields Hubble's CLI asks for when it prints text (its default field
/// mask for compact, dict and table output).
pub const HUBBLE_TEXT: &[&str] = &[
    "time",
    "verdict",
    "ethernet",
    "IP",
    "l4",
    "source.identity",
    "source.namespace",
    "source.pod_name",
    "destination.identity",
    "destination.namespace",
    "destination.pod_name",
    "Type",
    "node_name",
    "l7",
    "event_type",
    "source_service",
    "destination_service",
    "is_reply",
    "Summary",
    "ip_trace_id",
];

/// What webb's compact, dict and table printers read beyond
/// [`HUBBLE_TEXT`]: the fields webb prints that Hubble's mask leaves out
/// (policy names, DNS names of IPs, directions, capture points, webb's
/// kernel drop reason).
const WEBB_EXTRA: &[&str] = &[
    "auth_type",
    "traffic_direction",
    "policy_match_type",
    "debug_capture_point",
    "sock_xlate_point",
    "source_names",
    "destination_names",
    "egress_allowed_by",
    "ingress_allowed_by",
    "egress_denied_by",
    "ingress_denied_by",
    "webb_kernel_drop_reason",
];

/// The mask webb's text printers ask for: Hubble's and [`WEBB_EXTRA`]. A
/// test in webb's CLI prints recorded flows masked and whole and compares.
pub fn webb_text() -> Vec<&'static str> {
    HUBBLE_TEXT.iter().chain(WEBB_EXTRA).copied().collect()
}

mod schema {
    /// (name, number, message type or "", repeated, wire type)
    pub(crate) type Field = (&'static str, u32, &'static str, bool, u8);
    include!(concat!(env!("OUT_DIR"), "/mask_schema.rs"));
}

/// The fields kept of one message, by number; `None` keeps a field whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Fields(Vec<(u32, Option<Fields>)>);

impl Fields {
    fn get(&self, number: u32) -> Option<&Option<Fields>> {
        self.0
            .binary_search_by_key(&number, |(n, _)| *n)
            .ok()
            .map(|i| &self.0[i].1)
    }
}

/// A path that names no field, or goes inside a field that has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPath {
    pub path: String,
}

impl fmt::Display for InvalidPath {
    /// Go's protobuf text for the same mistake.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "proto: invalid path {:?} for message \"flow.Flow\"",
            self.path
        )
    }
}

impl std::error::Error for InvalidPath {}

/// A compiled field mask over `flow.Flow`.
#[derive(Clone)]
pub struct FlowMask {
    /// Top-level fields: how to copy each, and its sub-mask (if any).
    top: Vec<(Copier, Option<Fields>)>,
    paths: Vec<String>,
}

impl fmt::Debug for FlowMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowMask")
            .field("paths", &self.paths)
            .finish()
    }
}

/// A tree of path segments before it is resolved to numbers.
#[derive(Default)]
struct Tree(std::collections::BTreeMap<String, Option<Tree>>);

impl Tree {
    fn insert(&mut self, segments: &[&str]) {
        let Some((first, rest)) = segments.split_first() else {
            return;
        };
        let slot = self.0.entry((*first).to_owned());
        if rest.is_empty() {
            // The whole field: covers any sub-path.
            *slot.or_insert(None) = None;
            return;
        }
        let entry = slot.or_insert_with(|| Some(Tree::default()));
        if let Some(sub) = entry {
            sub.insert(rest);
        }
    }
}

fn message_fields(message: &str) -> Option<&'static [schema::Field]> {
    schema::SCHEMA
        .iter()
        .find(|(name, _)| *name == message)
        .map(|(_, fields)| *fields)
}

impl FlowMask {
    /// Compiles the paths; `Ok(None)` for an empty mask (every field).
    pub fn new<S: AsRef<str>>(paths: &[S]) -> Result<Option<Self>, InvalidPath> {
        if paths.is_empty() {
            return Ok(None);
        }
        let mut tree = Tree::default();
        for path in paths {
            let path = path.as_ref();
            let segments: Vec<&str> = path.split('.').collect();
            validate("flow.Flow", &segments).ok_or_else(|| InvalidPath {
                path: path.to_owned(),
            })?;
            tree.insert(&segments);
        }
        let flow = message_fields("flow.Flow").unwrap_or_default();
        let mut top = Vec::new();
        for (name, sub) in &tree.0 {
            // Validated above; a field without a copier (a test keeps there
            // being none) is refused rather than served whole.
            let field = flow.iter().find(|(n, ..)| n == name);
            let (Some(&(_, _, message, ..)), Some(copier)) = (field, copier(name)) else {
                return Err(InvalidPath { path: name.clone() });
            };
            top.push((copier, sub.as_ref().map(|t| resolve(message, t))));
        }
        Ok(Some(Self {
            top,
            paths: paths.iter().map(|p| p.as_ref().to_owned()).collect(),
        }))
    }

    /// The mask a request asks for: `field_mask`, else the experimental
    /// one older Hubble CLIs send.
    pub fn from_request(req: &GetFlowsRequest) -> Result<Option<Self>, InvalidPath> {
        match (&req.field_mask, req.experimental.as_ref()) {
            (Some(m), _) if !m.paths.is_empty() => Self::new(&m.paths),
            (_, Some(e)) => Self::new(e.field_mask.as_ref().map_or(&[][..], |m| &m.paths)),
            _ => Ok(None),
        }
    }

    /// The paths as the request gave them.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// A masker for one stream of flows.
    pub fn masker(self: &Arc<Self>) -> Masker {
        Masker {
            mask: self.clone(),
            endpoints: HashMap::new(),
        }
    }
}

/// Whether `segments` name a field path of `message`.
fn validate(message: &str, segments: &[&str]) -> Option<()> {
    let (first, rest) = segments.split_first()?;
    let fields = message_fields(message)?;
    let &(_, _, sub, repeated, _) = fields.iter().find(|(n, ..)| n == first)?;
    if rest.is_empty() {
        return Some(());
    }
    if sub.is_empty() || repeated {
        return None;
    }
    validate(sub, rest)
}

fn resolve(message: &str, tree: &Tree) -> Fields {
    let fields = message_fields(message).unwrap_or_default();
    let mut out: Vec<(u32, Option<Fields>)> = tree
        .0
        .iter()
        .filter_map(|(name, sub)| {
            let &(_, number, sub_message, ..) = fields.iter().find(|(n, ..)| n == name)?;
            Some((number, sub.as_ref().map(|t| resolve(sub_message, t))))
        })
        .collect();
    out.sort_by_key(|(n, _)| *n);
    Fields(out)
}

/// Copies one top-level field of a flow, whole or through its sub-mask.
type Copier = fn(&Flow, &mut Flow, Option<&Fields>, &mut EndpointCache);

type EndpointCache = HashMap<(usize, u32), (Endpoint, Endpoint)>;

/// Masks the flows of one stream.
pub struct Masker {
    mask: Arc<FlowMask>,
    /// Masked endpoints by (original's address, field number). The original
    /// is kept so its address is not reused while the entry lives.
    endpoints: EndpointCache,
}

/// How many masked endpoints a stream remembers before starting afresh.
const ENDPOINT_CACHE: usize = 4096;

impl Masker {
    /// A new flow holding only the masked fields of `flow`.
    pub fn flow(&mut self, flow: &Flow) -> Flow {
        if self.endpoints.len() > ENDPOINT_CACHE {
            self.endpoints.clear();
        }
        let mut out = Flow::default();
        for (copy, sub) in &self.mask.top {
            copy(flow, &mut out, sub.as_ref(), &mut self.endpoints);
        }
        out
    }

    /// A response with its flow masked; other responses unchanged.
    pub fn response(&mut self, r: &GetFlowsResponse) -> GetFlowsResponse {
        match &r.response_types {
            Some(ResponseTypes::Flow(f)) => GetFlowsResponse {
                time: r.time,
                node_name: r.node_name.clone(),
                response_types: Some(ResponseTypes::Flow(Box::new(self.flow(f)))),
            },
            _ => r.clone(),
        }
    }
}

fn endpoint(e: &Endpoint, number: u32, fields: &Fields, cache: &mut EndpointCache) -> Endpoint {
    cache
        .entry((e.addr(), number))
        .or_insert_with(|| (e.clone(), filter_message(e, fields)))
        .1
        .clone()
}

/// `m` with only the fields `keep` names, through its encoding.
fn filter_message<M: Message + Default>(m: &M, keep: &Fields) -> M {
    let bytes = m.encode_to_vec();
    let mut out = Vec::with_capacity(bytes.len());
    filter_bytes(&bytes, keep, &mut out);
    // The bytes are a subset of a well-formed encoding of M.
    M::decode(&out[..]).unwrap_or_default()
}

/// Copies the fields of an encoded message that `keep` names.
fn filter_bytes(mut b: &[u8], keep: &Fields, out: &mut Vec<u8>) {
    while b.has_remaining() {
        let start = b;
        let Ok((number, wire)) = decode_key(&mut b) else {
            return;
        };
        let key_len = start.len() - b.len();
        let body_start = b;
        if skip_value(&mut b, wire).is_none() {
            return;
        }
        let Some(sub) = keep.get(number) else {
            continue;
        };
        match (sub, wire) {
            (Some(sub), WireType::LengthDelimited) => {
                let mut body = body_start;
                let Ok(len) = decode_varint(&mut body) else {
                    return;
                };
                let mut inner = Vec::new();
                filter_bytes(&body[..len as usize], sub, &mut inner);
                encode_key(number, wire, out);
                encode_varint(inner.len() as u64, out);
                out.extend_from_slice(&inner);
            }
            _ => {
                out.extend_from_slice(&start[..key_len]);
                out.extend_from_slice(&body_start[..body_start.len() - b.len()]);
            }
        }
    }
}

/// Moves past one value of `wire` type; `None` when the bytes end early.
fn skip_value(b: &mut &[u8], wire: WireType) -> Option<()> {
    match wire {
        WireType::Varint => {
            decode_varint(b).ok()?;
        }
        WireType::SixtyFourBit => {
            (b.len() >= 8).then(|| b.advance(8))?;
        }
        WireType::ThirtyTwoBit => {
            (b.len() >= 4).then(|| b.advance(4))?;
        }
        WireType::LengthDelimited => {
            let len = usize::try_from(decode_varint(b).ok()?).ok()?;
            (b.len() >= len).then(|| b.advance(len))?;
        }
        // Groups are not used by any Hubble message.
        WireType::StartGroup | WireType::EndGroup => return None,
    }
    Some(())
}

/// The copier of each `flow.Flow` field, by proto name. A test checks that
/// every field of the schema has one.
macro_rules! copiers {
    (
        whole { $($w:literal => $wf:ident),* $(,)? }
        message { $($m:literal => $mf:ident),* $(,)? }
        repeated { $($r:literal => $rf:ident),* $(,)? }
        endpoint { $($e:literal => $ef:ident = $en:literal),* $(,)? }
    ) => {
        fn copier(name: &str) -> Option<Copier> {
            Some(match name {
                $($w => (|src: &Flow, out: &mut Flow, _: Option<&Fields>, _: &mut EndpointCache| {
                    out.$wf.clone_from(&src.$wf)
                }) as Copier,)*
                $($m => (|src: &Flow, out: &mut Flow, sub: Option<&Fields>, _: &mut EndpointCache| {
                    out.$mf = match sub {
                        None => src.$mf.clone(),
                        Some(f) => src.$mf.as_ref().map(|m| filter_message(m, f)),
                    }
                }) as Copier,)*
                $($r => (|src: &Flow, out: &mut Flow, _: Option<&Fields>, _: &mut EndpointCache| {
                    out.$rf.clone_from(&src.$rf)
                }) as Copier,)*
                $($e => (|src: &Flow, out: &mut Flow, sub: Option<&Fields>, cache: &mut EndpointCache| {
                    out.$ef = match sub {
                        None => src.$ef.clone(),
                        Some(f) => src.$ef.as_ref().map(|e| endpoint(e, $en, f, cache)),
                    }
                }) as Copier,)*
                _ => return None,
            })
        }
    };
}

copiers! {
    whole {
        "uuid" => uuid, "verdict" => verdict, "drop_reason" => drop_reason,
        "auth_type" => auth_type, "Type" => r#type, "node_name" => node_name,
        "reply" => reply, "traffic_direction" => traffic_direction,
        "policy_match_type" => policy_match_type,
        "trace_observation_point" => trace_observation_point,
        "trace_reason" => trace_reason, "drop_reason_desc" => drop_reason_desc,
        "debug_capture_point" => debug_capture_point, "proxy_port" => proxy_port,
        "sock_xlate_point" => sock_xlate_point, "socket_cookie" => socket_cookie,
        "cgroup_id" => cgroup_id, "Summary" => summary,
        "webb_kernel_drop_reason" => webb_kernel_drop_reason,
        "webb_packets" => webb_packets, "webb_bytes" => webb_bytes,
        "webb_emit_reason" => webb_emit_reason,
    }
    message {
        "time" => time, "emitter" => emitter, "ethernet" => ethernet, "IP" => ip,
        "l4" => l4, "tunnel" => tunnel, "l7" => l7, "event_type" => event_type,
        "source_service" => source_service,
        "destination_service" => destination_service, "file" => file,
        "ip_trace_id" => ip_trace_id, "is_reply" => is_reply,
        "interface" => interface, "trace_context" => trace_context,
        "extensions" => extensions, "aggregate" => aggregate,
    }
    repeated {
        "node_labels" => node_labels, "source_names" => source_names,
        "destination_names" => destination_names,
        "egress_allowed_by" => egress_allowed_by,
        "ingress_allowed_by" => ingress_allowed_by,
        "egress_denied_by" => egress_denied_by,
        "ingress_denied_by" => ingress_denied_by, "policy_log" => policy_log,
    }
    endpoint {
        "source" => source = 8, "destination" => destination = 9,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        endpoint::EndpointData,
        flow::{Ip, Layer4, Tcp, TcpFlags, Verdict, layer4::Protocol},
    };

    fn rich() -> Flow {
        Flow {
            time: Some(crate::wkt::Timestamp {
                seconds: 1,
                nanos: 2,
            }),
            uuid: "u".into(),
            verdict: Verdict::Dropped as i32,
            ip: Some(Ip {
                source: "10.0.0.1".into(),
                destination: "10.0.0.2".into(),
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(Protocol::Tcp(Tcp {
                    source_port: 1234,
                    destination_port: 80,
                    flags: Some(TcpFlags {
                        syn: true,
                        ..Default::default()
                    }),
                })),
            }),
            source: Some(
                EndpointData {
                    id: 7,
                    identity: 1234,
                    namespace: "shop".into(),
                    pod_name: "cart".into(),
                    labels: vec!["k8s:app=cart".into()],
                    ..Default::default()
                }
                .into(),
            ),
            node_name: "n1".into(),
            source_names: vec!["a.example".into()],
            summary: "TCP Flags: SYN".into(),
            webb_kernel_drop_reason: "NO_SOCKET".into(),
            ..Default::default()
        }
    }

    #[test]
    fn every_flow_field_has_a_copier() {
        let flow = message_fields("flow.Flow").unwrap();
        assert!(flow.len() > 40);
        for (name, ..) in flow {
            assert!(copier(name).is_some(), "no copier for flow.Flow.{name}");
        }
    }

    /// A flow with every top-level field set, built from the schema: an
    /// empty message, a one-letter string, a 1.
    fn every_field_set() -> Flow {
        let mut bytes = Vec::new();
        for &(_, number, message, _, wire) in message_fields("flow.Flow").unwrap() {
            match wire {
                2 => {
                    encode_key(number, WireType::LengthDelimited, &mut bytes);
                    if message.is_empty() {
                        bytes.extend_from_slice(&[1, b'a']);
                    } else {
                        bytes.push(0);
                    }
                }
                1 => {
                    encode_key(number, WireType::SixtyFourBit, &mut bytes);
                    bytes.extend_from_slice(&1u64.to_le_bytes());
                }
                5 => {
                    encode_key(number, WireType::ThirtyTwoBit, &mut bytes);
                    bytes.extend_from_slice(&1u32.to_le_bytes());
                }
                _ => {
                    encode_key(number, WireType::Varint, &mut bytes);
                    bytes.push(1);
                }
            }
        }
        Flow::decode(&bytes[..]).unwrap()
    }

    /// Each field alone: the masked flow encodes to exactly that field of
    /// the original's encoding (so every copier copies its own field), and
    /// every field at once gives the flow back.
    #[test]
    fn each_field_masks_to_itself() {
        let f = every_field_set();
        let all: Vec<&str> = message_fields("flow.Flow")
            .unwrap()
            .iter()
            .map(|(n, ..)| *n)
            .collect();
        let mask = Arc::new(FlowMask::new(&all).unwrap().unwrap());
        assert_eq!(mask.masker().flow(&f), f);
        for (name, number, ..) in message_fields("flow.Flow").unwrap() {
            let mask = Arc::new(FlowMask::new(&[*name]).unwrap().unwrap());
            let masked = mask.masker().flow(&f);
            assert_ne!(masked, Flow::default(), "{name}");
            let mut expect = Vec::new();
            filter_bytes(
                &f.encode_to_vec(),
                &Fields(vec![(*number, None)]),
                &mut expect,
            );
            assert_eq!(masked.encode_to_vec(), expect, "{name}");
        }
    }

    #[test]
    fn sub_paths_keep_only_what_they_name() {
        let mask = Arc::new(
            FlowMask::new(&["source.pod_name", "l4.TCP.destination_port", "verdict"])
                .unwrap()
                .unwrap(),
        );
        let mut m = mask.masker();
        let out = m.flow(&rich());
        let src = out.source.as_ref().unwrap();
        assert_eq!(src.pod_name, "cart");
        assert_eq!((src.namespace.as_str(), src.identity), ("", 0));
        assert!(src.labels.is_empty());
        let Some(Protocol::Tcp(tcp)) = out.l4.as_ref().and_then(|l| l.protocol.clone()) else {
            panic!("{out:?}")
        };
        assert_eq!((tcp.source_port, tcp.destination_port), (0, 80));
        assert!(tcp.flags.is_none());
        assert_eq!(out.verdict, Verdict::Dropped as i32);
        assert!(out.time.is_none() && out.ip.is_none() && out.summary.is_empty());
        // The second flow of the endpoint comes from the cache, equal.
        let again = m.flow(&rich());
        assert_eq!(again, out);
    }

    #[test]
    fn a_path_covers_its_sub_paths() {
        let mask = Arc::new(
            FlowMask::new(&["source.pod_name", "source"])
                .unwrap()
                .unwrap(),
        );
        let out = mask.masker().flow(&rich());
        assert_eq!(out.source, rich().source);
    }

    #[test]
    fn invalid_paths_are_refused_as_go_refuses_them() {
        for bad in [
            "nope",
            "source.nope",
            "verdict.x",
            "egress_allowed_by.name",
            "",
            "ip",
            "flow.time",
        ] {
            let e = FlowMask::new(&[bad]).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("proto: invalid path {bad:?} for message \"flow.Flow\"")
            );
        }
        assert!(FlowMask::new::<&str>(&[]).unwrap().is_none());
    }

    #[test]
    fn filtering_garbage_never_panics() {
        let keep = Fields(vec![(1, None), (8, Some(Fields(vec![(6, None)])))]);
        let bytes = rich().encode_to_vec();
        for cut in 0..bytes.len() {
            let mut out = Vec::new();
            filter_bytes(&bytes[..cut], &keep, &mut out);
            let _ = Flow::decode(&out[..]);
        }
        let mut out = Vec::new();
        filter_bytes(&[0x42, 0xff, 0xff, 0xff, 0xff, 0x0f], &keep, &mut out);
        assert!(out.is_empty());
    }
}
