//! `webb`: the command line for webb and Hubble servers.
//!
//! `observe` (Hubble's flags, filters and printers, from a server or a
//! file), `ui` (the dashboard), `status`, `top`, `policy what-if`,
//! `advise policy`, `list nodes`, `list namespaces`, `watch peers`,
//! `config`, `version`.

use webb_tui::{agent_events, conn, debug_events, observe, status, ui, watch};

use std::{path::PathBuf, process::ExitCode};

/// The JSON parsing behind `--input-file` allocates per field; mimalloc
/// makes that markedly cheaper than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// webb: see every flow, DNS query, HTTP request and dropped packet.
#[derive(Debug, Parser)]
#[command(name = "webb")]
struct Cli {
    /// Config file with defaults for the server flags
    /// [default: ~/.config/webb/config.toml]
    #[arg(
        long,
        global = true,
        env = "WEBB_CONFIG",
        hide_env_values = true,
        value_name = "FILE"
    )]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Observe flows from a webb or Hubble server, or from a file.
    Observe(Box<ObserveCmd>),
    /// The interactive dashboard: live flows, verdict filters, details.
    Ui(Box<ui::UiArgs>),
    /// Show the server's health, flow counts and nodes.
    Status(conn::ServerArgs),
    /// Show the pairs that talk most: flows, bytes, drops, errors, latency.
    ///
    /// Pairs are workloads by default (or pods, namespaces, nodes, ports,
    /// DNS names, drop reasons: --by), summed on the nodes that saw them.
    Top(Box<webb_tui::top::TopArgs>),
    /// Try NetworkPolicies against recorded traffic before applying them.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Write NetworkPolicies from what the cluster was seen doing.
    #[command(subcommand)]
    Advise(AdviseCommand),
    /// List the nodes or namespaces a server knows.
    #[command(subcommand)]
    List(ListCommand),
    /// Watch a server's objects as they change.
    #[command(subcommand, visible_alias = "w")]
    Watch(WatchCommand),
    /// Modify or view webb's config file (Hubble's `hubble config`).
    #[command(subcommand)]
    Config(webb_tui::config::ConfigCmd),
    /// Print the version of this webb.
    Version,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Which recorded connections candidate policies would drop or let
    /// through, decided on the nodes as their datapath decides.
    ///
    /// Each agent replays its history of the window through its policy
    /// compiler and its datapath's decision, with the policies in force and
    /// with the candidates added, and lists the connections whose verdict
    /// would change, per pair, with the policies that decide.
    #[command(name = "what-if")]
    WhatIf(Box<webb_tui::whatif::WhatIfArgs>),
}

#[derive(Debug, Subcommand)]
enum AdviseCommand {
    /// NetworkPolicies (one per workload of a namespace) that allow exactly
    /// the traffic seen, with what was seen as comments.
    ///
    /// Reads the window's flows to and from the namespace (only the fields
    /// it needs), counts each connection once, and prints
    /// networking.k8s.io/v1 YAML: per workload, ingress and egress rules
    /// with pod and namespace selectors from the peers' labels, ipBlocks for
    /// addresses outside the cluster, ports and protocols, and DNS to
    /// kube-dns kept open. Applied, the traffic seen passes and other
    /// traffic to or from those pods is dropped.
    Policy(Box<webb_tui::advise::AdviseArgs>),
}

#[derive(Debug, Subcommand)]
enum WatchCommand {
    /// The nodes a server knows, as they are added, updated and deleted
    /// (its Peer service).
    #[command(visible_alias = "peer")]
    Peers(conn::ServerArgs),
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, args_override_self = true)]
struct ObserveCmd {
    #[command(flatten)]
    flows: observe::ObserveArgs,
    #[command(subcommand)]
    kind: Option<ObserveKind>,
}

#[derive(Debug, Subcommand)]
enum ObserveKind {
    /// Observe flows (what `webb observe` alone does)
    #[command(args_override_self = true)]
    Flows(Box<observe::ObserveArgs>),
    /// Observe what the agents learn and do: endpoints, interfaces, the IP
    /// cache, policies, Services
    #[command(args_override_self = true)]
    AgentEvents(Box<webb_tui::events::EventsArgs>),
    /// Observe the datapath's debug messages (a Cilium agent writes them;
    /// webb's agent writes none, so from webb this prints nothing)
    #[command(args_override_self = true)]
    DebugEvents(Box<webb_tui::events::EventsArgs>),
}

#[derive(Debug, Subcommand)]
enum ListCommand {
    /// The nodes behind a relay (or the agent itself).
    Nodes(ListArgs),
    /// The namespaces seen in recent flows.
    Namespaces(ListArgs),
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    #[command(flatten)]
    server: conn::ServerArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = status::ListFormat::Table)]
    output: status::ListFormat,
}

/// What an observe command reads when it runs, as Hubble reads it then:
/// `--until` (not with `--follow`), the selectors' conflicts, and `-o`.
fn resolve(s: &mut observe::Selectors, o: &mut observe::OutputArgs) -> anyhow::Result<()> {
    s.resolve().map_err(anyhow::Error::msg)?;
    o.resolve().map_err(anyhow::Error::msg)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // `config` reads the file itself: it mends a file the others refuse.
    let config = if matches!(cli.command, Command::Config(_)) {
        conn::ConfigFile::default()
    } else {
        conn::load_config(cli.config.as_deref())?
    };
    match cli.command {
        Command::Observe(a) => {
            let run = async {
                match a.kind {
                    Some(ObserveKind::AgentEvents(mut e)) => {
                        resolve(&mut e.selectors, &mut e.output)?;
                        agent_events::run(*e, &config).await
                    }
                    Some(ObserveKind::DebugEvents(mut e)) => {
                        resolve(&mut e.selectors, &mut e.output)?;
                        debug_events::run(*e, &config).await
                    }
                    Some(ObserveKind::Flows(mut f)) => {
                        resolve(&mut f.selectors, &mut f.output)?;
                        observe::run(*f, &config).await
                    }
                    None => {
                        let mut f = a.flows;
                        resolve(&mut f.selectors, &mut f.output)?;
                        observe::run(f, &config).await
                    }
                }
            };
            tokio::select! {
                r = run => r,
                // Ctrl-C while following: stop cleanly.
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
        Command::Ui(a) => ui::run(*a, &config).await,
        Command::Status(a) => status::status(&a, &config).await,
        Command::Top(a) => webb_tui::top::run(*a, &config).await,
        Command::Policy(PolicyCommand::WhatIf(a)) => webb_tui::whatif::run(*a, &config).await,
        Command::Advise(AdviseCommand::Policy(a)) => webb_tui::advise::run(*a, &config).await,
        Command::List(ListCommand::Nodes(a)) => {
            status::list_nodes(&a.server, &config, a.output).await
        }
        Command::List(ListCommand::Namespaces(a)) => {
            status::list_namespaces(&a.server, &config, a.output).await
        }
        Command::Watch(WatchCommand::Peers(a)) => {
            tokio::select! {
                r = watch::peers(&a, &config) => r,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
        Command::Config(c) => webb_tui::config::run(c, cli.config.as_deref()),
        Command::Version => {
            println!("{}", webb_tui::VERSION);
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // A usage error exits 1, as `hubble` does (scripts check for it);
    // --help and --version exit 0.
    let usage = |e: clap::Error| -> ExitCode {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    };
    let cli = match Cli::command().try_get_matches().and_then(|m| {
        // Our own checks' errors get the usage line clap gives its own.
        Cli::from_arg_matches(&m).map_err(|e| e.format(&mut Cli::command()))
    }) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("webb: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("webb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_is_consistent() {
        Cli::command().debug_assert();
    }
}
