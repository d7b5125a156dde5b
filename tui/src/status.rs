//! `webb status`, `webb list nodes`, `webb list namespaces`.

use std::{
    io::{self, Write},
    time::Duration,
};

use tabwriter::TabWriter;
use tonic::transport::Channel;
use webb_proto::{
    observer::{
        GetNamespacesRequest, GetNodesRequest, Node, ServerStatusRequest, ServerStatusResponse,
        observer_client::ObserverClient,
    },
    relay::NodeState,
};

use crate::conn::{ConfigFile, Server, ServerArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum ListFormat {
    #[default]
    Table,
    Wide,
    Json,
}

/// `1234567` -> `1,234,567`, as Hubble prints counts.
/// A history bound as RFC 3339 in UTC, to the second.
fn history_time(t: webb_proto::wkt::Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.seconds, 0).map_or_else(
        || format!("{}s", t.seconds),
        |d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// Bytes in MiB with one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn percent(num: u64, max: u64) -> f64 {
    if max == 0 {
        0.0
    } else {
        100.0 * num as f64 / max as f64
    }
}

async fn with_timeout<T>(
    server: &Server,
    method: &str,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(server.request_timeout, fut).await {
        Ok(r) => r
            .map(tonic::Response::into_inner)
            .map_err(|s| server.call_error(method, &s)),
        Err(_) => anyhow::bail!(
            "{method} on {}: no answer within {:?} (--request-timeout)",
            server.address,
            server.request_timeout
        ),
    }
}

/// The text `webb status` prints for a server status.
/// Text from a server with terminal control characters (C0, DEL, C1)
/// written as escapes, so a message cannot drive the reader's terminal.
pub(crate) fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

pub fn status_text(via: &str, healthy: bool, s: &ServerStatusResponse) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Healthcheck (via {via}): {}\n",
        if healthy { "Ok" } else { "Not serving" }
    ));
    out.push_str(&format!(
        "Current/Max Flows: {}/{} ({:.2}%)\n",
        thousands(s.num_flows),
        thousands(s.max_flows),
        percent(s.num_flows, s.max_flows)
    ));
    out.push_str(&format!("Flows/s: {:.2}\n", s.flows_rate));
    out.push_str(&format!("Seen flows: {}\n", thousands(s.seen_flows)));
    if let Some(c) = s.num_connected_nodes {
        let unavailable = s.num_unavailable_nodes.map_or(0, |u| u.value);
        out.push_str(&format!(
            "Connected Nodes: {}/{}\n",
            c.value,
            c.value + unavailable
        ));
        if unavailable > 0 {
            out.push_str(&format!("Unavailable Nodes: {unavailable}\n"));
            for n in &s.unavailable_nodes {
                out.push_str(&format!("  - {n}\n"));
            }
        }
    }
    if s.webb_packets > 0 || s.webb_lost_events > 0 {
        out.push_str(&format!(
            "Packets: {} (malformed {}, non-IP {}, policy drops {})\nLost events: {}\n",
            thousands(s.webb_packets),
            thousands(s.webb_malformed_packets),
            thousands(s.webb_non_ip_packets),
            thousands(s.webb_policy_drops),
            thousands(s.webb_lost_events)
        ));
    }
    if s.webb_kernel_events > 0 {
        out.push_str(&format!(
            "Kernel events: {} ({:.4} per packet)
",
            thousands(s.webb_kernel_events),
            s.webb_kernel_events as f64 / s.webb_packets.max(1) as f64
        ));
    }
    if s.webb_flow_packets > 0 || s.webb_flow_bytes > 0 {
        out.push_str(&format!(
            "Traffic on flows: {} packets, {}\n",
            thousands(s.webb_flow_packets),
            crate::top::human_bytes(s.webb_flow_bytes as f64)
        ));
    }
    if s.webb_l7_flows > 0 || !s.webb_l7_counts.is_empty() {
        out.push_str(&format!("L7 flows: {}\n", thousands(s.webb_l7_flows)));
        if !s.webb_l7_counts.is_empty() {
            let mut counts: Vec<_> = s.webb_l7_counts.iter().collect();
            counts.sort();
            let list: Vec<String> = counts
                .iter()
                .map(|(k, v)| format!("{k} {}", thousands(**v)))
                .collect();
            out.push_str(&format!(
                "L7 not shown or incomplete: {}\n",
                list.join(", ")
            ));
        }
    }
    if let Some(oldest) = s.webb_oldest_flow {
        out.push_str(&format!("History from: {}\n", history_time(oldest)));
    }
    if s.webb_stored_flows > 0 || s.webb_store_bytes > 0 {
        out.push_str(&format!(
            "Flow store: {} flows, {} on disk (not stored {}, corrupt blocks skipped {})\n",
            thousands(s.webb_stored_flows),
            mib(s.webb_store_bytes),
            thousands(s.webb_store_not_stored),
            thousands(s.webb_store_corrupt_blocks)
        ));
    }
    if !s.webb_sources.is_empty() {
        out.push_str(&format!(
            "Endpoints named: {}\n",
            thousands(s.webb_endpoints)
        ));
        let mut sources: Vec<_> = s.webb_sources.iter().collect();
        sources.sort();
        for (source, state) in sources {
            out.push_str(&format!(
                "Source {}: {}\n",
                printable(source),
                printable(state)
            ));
        }
    }
    if !s.version.is_empty() {
        out.push_str(&format!("Version: {}\n", s.version));
    }
    out
}

pub async fn status(args: &ServerArgs, config: &ConfigFile) -> anyhow::Result<()> {
    let (server, channel, _forward) = connect(args, config).await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let h = with_timeout(
        &server,
        "Health check",
        health.check(tonic_health::pb::HealthCheckRequest {
            service: webb_proto::OBSERVER_HEALTH_SERVICE.to_owned(),
        }),
    )
    .await?;
    let healthy =
        h.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let s = with_timeout(
        &server,
        "ServerStatus",
        ObserverClient::new(channel).server_status(ServerStatusRequest {}),
    )
    .await?;
    print!("{}", status_text(&server.address.to_string(), healthy, &s));
    if !healthy {
        anyhow::bail!("{} is not serving", server.address);
    }
    Ok(())
}

/// Resolves the server flags and connects.
async fn connect(
    args: &ServerArgs,
    config: &ConfigFile,
) -> anyhow::Result<(Server, Channel, Option<crate::portforward::PortForward>)> {
    let (server, forward) = Server::resolve_forwarded(args, config).await?;
    let channel = server.connect().await?;
    Ok((server, channel, forward))
}

/// Aligns tab-separated rows as Hubble's tables are (min width 2, padding 3).
pub(crate) fn tabulate(text: &str) -> String {
    let mut tw = TabWriter::new(Vec::new()).minwidth(2).padding(3);
    // Writing to memory cannot fail.
    let _ = tw.write_all(text.as_bytes());
    String::from_utf8_lossy(&tw.into_inner().unwrap_or_default()).into_owned()
}

pub fn state_name(state: i32) -> &'static str {
    match NodeState::try_from(state).unwrap_or(NodeState::UnknownNodeState) {
        NodeState::NodeConnected => "Connected",
        NodeState::NodeUnavailable => "Unavailable",
        NodeState::NodeGone => "Gone",
        NodeState::NodeError => "Error",
        NodeState::UnknownNodeState => "Unknown",
    }
}

/// The `list nodes` table: `NAME STATUS AGE FLOWS/S CURRENT/MAX-FLOWS`,
/// plus `VERSION ADDRESS TLS` when wide.
pub fn nodes_table(nodes: &[Node], wide: bool) -> String {
    let mut text = String::from("NAME\tSTATUS\tAGE\tFLOWS/S\tCURRENT/MAX-FLOWS");
    if wide {
        text.push_str("\tVERSION\tADDRESS\tTLS");
    }
    text.push('\n');
    for n in nodes {
        let connected = n.state == NodeState::NodeConnected as i32;
        let uptime = Duration::from_nanos(n.uptime_ns);
        let (age, rate, flows) = if connected {
            let rate = if n.uptime_ns > 0 {
                n.seen_flows as f64 / uptime.as_secs_f64()
            } else {
                0.0
            };
            (
                crate::time::age(uptime),
                format!("{rate:.2}"),
                format!(
                    "{}/{} ({:.2}%)",
                    n.num_flows,
                    n.max_flows,
                    percent(n.num_flows, n.max_flows)
                ),
            )
        } else {
            ("N/A".into(), "N/A".into(), "N/A".into())
        };
        text.push_str(&format!(
            "{}\t{}\t{age}\t{rate}\t{flows}",
            n.name,
            state_name(n.state)
        ));
        if wide {
            let tls = match &n.tls {
                Some(t) if t.enabled => "Enabled",
                _ => "Disabled",
            };
            text.push_str(&format!("\t{}\t{}\t{tls}", n.version, n.address));
        }
        text.push('\n');
    }
    tabulate(&text)
}

fn json_array<T: serde::Serialize>(items: &[T]) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(items)? + "\n")
}

pub async fn list_nodes(
    args: &ServerArgs,
    config: &ConfigFile,
    format: ListFormat,
) -> anyhow::Result<()> {
    let (server, channel, _forward) = connect(args, config).await?;
    let mut r = with_timeout(
        &server,
        "GetNodes",
        ObserverClient::new(channel).get_nodes(GetNodesRequest {}),
    )
    .await?;
    r.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let text = match format {
        ListFormat::Json => json_array(&r.nodes)?,
        ListFormat::Table => nodes_table(&r.nodes, false),
        ListFormat::Wide => nodes_table(&r.nodes, true),
    };
    write_out(&text)
}

pub async fn list_namespaces(
    args: &ServerArgs,
    config: &ConfigFile,
    format: ListFormat,
) -> anyhow::Result<()> {
    let (server, channel, _forward) = connect(args, config).await?;
    let mut r = with_timeout(
        &server,
        "GetNamespaces",
        ObserverClient::new(channel).get_namespaces(GetNamespacesRequest {}),
    )
    .await?;
    r.namespaces
        .sort_by(|a, b| (&a.cluster, &a.namespace).cmp(&(&b.cluster, &b.namespace)));
    let text = match format {
        ListFormat::Json => json_array(&r.namespaces)?,
        ListFormat::Table | ListFormat::Wide => {
            let with_cluster = r.namespaces.iter().any(|n| !n.cluster.is_empty());
            let mut text = if with_cluster {
                String::from("CLUSTER\tNAMESPACE\n")
            } else {
                String::from("NAMESPACE\n")
            };
            for n in &r.namespaces {
                if with_cluster {
                    text.push_str(&format!("{}\t{}\n", n.cluster, n.namespace));
                } else {
                    text.push_str(&format!("{}\n", n.namespace));
                }
            }
            tabulate(&text)
        }
    };
    write_out(&text)
}

fn write_out(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use webb_proto::observer::Tls;

    use super::*;

    #[test]
    fn sources_are_shown_with_control_characters_escaped() {
        let s = ServerStatusResponse {
            webb_endpoints: 5000,
            webb_sources: [
                ("node-1/kubernetes".to_owned(), "synced".to_owned()),
                (
                    "node-2/kubernetes".to_owned(),
                    "forbidden to list pods\x1b[2J".to_owned(),
                ),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let text = status_text("localhost:4245", true, &s);
        assert!(text.contains("Endpoints named: 5,000\n"), "{text}");
        assert!(
            text.contains("Source node-1/kubernetes: synced\n"),
            "{text}"
        );
        assert!(
            text.contains("Source node-2/kubernetes: forbidden to list pods\\u{1b}[2J\n"),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn the_history_window_is_shown() {
        let s = ServerStatusResponse {
            webb_oldest_flow: Some(webb_proto::wkt::Timestamp {
                seconds: 1_764_806_400,
                nanos: 5,
            }),
            webb_stored_flows: 1_234_567,
            webb_store_bytes: 3 << 20,
            webb_store_not_stored: 12,
            ..Default::default()
        };
        let text = status_text("localhost:4245", true, &s);
        assert!(
            text.contains("History from: 2025-12-04T00:00:00Z\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "Flow store: 1,234,567 flows, 3.0 MiB on disk (not stored 12, corrupt blocks skipped 0)\n"
            ),
            "{text}"
        );
        // An agent without a store shows no store line.
        let text = status_text("localhost:4245", true, &ServerStatusResponse::default());
        assert!(
            !text.contains("History") && !text.contains("Flow store"),
            "{text}"
        );
    }

    #[test]
    fn counts_have_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(16380), "16,380");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn node_table_is_aligned() {
        let nodes = vec![
            Node {
                name: "lab-node-1".into(),
                version: "webb 0.1.0".into(),
                address: "10.0.0.1:4244".into(),
                state: NodeState::NodeConnected as i32,
                tls: Some(Tls {
                    enabled: true,
                    server_name: "n1".into(),
                }),
                uptime_ns: 8_223_000_000_000,
                num_flows: 4095,
                max_flows: 4095,
                seen_flows: 61_750,
            },
            Node {
                name: "n2".into(),
                state: NodeState::NodeUnavailable as i32,
                ..Default::default()
            },
        ];
        assert_eq!(
            nodes_table(&nodes, false),
            "NAME         STATUS        AGE       FLOWS/S   CURRENT/MAX-FLOWS\n\
             lab-node-1   Connected     2h17m3s   7.51      4095/4095 (100.00%)\n\
             n2           Unavailable   N/A       N/A       N/A\n"
        );
        assert!(
            nodes_table(&nodes, true)
                .lines()
                .next()
                .unwrap()
                .ends_with("VERSION      ADDRESS         TLS")
        );
    }
}
