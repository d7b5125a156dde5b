//! webb-relay: one Observer API for a whole cluster, merged in time order
//! from every node agent.
//!
//! - [`pool`]: which nodes exist (static, Peer service, DNS) and whether
//!   they answer;
//! - [`merge`]: one client's fan-out and time-ordered merge;
//! - [`raw`]: flows forwarded as bytes, read only for their time;
//! - [`server`]: the Observer, Peer and health services.

mod k8s;
mod merge;
mod metrics;
mod pool;
mod raw;
mod server;

/// Every merged flow is decoded and re-encoded; mimalloc makes the
/// per-field allocations cheaper than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use webb_proto::{
    observer::observer_server::ObserverServer,
    peer::peer_server::PeerServer,
    transport::{self, Address, ClientTls},
};

/// webb-relay: serves the Observer API for every node agent at once.
#[derive(Debug, Parser)]
#[command(name = "webb-relay", version)]
struct Args {
    /// Address to serve on
    #[arg(long, default_value = "0.0.0.0:4245")]
    listen: SocketAddr,
    /// A node agent (HOST:PORT; an IP alone means port 4244); repeatable
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
    /// Learn the nodes from this agent's (or relay's) Peer service
    #[arg(long, value_name = "HOST:PORT")]
    peer_service: Option<String>,
    /// Learn the nodes by resolving this name periodically (a Kubernetes
    /// headless service), e.g. webb-agent.kube-system.svc:4244
    #[arg(long, value_name = "NAME:PORT")]
    peer_dns: Option<String>,
    /// Learn the nodes from the ready endpoints of this Service's
    /// EndpointSlices, watched through the Kubernetes API
    /// (NAMESPACE/NAME, e.g. kube-system/webb-agent)
    #[arg(long, value_name = "NAMESPACE/NAME")]
    peer_k8s_service: Option<String>,
    /// kubeconfig for --peer-k8s-service outside a pod
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// kubeconfig context for --peer-k8s-service
    #[arg(long, value_name = "NAME")]
    kube_context: Option<String>,
    /// How often --peer-dns is resolved again
    #[arg(long, default_value = "10s", value_parser = duration)]
    peer_dns_interval: Duration,
    /// The longest a merged flow waits for a silent node before it is sent
    #[arg(long, default_value = "200ms", value_parser = duration)]
    sort_delay: Duration,
    /// How long to wait when dialing a node
    #[arg(long, default_value = "5s", value_parser = duration)]
    dial_timeout: Duration,
    /// Serve TLS with this certificate (PEM; needs --tls-key-file)
    #[arg(long, value_name = "FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// The key of --tls-cert-file (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// Require client certificates signed by these CAs (mutual TLS)
    #[arg(
        long,
        value_name = "FILES",
        value_delimiter = ',',
        requires = "tls_cert_file"
    )]
    tls_client_ca_files: Vec<PathBuf>,
    /// Dial the nodes with TLS
    #[arg(long)]
    peer_tls: bool,
    /// CAs to trust for the nodes' certificates (default: the system's)
    #[arg(long, value_name = "FILES", value_delimiter = ',')]
    peer_tls_ca_cert_files: Vec<PathBuf>,
    /// Client certificate for mutual TLS to the nodes
    #[arg(long, value_name = "FILE")]
    peer_tls_client_cert_file: Option<PathBuf>,
    /// Client key for mutual TLS to the nodes
    #[arg(long, value_name = "FILE")]
    peer_tls_client_key_file: Option<PathBuf>,
    /// Name to verify the nodes' certificates against
    #[arg(long, value_name = "NAME")]
    peer_tls_server_name: Option<String>,
    /// Serve the relay's metrics (OpenMetrics text) at /metrics on this
    /// address, e.g. :9966
    #[arg(long, alias = "metrics-listen-address", value_name = "[HOST]:PORT", value_parser = webb_proto::metrics_http::parse_listen)]
    metrics_listen: Option<SocketAddr>,
}

fn duration(s: &str) -> Result<Duration, String> {
    webb_proto::duration::parse(s).ok_or_else(|| webb_proto::duration::error(s))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.peers.is_empty()
        && args.peer_service.is_none()
        && args.peer_dns.is_none()
        && args.peer_k8s_service.is_none()
    {
        anyhow::bail!(
            "no nodes to relay: give --peer HOST:PORT (repeatable), --peer-service HOST:PORT, --peer-dns NAME:PORT or --peer-k8s-service NAMESPACE/NAME"
        );
    }
    let peer_tls = (args.peer_tls
        || !args.peer_tls_ca_cert_files.is_empty()
        || args.peer_tls_client_cert_file.is_some())
    .then(|| ClientTls {
        ca_files: args.peer_tls_ca_cert_files.clone(),
        client_cert: args.peer_tls_client_cert_file.clone(),
        client_key: args.peer_tls_client_key_file.clone(),
        server_name: args.peer_tls_server_name.clone(),
        insecure: false,
    });
    let pool = pool::Pool::new(peer_tls.clone(), args.dial_timeout);
    for p in &args.peers {
        pool.add(p, None, None)?;
    }
    if let Some(ps) = &args.peer_service {
        let addr = Address::parse(ps, webb_proto::DEFAULT_AGENT_PORT)
            .map_err(|e| anyhow::anyhow!("--peer-service: {e}"))?;
        tokio::spawn(pool.clone().follow_peer_service(addr));
    }
    if let Some(svc) = &args.peer_k8s_service {
        let svc = k8s::ServiceRef::parse(svc, args.kubeconfig.clone(), args.kube_context.clone())?;
        let client = k8s::client(&svc).await?;
        tokio::spawn(k8s::follow(pool.clone(), svc, client));
    }
    if let Some(dns) = &args.peer_dns {
        let (name, port) = dns
            .rsplit_once(':')
            .and_then(|(n, p)| Some((n.to_owned(), p.parse::<u16>().ok()?)))
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| anyhow::anyhow!("--peer-dns: {dns:?} is not NAME:PORT"))?;
        tokio::spawn(pool.clone().follow_dns(name, port, args.peer_dns_interval));
    }
    if let Some(addr) = args.metrics_listen {
        let pool = pool.clone();
        webb_proto::metrics_http::start(addr, Arc::new(move || metrics::encode_all(&pool)))
            .await
            .with_context(|| format!("--metrics-listen {addr}: cannot listen"))?;
    }
    let relay = server::Relay {
        pool: Arc::clone(&pool),
        merge: merge::Options {
            delay: args.sort_delay,
            node_name: "webb-relay",
        },
        started: std::time::Instant::now(),
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in [webb_proto::OBSERVER_HEALTH_SERVICE, ""] {
        health
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, tls = args.tls_cert_file.is_some(), "serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut builder = tonic::transport::Server::builder();
    if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) {
        builder = builder
            .tls_config(transport::server_tls(cert, key, &args.tls_client_ca_files)?)
            .context("TLS configuration")?;
    }
    builder
        .add_service(health_service)
        .add_service(raw::ObserverService {
            typed: ObserverServer::new(relay.clone()).max_decoding_message_size(64 << 20),
            get_flows: relay.clone(),
        })
        .add_service(webb_proto::analysis::analysis_server::AnalysisServer::new(
            relay.clone(),
        ))
        .add_service(PeerServer::new(relay))
        .serve_with_incoming_shutdown(webb_proto::transport::incoming(listener), async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
        })
        .await
        .context("gRPC server failed")?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEBB_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("webb-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}
