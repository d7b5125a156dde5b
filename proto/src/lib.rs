//! The Hubble-compatible Observer API.
//!
//! The modules `flow`, `observer`, `peer` and `relay` are generated from the
//! `.proto` files in `proto/`; hand-written helpers live beside them:
//! [`json`] (Hubble's NDJSON form), [`endpoint`] (`flow.Endpoint` shared between flows), [`filter`] (the one flow filter engine),
//! [`transport`] (dialing, TLS), [`duration`] (flag durations) and [`names`] (enum names and event type numbers as Hubble spells them).
//!
//! Architecture invariant: only this crate knows the wire format.

pub mod decoder;
pub mod duration;
pub mod endpoint;
pub mod filter;
pub mod json;
pub mod mask;
pub mod metrics_http;
pub mod names;
pub mod top;
pub mod transport;
pub mod undecoded;
pub mod whatif;
pub mod wkt;

#[cfg(test)]
mod testing;

#[allow(clippy::all, missing_docs, deprecated)]
pub mod flow {
    include!(concat!(env!("OUT_DIR"), "/flow.rs"));
    include!(concat!(env!("OUT_DIR"), "/flow.serde.rs"));
    pub use crate::endpoint::{Endpoint, EndpointData};
}

/// The fields of `flow.Endpoint` as a plain struct; see [`endpoint`].
#[allow(clippy::all, missing_docs, deprecated)]
pub mod shared {
    include!(concat!(env!("OUT_DIR"), "/shared.rs"));
    include!(concat!(env!("OUT_DIR"), "/shared.serde.rs"));
}

#[allow(clippy::all, missing_docs, deprecated)]
pub mod relay {
    include!(concat!(env!("OUT_DIR"), "/relay.rs"));
    include!(concat!(env!("OUT_DIR"), "/relay.serde.rs"));
}

#[allow(clippy::all, missing_docs, deprecated)]
pub mod peer {
    include!(concat!(env!("OUT_DIR"), "/peer.rs"));
    include!(concat!(env!("OUT_DIR"), "/peer.serde.rs"));
}

#[allow(clippy::all, missing_docs, deprecated)]
pub mod observer {
    include!(concat!(env!("OUT_DIR"), "/observer.rs"));
    include!(concat!(env!("OUT_DIR"), "/observer.serde.rs"));
}

/// webb's own services (`proto/webb/`), beside Hubble's.
#[allow(clippy::all, missing_docs, deprecated)]
pub mod webb {
    pub mod analysis {
        include!(concat!(env!("OUT_DIR"), "/webb.analysis.rs"));
    }
}
pub use webb::analysis;

/// The gRPC service name that `hubble status` asks the health service about.
pub const OBSERVER_HEALTH_SERVICE: &str = "hubble.server.Observer";

/// Hubble's per-node (agent) port.
pub const DEFAULT_AGENT_PORT: u16 = 4244;
/// Hubble's relay port, and the CLI's default `--server`.
pub const DEFAULT_RELAY_PORT: u16 = 4245;
