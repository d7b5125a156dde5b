//! Compiles `proto/**/*.proto` with protox (a pure-Rust protobuf compiler, so a
//! fresh machine needs no system `protoc`), then generates prost types, tonic
//! clients and servers, and pbjson serde impls that write JSON the way Hubble
//! does (original proto field names, enums as names).

use std::{env, path::PathBuf};

use prost::Message as _;

const PROTOS: &[&str] = &[
    "proto/flow/flow.proto",
    "proto/relay/relay.proto",
    "proto/peer/peer.proto",
    "proto/observer/observer.proto",
    "proto/shared/shared.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let fds = protox::compile(PROTOS, ["proto"])?;
    let descriptor_path = out_dir.join("webb_descriptor.bin");
    std::fs::write(&descriptor_path, fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_well_known_types(true)
        // A Flow lives in the agent's ring tens of thousands of times; its
        // rarely-set nested messages are boxed so that, absent, they cost a
        // pointer instead of their full size inline.
        .boxed(".flow.Flow.tunnel")
        .boxed(".flow.Flow.l7")
        .boxed(".flow.Flow.file")
        .boxed(".flow.Flow.trace_context")
        .boxed(".flow.Flow.ip_trace_id")
        .boxed(".flow.Flow.source_service")
        .boxed(".flow.Flow.destination_service")
        .boxed(".flow.Flow.aggregate")
        .boxed(".flow.Flow.extensions")
        // Responses are mostly flows; boxing the member keeps the ring entry
        // small and puts the Flow in its own 1 KiB allocation.
        .boxed(".observer.GetFlowsResponse.response_types.flow")
        .extern_path(".google.protobuf", "crate::wkt")
        // Every flow of an endpoint carries the same Endpoint: the Rust type
        // is a shared pointer to the fields (`crate::endpoint`), so a ring of
        // flows holds each endpoint's names and labels once.
        .extern_path(".flow.Endpoint", "crate::endpoint::Endpoint")
        .type_attribute(".shared.EndpointData", "#[derive(Eq, Hash)]")
        .compile_fds(fds.clone())?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .extern_path(".flow.Endpoint", "crate::endpoint::Endpoint")
        .exclude([".flow.Endpoint"])
        .build(&[".flow", ".observer", ".peer", ".relay", ".shared"])?;
    Ok(())
}
