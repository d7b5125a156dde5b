//! webb-agent: one per node. Loads the kernel programs, turns their events
//! into Hubble flows, keeps a ring of recent flows and serves the Observer
//! API (port 4244).
//!
//! - [`datapath`]: the kernel side (the only module that touches it);
//! - [`decode`]: kernel events to flows;
//! - [`observer`]: the flow ring and subscribers;
//! - [`server`]: the gRPC services;
//! - [`endpoints`], [`policy`]: the files that name pods and restrict them;
//! - [`kernel`]: facts about the running kernel (BTF, tracepoint layout).

pub mod args;
pub mod datapath;
pub mod decode;
pub mod endpoints;
pub mod kernel;
pub mod l7;
pub mod metrics;
pub mod observer;
pub mod policy;
pub mod server;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock, atomic::AtomicBool},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use webb_proto::{observer::observer_server::ObserverServer, peer::peer_server::PeerServer};

use crate::{
    args::{Args, PolicyMode},
    datapath::{Datapath, Ingest, KernelMaps, Options},
    decode::Context,
    endpoints::EndpointTable,
    kernel::DropReasons,
    observer::Hub,
    server::Service,
};

/// The files the agent watches, and the state derived from them.
struct Inputs {
    endpoints: Option<PathBuf>,
    policy: Option<PathBuf>,
}

impl Inputs {
    fn load(&self, node_name: &str, drop_reasons: Arc<DropReasons>) -> anyhow::Result<Context> {
        let table = match &self.endpoints {
            Some(p) => EndpointTable::load(p)?,
            None => EndpointTable::default(),
        };
        let policies = match &self.policy {
            Some(p) => policy::load_file(p)?,
            None => Vec::new(),
        };
        let compiled = policy::compile(&policies, &table);
        Ok(Context {
            node_name: node_name.to_owned(),
            endpoints: Arc::new(table),
            policy: Arc::new(compiled),
            drop_reasons,
        })
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        [&self.endpoints, &self.policy]
            .iter()
            .map(|p| p.as_deref().and_then(modified))
            .collect()
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Runs the agent until SIGINT/SIGTERM. `after_startup` runs once the
/// datapath is attached and serving starts (the binary uses it to hand the
/// memory of start-up work, such as parsing BTF, back to the system).
pub async fn run(args: Args, after_startup: impl FnOnce()) -> anyhow::Result<()> {
    args.validate().map_err(|e| anyhow::anyhow!(e))?;
    let node_name = args.node_name();
    let inputs = Inputs {
        endpoints: args.endpoints.clone(),
        policy: args.policy.clone(),
    };
    // BTF is parsed once: sk_buff offsets for the kfree_skb program, drop
    // reason names for the decoder.
    let (skb_offsets, drop_reasons) = match kernel::read_btf(Path::new(kernel::VMLINUX_BTF)) {
        Ok((offsets, reasons)) => (Some(offsets), reasons),
        Err(e) => {
            tracing::warn!("cannot read kernel BTF: {e:#}");
            (None, DropReasons::default())
        }
    };
    let drop_reasons = Arc::new(drop_reasons);
    let ctx = inputs.load(&node_name, drop_reasons.clone())?;

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("--listen {}: cannot listen", args.listen))?;
    let local = listener.local_addr()?;

    // `--interface` must exist now; interfaces named in the endpoints file
    // are attached below and whenever they appear later.
    let (mut dp, mut kernel_maps) = Datapath::load(&Options {
        interfaces: args.interface.clone(),
        event_ring_bytes: args.event_ring_mib << 20,
        skb_offsets,
        cgroup: args.cgroup.clone(),
        flow_map_size: args.flow_map_size,
        flush: args.flush_interval.into(),
        kfree_skb: !args.no_kernel_drops,
        // Not network drops: queues of closing sockets, freed whole.
        kfree_skip: ["QUEUE_PURGE", "SOCKET_CLOSE"]
            .iter()
            .filter_map(|n| drop_reasons.number(n))
            .collect(),
        shared_kernel: args.shared_kernel,
        policy_audit: args.policy_mode == PolicyMode::Audit,
        l7_capture: args.l7_capture_bytes,
        dns_ports: args.dns_ports.clone(),
    })?;
    let policy_loaded = inputs.policy.is_some();
    kernel_maps.sync(&ctx, policy_loaded)?;
    watch_endpoint_interfaces(&mut dp, &ctx.endpoints);
    tracing::info!(attached = ?dp.attached, node = %node_name, listen = %local, "datapath attached");

    let ring = dp.take_ring()?;
    // Shared with the watcher, which attaches to new pod interfaces.
    let dp = Arc::new(Mutex::new(dp));
    let hub = Arc::new(Hub::new(args.ring_capacity as usize));
    let context = Arc::new(RwLock::new(ctx));
    // The maps are shared with the reload task; the Ebpf object (and with it
    // every attachment) stays in `dp` until shutdown.
    let maps: Arc<Mutex<KernelMaps>> = Arc::new(Mutex::new(kernel_maps));
    let stop = Arc::new(AtomicBool::new(false));

    let metrics = match args.metrics() {
        Some((handlers, addr)) => {
            let stats_dp = dp.clone();
            let m = Arc::new(
                crate::metrics::Metrics::new(
                    handlers,
                    args.metrics_max_series as usize,
                    hub.clone(),
                )
                .with_program_stats(Arc::new(move || {
                    stats_dp
                        .lock()
                        .map(|d| d.program_stats())
                        .unwrap_or_default()
                })),
            );
            let encode = m.clone();
            webb_proto::metrics_http::start(addr, Arc::new(move || encode.encode()))
                .await
                .with_context(|| format!("--metrics-listen {addr}: cannot listen"))?;
            Some(m)
        }
        None => None,
    };
    let ingest = Ingest {
        ring,
        hub: hub.clone(),
        context: context.clone(),
        maps: maps.clone(),
        stop: stop.clone(),
        poll_interval: args.ring_poll_interval.into(),
        redaction: args.redaction(),
        metrics,
    };
    let ingest_thread = std::thread::Builder::new()
        .name("webb-ingest".into())
        .spawn(move || ingest.run())?;

    let reload = tokio::spawn(watch_inputs(
        inputs,
        context.clone(),
        maps.clone(),
        dp.clone(),
        drop_reasons,
        node_name.clone(),
        policy_loaded,
    ));

    let service = Service {
        hub,
        node_name,
        address: args
            .advertise_address
            .clone()
            .unwrap_or_else(|| local.to_string()),
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(
            webb_proto::OBSERVER_HEALTH_SERVICE,
            tonic_health::ServingStatus::Serving,
        )
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    after_startup();
    let mut builder = tonic::transport::Server::builder();
    if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) {
        builder = builder
            .tls_config(webb_proto::transport::server_tls(
                cert,
                key,
                &args.tls_client_ca_files,
            )?)
            .context("TLS configuration")?;
    }
    let served = builder
        .add_service(health_service)
        .add_service(ObserverServer::new(service.clone()))
        .add_service(PeerServer::new(service))
        .serve_with_incoming_shutdown(webb_proto::transport::incoming(listener), shutdown_signal())
        .await;

    tracing::info!("shutting down: detaching the datapath");
    // The watcher holds the datapath too: wait until it is gone, so that
    // dropping our handle below is what detaches everything.
    reload.abort();
    let _ = reload.await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = ingest_thread.join();
    drop(maps);
    drop(dp);
    tracing::info!("detached");
    served.context("gRPC server failed")
}

/// Attaches the TC programs to every endpoint's interface that exists and is
/// not watched yet; a missing one is retried on the next check.
fn watch_endpoint_interfaces(dp: &mut Datapath, table: &EndpointTable) {
    for e in &table.endpoints {
        let Some(iface) = &e.interface else { continue };
        match dp.watch_interface(iface) {
            Ok(true) => {
                tracing::info!(interface = %iface, pod = %format!("{}/{}", e.namespace, e.pod), "watching")
            }
            Ok(false) => {}
            Err(err) => tracing::debug!("not watching yet: {err:#}"),
        }
    }
}

async fn watch_inputs(
    inputs: Inputs,
    context: Arc<RwLock<Context>>,
    maps: Arc<Mutex<KernelMaps>>,
    dp: Arc<Mutex<Datapath>>,
    drop_reasons: Arc<DropReasons>,
    node_name: String,
    policy_loaded: bool,
) {
    let mut stamps = inputs.stamps();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        // Pods' veths come and go: attach to those that appeared.
        let table = context.read().map(|c| c.endpoints.clone()).ok();
        if let (Some(table), Ok(mut dp)) = (table, dp.lock()) {
            watch_endpoint_interfaces(&mut dp, &table);
        }
        let now = inputs.stamps();
        if now == stamps {
            continue;
        }
        stamps = now;
        match inputs.load(&node_name, drop_reasons.clone()) {
            Ok(ctx) => {
                let synced = maps
                    .lock()
                    .map_err(|_| anyhow::anyhow!("maps lock poisoned"))
                    .and_then(|mut m| m.sync(&ctx, policy_loaded));
                match synced {
                    Ok(()) => {
                        tracing::info!(
                            endpoints = ctx.endpoints.endpoints.len(),
                            "reloaded endpoints and policy"
                        );
                        if let Ok(mut c) = context.write() {
                            *c = ctx;
                        }
                    }
                    Err(e) => tracing::error!("reload: updating kernel maps failed: {e:#}"),
                }
            }
            Err(e) => {
                tracing::error!("reload failed, keeping the previous endpoints and policy: {e:#}")
            }
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
