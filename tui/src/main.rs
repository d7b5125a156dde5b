//! `webb`: the command line for webb and Hubble servers.
//!
//! This first cut has `observe` (with `--server`, `--follow`, `--last`,
//! `--first`, `--all`, `--verdict`, and `-o compact|json|jsonpb`) and
//! `status`; the CLI issue brings the rest of Hubble's flags and printers.

mod printer;

use std::{io::Write as _, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt as _;
use webb_proto::{
    flow::{FlowFilter, Verdict},
    observer::{GetFlowsRequest, ServerStatusRequest, observer_client::ObserverClient},
};

/// webb: see every flow, DNS query, HTTP request and dropped packet.
#[derive(Debug, Parser)]
#[command(name = "webb", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Observe flows from a webb or Hubble server.
    Observe(ObserveArgs),
    /// Show the server's flow counts and health.
    Status(ServerArgs),
}

#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// Address of the relay or agent (host:port).
    #[arg(long, default_value = "localhost:4245", env = "WEBB_SERVER")]
    server: String,
}

#[derive(Debug, clap::Args)]
struct ObserveArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Follow the flow stream.
    #[arg(short, long)]
    follow: bool,
    /// The last N flows (default 20 when nothing else selects).
    #[arg(long)]
    last: Option<u64>,
    /// The first N flows.
    #[arg(long)]
    first: Option<u64>,
    /// Every flow in the server's ring.
    #[arg(long)]
    all: bool,
    /// Only flows with this verdict.
    #[arg(long, value_enum)]
    verdict: Vec<VerdictArg>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Compact)]
    output: Output,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
enum VerdictArg {
    Forwarded,
    Dropped,
    Audit,
    Error,
    Redirected,
    Traced,
    Translated,
}

impl VerdictArg {
    fn wire(self) -> i32 {
        (match self {
            Self::Forwarded => Verdict::Forwarded,
            Self::Dropped => Verdict::Dropped,
            Self::Audit => Verdict::Audit,
            Self::Error => Verdict::Error,
            Self::Redirected => Verdict::Redirected,
            Self::Traced => Verdict::Traced,
            Self::Translated => Verdict::Translated,
        }) as i32
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Compact,
    Json,
    Jsonpb,
}

fn endpoint(server: &str) -> String {
    if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    }
}

async fn connect(server: &str) -> anyhow::Result<ObserverClient<tonic::transport::Channel>> {
    ObserverClient::connect(endpoint(server))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach server at {server}: {e}; is the agent or relay running there \
             (or `kubectl -n kube-system port-forward svc/webb-relay 4245:80`)?"
            )
        })
}

async fn observe(a: ObserveArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.server.server).await?;
    let mut req = GetFlowsRequest {
        follow: a.follow,
        ..Default::default()
    };
    if a.all {
        req.number = u64::MAX;
    } else if let Some(n) = a.first {
        req.number = n;
        req.first = true;
    } else if let Some(n) = a.last {
        req.number = n;
    } else if !a.follow {
        req.number = 20;
    }
    if !a.verdict.is_empty() {
        req.whitelist.push(FlowFilter {
            verdict: a.verdict.iter().map(|v| v.wire()).collect(),
            ..Default::default()
        });
    }
    let mut stream = client
        .get_flows(req)
        .await
        .map_err(|s| anyhow::anyhow!("GetFlows on {}: {}", a.server.server, s.message()))?
        .into_inner();
    let stdout = std::io::stdout();
    while let Some(item) = stream.next().await {
        let resp =
            item.map_err(|s| anyhow::anyhow!("stream from {}: {}", a.server.server, s.message()))?;
        let mut out = stdout.lock();
        let written = match a.output {
            Output::Json | Output::Jsonpb => webb_proto::json::write_line(&mut out, &resp),
            Output::Compact => printer::compact(&mut out, &resp),
        };
        match written.and_then(|()| out.flush()) {
            Ok(()) => {}
            // The reader went away (`| head`): stop quietly.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn status(a: ServerArgs) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint(&a.server))?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach server at {}: {e}", a.server))?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: webb_proto::OBSERVER_HEALTH_SERVICE.to_owned(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("health check on {}: {}", a.server, s.message()))?
        .into_inner();
    println!(
        "Healthcheck (via {}): {}",
        a.server,
        if h.status == 1 { "Ok" } else { "Not serving" }
    );
    let s = ObserverClient::new(channel)
        .server_status(ServerStatusRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("ServerStatus on {}: {}", a.server, s.message()))?
        .into_inner();
    let pct = if s.max_flows > 0 {
        100.0 * s.num_flows as f64 / s.max_flows as f64
    } else {
        0.0
    };
    println!(
        "Current/Max Flows: {}/{} ({pct:.2}%)",
        s.num_flows, s.max_flows
    );
    println!("Flows/s: {:.2}", s.flows_rate);
    println!("Seen flows: {}", s.seen_flows);
    if let Some(n) = s.num_connected_nodes {
        println!(
            "Connected Nodes: {}/{}",
            n.value,
            n.value + s.num_unavailable_nodes.map_or(0, |u| u.value)
        );
    }
    if s.webb_packets > 0 || s.webb_lost_events > 0 {
        println!(
            "Packets: {} (malformed {}, non-IP {}, policy drops {}), lost events: {}",
            s.webb_packets,
            s.webb_malformed_packets,
            s.webb_non_ip_packets,
            s.webb_policy_drops,
            s.webb_lost_events
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Observe(a) => tokio::select! {
            r = observe(a) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        },
        Command::Status(a) => status(a).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("webb: {e:#}");
            ExitCode::FAILURE
        }
    }
}
