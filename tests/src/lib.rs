//! Test helpers shared by webb's end-to-end tests, the benchmarks and the
//! demo: the lab harness ([`lab`]), real agent processes ([`agent`]) and gRPC
//! helpers ([`client`]).
//!
//! Architecture invariant: nothing here fakes a data source. Labs are real
//! namespaces and veths, agents are the real `webb-agent` binary, and every
//! query goes over a real gRPC connection.

pub mod agent;
pub mod client;
pub mod lab;
