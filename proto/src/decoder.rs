//! Decoding a stream of `GetFlowsResponse`s with endpoints shared between
//! flows.
//!
//! Half of what a client spends decoding a flow goes to its two endpoints:
//! namespace, pod, a dozen label strings, workloads, each a fresh
//! allocation. Yet a stream names the same few endpoints over and over.
//! [`ResponseDecoder`] remembers the wire bytes of the endpoints it decoded
//! last; when a flow carries the same bytes again it hands out the same
//! [`Endpoint`] (a reference count) instead of decoding them again. Every
//! other field goes through the generated code, so the result is exactly
//! what `GetFlowsResponse::decode` gives, and `tests` holds it to that on
//! recorded, generated and corrupted input.
//!
//! The memory is a fixed table: a stream of ever-new endpoints only turns
//! hits into misses, it cannot grow the table or slow a lookup down.

use std::hash::BuildHasher;

use prost::{
    DecodeError, Message,
    bytes::Buf,
    encoding::{DecodeContext, WireType, decode_key, decode_varint},
};

use crate::{
    flow::{Endpoint, EndpointData, Flow},
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
};

/// `observer.GetFlowsResponse.flow`.
const RESPONSE_FLOW: u32 = 1;
/// `flow.Flow.source` and `flow.Flow.destination`.
const FLOW_SOURCE: u32 = 8;
const FLOW_DESTINATION: u32 = 9;

/// Endpoints remembered: more than the pods of a busy node, a few hundred
/// KiB at most.
const SLOTS: usize = 1024;

/// Decodes `GetFlowsResponse`s one after another, sharing the endpoints of
/// the recent ones. One per reading thread.
pub struct ResponseDecoder {
    slots: Box<[Slot]>,
    hasher: foldhash::fast::SeedableRandomState,
}

#[derive(Default)]
struct Slot {
    /// The endpoint's encoding, as it came on the wire.
    wire: Vec<u8>,
    endpoint: Option<Endpoint>,
}

impl Default for ResponseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseDecoder {
    /// A table seeded per process, so which endpoints share a slot cannot
    /// be chosen from outside.
    pub fn new() -> Self {
        Self::with_hasher(foldhash::fast::SeedableRandomState::random())
    }

    /// A table whose slots are the same in every run, for tests that count
    /// what was shared.
    #[cfg(test)]
    fn fixed() -> Self {
        Self::with_hasher(foldhash::fast::SeedableRandomState::fixed())
    }

    fn with_hasher(hasher: foldhash::fast::SeedableRandomState) -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            hasher,
        }
    }

    /// Decodes one response; the same value as `GetFlowsResponse::decode`,
    /// and an error exactly when that gives one.
    pub fn decode(&mut self, mut buf: &[u8]) -> Result<GetFlowsResponse, DecodeError> {
        let mut resp = GetFlowsResponse::default();
        while buf.has_remaining() {
            let (tag, wire_type) = decode_key(&mut buf)?;
            if tag == RESPONSE_FLOW
                && wire_type == WireType::LengthDelimited
                && let Some(body) = split_delimited(&mut buf)
            {
                // A flow after another member replaces it; a second flow
                // merges into the first.
                let mut flow = match resp.response_types.take() {
                    Some(ResponseTypes::Flow(flow)) => flow,
                    _ => Box::default(),
                };
                self.merge_flow(&mut flow, body)?;
                resp.response_types = Some(ResponseTypes::Flow(flow));
            } else {
                resp.merge_field(tag, wire_type, &mut buf, DecodeContext::default())?;
            }
        }
        Ok(resp)
    }

    /// Merges a flow's fields. The generated code gets a fresh
    /// `DecodeContext` (prost keeps the way to nest one to itself), so its
    /// nesting limit counts from here; flow.proto has no recursive message,
    /// so the depth is bounded all the same.
    fn merge_flow(&mut self, flow: &mut Flow, mut buf: &[u8]) -> Result<(), DecodeError> {
        while buf.has_remaining() {
            let (tag, wire_type) = decode_key(&mut buf)?;
            let field = match tag {
                FLOW_SOURCE => &mut flow.source,
                FLOW_DESTINATION => &mut flow.destination,
                _ => {
                    flow.merge_field(tag, wire_type, &mut buf, DecodeContext::default())?;
                    continue;
                }
            };
            let Some(wire) = (wire_type == WireType::LengthDelimited)
                .then(|| split_delimited(&mut buf))
                .flatten()
            else {
                // Not an endpoint, or cut short: the generated code says
                // what is wrong.
                flow.merge_field(tag, wire_type, &mut buf, DecodeContext::default())?;
                continue;
            };
            match field {
                // A second occurrence merges into the first, as protobuf
                // says; no encoder we know of writes one.
                Some(endpoint) => endpoint.merge(wire)?,
                None => *field = Some(self.endpoint(wire)?),
            }
        }
        Ok(())
    }

    /// The endpoint encoded as `wire`: the one handed out last time these
    /// bytes came, or a new one.
    fn endpoint(&mut self, wire: &[u8]) -> Result<Endpoint, DecodeError> {
        let index = self.hasher.hash_one(wire) as usize % SLOTS;
        let slot = &mut self.slots[index];
        if let Some(endpoint) = &slot.endpoint
            && slot.wire == wire
        {
            return Ok(endpoint.clone());
        }
        let endpoint = Endpoint::from(EndpointData::decode(wire)?);
        slot.wire.clear();
        slot.wire.extend_from_slice(wire);
        slot.endpoint = Some(endpoint.clone());
        Ok(endpoint)
    }
}

/// Takes a length-delimited field's bytes off the front of `buf`; `None`,
/// leaving `buf` as it was, when the length is malformed or longer than
/// what is left (the caller then lets the generated code report it).
fn split_delimited<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut rest = *buf;
    let len = usize::try_from(decode_varint(&mut rest).ok()?).ok()?;
    let body = rest.get(..len)?;
    *buf = &rest[len..];
    Some(body)
}

#[cfg(test)]
mod tests;
