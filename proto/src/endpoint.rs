//! `flow.Endpoint` as a shared pointer.
//!
//! Every flow names its two endpoints, and every flow of an endpoint names
//! it identically: namespace, pod, labels, workloads. A node agent's ring
//! holds tens of thousands of flows and the dashboard a hundred thousand, so
//! [`Endpoint`] is an `Arc` of the fields ([`EndpointData`]): a clone costs a
//! reference count, not a dozen strings. On the wire and in JSON it is
//! exactly `flow.Endpoint`; only the Rust type differs from generated code.
//!
//! Reading works through `Deref` (`flow.source.as_ref().map(|e| &e.namespace)`);
//! building takes an [`EndpointData`] (`EndpointData { .. }.into()`), and
//! [`Endpoint::make_mut`] edits a copy when the data is shared.

use std::{
    collections::HashSet,
    fmt,
    ops::Deref,
    sync::{Arc, LazyLock},
};

use prost::{
    DecodeError, Message,
    bytes::{Buf, BufMut},
    encoding::{DecodeContext, WireType},
};

pub use crate::shared::EndpointData;

/// `flow.Endpoint`: the fields behind a shared pointer.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Endpoint(Arc<EndpointData>);

/// One allocation for every empty endpoint (prost builds one per decoded
/// field before merging into it).
static EMPTY: LazyLock<Arc<EndpointData>> = LazyLock::new(Arc::default);

impl Endpoint {
    /// The fields, for editing; copied first if another flow shares them.
    pub fn make_mut(&mut self) -> &mut EndpointData {
        Arc::make_mut(&mut self.0)
    }

    /// Whether two endpoints share one allocation (not just equal fields).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Whether another `Endpoint` (another flow, a decoder's table) holds
    /// the same fields.
    pub fn is_shared(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }

    /// The address of the shared fields: an identity for as long as this
    /// `Endpoint` (or a clone) is alive, as a cache key that needs no
    /// hashing of strings.
    pub fn addr(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }
}

impl Default for Endpoint {
    fn default() -> Self {
        Self(EMPTY.clone())
    }
}

impl Deref for Endpoint {
    type Target = EndpointData;

    fn deref(&self) -> &EndpointData {
        &self.0
    }
}

impl From<EndpointData> for Endpoint {
    fn from(data: EndpointData) -> Self {
        Self(Arc::new(data))
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Message for Endpoint {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.0.encode_raw(buf)
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        self.make_mut().merge_field(tag, wire_type, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.encoded_len()
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl serde::Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        EndpointData::deserialize(d).map(Self::from)
    }
}

/// Makes equal endpoints share one allocation, for a long-lived buffer of
/// flows that arrived decoded separately (each with its own copy). Bounded:
/// past `capacity` distinct endpoints it starts over, so an endpoint churn
/// costs at most one table.
#[derive(Debug)]
pub struct Interner {
    /// foldhash: several times faster than std's SipHash on these short
    /// strings, and still seeded per process.
    seen: HashSet<Endpoint, foldhash::fast::RandomState>,
    capacity: usize,
}

impl Interner {
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashSet::default(),
            capacity: capacity.max(1),
        }
    }

    /// Replaces `ep` by the shared copy of its value, remembering it if new.
    pub fn intern(&mut self, ep: &mut Endpoint) {
        if let Some(shared) = self.seen.get(ep) {
            *ep = shared.clone();
            return;
        }
        if self.seen.len() >= self.capacity {
            self.seen.clear();
        }
        self.seen.insert(ep.clone());
    }

    /// Both endpoints of a flow.
    pub fn intern_flow(&mut self, flow: &mut crate::flow::Flow) {
        for ep in [flow.source.as_mut(), flow.destination.as_mut()]
            .into_iter()
            .flatten()
        {
            self.intern(ep);
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests;
