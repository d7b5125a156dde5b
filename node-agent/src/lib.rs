//! webb-agent: one per node. Loads the kernel programs, turns their events
//! into Hubble flows, keeps a ring of recent flows and serves the Observer
//! API (port 4244).
//!
//! - [`datapath`]: the kernel side (the only module that touches it);
//! - [`decode`]: kernel events to flows;
//! - [`observer`]: the flow ring and subscribers;
//! - [`server`]: the gRPC services;
//! - [`cluster`]: what the agent knows of the cluster (the files, the
//!   Kubernetes API, the node's links) and the reconciler that turns it
//!   into names, identities, policy and kernel maps;
//! - [`endpoints`], [`policy`]: the endpoint table and NetworkPolicy;
//! - [`kernel`]: facts about the running kernel (BTF, tracepoint layout).

pub mod agent_events;
pub mod analysis;
pub mod args;
pub mod cluster;
pub mod datapath;
pub mod decode;
pub mod endpoints;
pub mod export;
pub mod ingest;
pub mod kernel;
pub mod l7;
pub mod metrics;
pub mod observer;
pub mod policy;
pub mod server;
pub mod store;

use std::{
    path::Path,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use anyhow::Context as _;
use webb_proto::{observer::observer_server::ObserverServer, peer::peer_server::PeerServer};

use crate::{
    args::{Args, PolicyMode},
    cluster::{Reconciler, file::FileSource},
    datapath::{Datapath, DatapathKernel, KernelMaps, KernelRing, Options},
    kernel::DropReasons,
    observer::Hub,
    server::Service,
};

/// Runs the agent until SIGINT/SIGTERM. `after_startup` runs once the
/// datapath is attached and serving starts (the binary uses it to hand the
/// memory of start-up work, such as parsing BTF, back to the system).
pub async fn run(args: Args, after_startup: impl FnOnce()) -> anyhow::Result<()> {
    args.validate().map_err(|e| anyhow::anyhow!(e))?;
    let node_name = args.node_name();
    // The store first: a directory another agent holds stops the start
    // before anything is attached.
    let flow_store = match &args.flow_store {
        Some(dir) => {
            let store = store::FlowStore::open(store::Options {
                dir: dir.clone(),
                max_size: args.flow_store_max_size.0,
                max_age: args.flow_store_max_age.into(),
            })?;
            let st = store.status();
            tracing::info!(dir = %dir.display(), flows = st.items, bytes = st.bytes, oldest = ?st.oldest, "flow store open");
            Some(store)
        }
        None => None,
    };
    // The exporter too: a bad filter or an unwritable file stops the start.
    // The static exporter and the dynamic flow logs count together.
    let export_counters = Arc::new(export::Counters::default());
    let exporter = match args.export_options()? {
        Some(opts) => {
            let target = opts.target.clone();
            let e = export::Exporter::start_counted(opts, export_counters.clone())?;
            tracing::info!(to = ?target, "exporting flows");
            Some(e)
        }
        None => None,
    };
    let flow_logs = args.flowlogs_config_path.clone().map(|path| {
        let d = export::dynamic::Dynamic::start(path, export_counters.clone());
        tracing::info!(path = %d.path().display(), running = ?d.running(), "dynamic flow logs");
        d
    });
    let export_counters = (exporter.is_some() || flow_logs.is_some()).then_some(export_counters);
    let files = FileSource {
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
    // The files are read now, so that a broken one stops the start with its
    // line; later they are one source among others.
    let kubernetes = args.kubernetes();
    let mut reconciler = Reconciler::new(
        &node_name,
        drop_reasons.clone(),
        args.policy.is_some() || kubernetes,
    );
    // Agent events (GetAgentEvents) start with this start.
    let agent_events = Arc::new(agent_events::AgentEvents::new(&node_name));
    agent_events.publish([agent_events::agent_started(
        std::time::SystemTime::now().into(),
    )]);
    reconciler.set_events(agent_events.clone());
    for u in files.read()? {
        reconciler.apply(u);
    }
    if files.endpoints.is_some() || files.policy.is_some() {
        reconciler.apply(cluster::Update::Health(
            cluster::Source::File,
            cluster::Health::Synced,
        ));
    }
    if kubernetes {
        reconciler.apply(cluster::Update::Health(
            cluster::Source::Kube,
            cluster::Health::Failing("connecting to the API server".to_owned()),
        ));
    }
    let kube_client = if kubernetes {
        let opts = cluster::k8s::KubeOptions {
            kubeconfig: args.kubeconfig.clone(),
            context: args.kube_context.clone(),
        };
        Some(cluster::k8s::client(&opts).await?)
    } else {
        None
    };

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("--listen {}: cannot listen", args.listen))?;
    let local = listener.local_addr()?;

    // `--interface` must exist now; interfaces named in the endpoints file
    // are attached below and whenever they appear later.
    let (mut dp, kernel_maps) = Datapath::load(&Options {
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
        trace_all: args.trace_points == args::TracePoints::All,
    })?;
    let ring = dp.take_ring()?;
    // Shared with the reconciler, which attaches to pod interfaces; the Ebpf
    // object (and with it every attachment) stays in `dp` until shutdown.
    let dp = Arc::new(Mutex::new(dp));
    let maps: Arc<Mutex<KernelMaps>> = Arc::new(Mutex::new(kernel_maps));
    let mut kernel = DatapathKernel {
        maps: maps.clone(),
        datapath: dp.clone(),
        fixed_interfaces: args.interface.iter().cloned().collect(),
    };
    let ctx = reconciler
        .reconcile(&mut kernel)
        .unwrap_or_else(|| reconciler.context());
    if let Ok(dp) = dp.lock() {
        tracing::info!(attached = ?dp.attached, node = %node_name, listen = %local, "datapath attached");
    }
    let hub = Arc::new(Hub::new(args.ring_capacity as usize));
    let context = Arc::new(RwLock::new(ctx));
    let generation = Arc::new(AtomicU64::new(0));
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
                .with_flow_store(flow_store.clone())
                .with_exporter(export_counters.clone())
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
    // The sinks, in order: metrics count a flow, the store keeps it, the
    // exporter writes it out, then the ring holds it and subscribers get it.
    let mut sinks: Vec<Box<dyn ingest::FlowSink>> = Vec::new();
    if let Some(m) = metrics {
        sinks.push(Box::new(m));
    }
    let mut first_seq = 0;
    if let Some(store) = &flow_store {
        first_seq = store.next_seq();
        sinks.push(Box::new(store.clone()));
    }
    if let Some(e) = exporter {
        sinks.push(Box::new(e));
    }
    if let Some(d) = flow_logs {
        sinks.push(Box::new(d));
    }
    sinks.push(Box::new(hub.clone()));
    let mut decoder = decode::Decoder::new(
        context
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone()),
    );
    decoder.l7 = l7::Tracker::new(args.redaction(), hub.counters.l7.clone());
    decoder.l7.per_point = args.trace_points == args::TracePoints::All;
    let pipeline = ingest::Pipeline::new(decoder, hub.clone(), sinks)
        .starting_at(first_seq)
        .with_updates(ingest::ContextUpdates {
            context: context.clone(),
            generation: generation.clone(),
        });
    let source = KernelRing {
        ring,
        maps: maps.clone(),
    };
    let (ingest_stop, poll) = (stop.clone(), args.ring_poll_interval.into());
    let ingest_thread = std::thread::Builder::new()
        .name("webb-ingest".into())
        .spawn(move || pipeline.run(source, &ingest_stop, poll))?;

    // Sources of cluster state, and the reconciler they feed.
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    let mut sources = vec![tokio::spawn(files.run(tx.clone()))];
    if let Some(client) = kube_client {
        sources.extend(cluster::k8s::spawn(client, tx.clone()));
    }
    if !args.no_interface_discovery {
        sources.push(tokio::spawn(cluster::links::run(tx.clone())));
    }
    // Pod UIDs come from the API: without it the kubelet's tree names nothing.
    if kubernetes && let Some(root) = args.kubelet_cgroup_root.as_ref().or(args.cgroup.as_ref()) {
        sources.push(cluster::cgroups::spawn(root.clone(), tx.clone()));
    }
    drop(tx);
    let published = context.clone();
    let (peers_tx, peers) = tokio::sync::watch::channel(Vec::new());
    let (status_tx, cluster_status) = tokio::sync::watch::channel(reconciler.status());
    let (me, port) = (node_name.clone(), local.port());
    let reload = tokio::spawn(cluster::run(reconciler, rx, kernel, move |ctx, r| {
        status_tx.send_if_modified(|s| {
            let now = r.status();
            let changed = *s != now;
            *s = now;
            changed
        });
        let Some(ctx) = ctx else { return };
        if let Ok(mut c) = published.write() {
            *c = ctx;
        }
        generation.fetch_add(1, Ordering::Release);
        peers_tx.send_if_modified(|p| {
            let now = r.peers(&me, port);
            let changed = *p != now;
            *p = now;
            changed
        });
    }));

    let analyst = analysis::Analyst {
        hub: hub.clone(),
        store: flow_store.clone(),
        node_name: node_name.clone(),
        context: context.clone(),
    };
    let service = Service {
        hub,
        store: flow_store.clone(),
        node_name,
        address: args
            .advertise_address
            .clone()
            .unwrap_or_else(|| local.to_string()),
        peers,
        cluster_status,
        agent_events,
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
        .add_service(webb_proto::analysis::analysis_server::AnalysisServer::new(
            analyst,
        ))
        .serve_with_incoming_shutdown(webb_proto::transport::incoming(listener), shutdown_signal())
        .await;

    tracing::info!("shutting down: detaching the datapath");
    // The watcher holds the datapath too: wait until it is gone, so that
    // dropping our handle below is what detaches everything.
    for s in &sources {
        s.abort();
    }
    reload.abort();
    let _ = reload.await;
    for s in sources {
        let _ = s.await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = ingest_thread.join();
    if let Some(store) = &flow_store {
        store.close();
    }
    drop(maps);
    drop(dp);
    tracing::info!("detached");
    served.context("gRPC server failed")
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
