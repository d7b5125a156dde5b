//! What the benchmarks share: a decoder for a small node's endpoints.

use std::sync::Arc;

use webb_agent::{
    decode::{Context, Decoder},
    endpoints::EndpointTable,
    kernel::DropReasons,
    policy,
};

/// The agent's real decoder over the endpoints file `endpoints`, with the
/// kernel drop reason 3 named NO_SOCKET.
pub fn decoder(endpoints: &str) -> Decoder {
    let table = EndpointTable::parse(endpoints).expect("endpoints");
    let compiled = policy::compile(&[], &table);
    Decoder::new(Context {
        node_name: "bench-node".into(),
        endpoints: Arc::new(table),
        policy: Arc::new(compiled),
        drop_reasons: Arc::new(DropReasons::from_names([(3, "NO_SOCKET".into())])),
    })
}
