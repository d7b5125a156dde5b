//! Test helpers shared by webb's end-to-end tests, the benchmarks and the
//! demo: the lab harness ([`lab`]), real agent and relay processes ([`agent`],
//! [`relay`]), gRPC helpers ([`client`]), traffic in pods ([`traffic`]) and
//! scripted Observer servers for relay tests and benchmarks ([`synthetic`]),
//! and a Kubernetes API server double ([`kube_api`]).
//!
//! Architecture invariant: end-to-end tests fake no data source. Labs are
//! real namespaces and veths, agents are the real `webb-agent` binary, and
//! every query goes over a real gRPC connection. [`synthetic`] nodes serve
//! only the relay's unit tests and its benchmark, which say so.

pub mod agent;
pub mod client;
pub mod demo;
pub mod kube_api;
pub mod kube_real;
pub mod kube_sim;
pub mod lab;
pub mod prometheus;
pub mod relay;
pub mod synthetic;
pub mod tmux;
pub mod traffic;

use std::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialises privileged tests, or returns None (after saying why) when this
/// machine cannot run them.
pub fn privileged() -> Option<MutexGuard<'static, ()>> {
    if let Some(reason) = lab::privileged_skip_reason() {
        eprintln!("skipped: {reason}");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}
