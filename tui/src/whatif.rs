//! `webb policy what-if FILE...`: which recorded connections candidate
//! NetworkPolicies would drop or let through, before they are applied.
//! The server decides (webb.analysis.Analysis/WhatIf): each agent replays
//! its own history through the policy compiler and the datapath's decision,
//! with the policies in force and with the candidates added, and webb-relay
//! merges the nodes' answers.

use std::path::PathBuf;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use webb_proto::analysis::{
    WhatIfChange, WhatIfRequest, WhatIfResponse, analysis_client::AnalysisClient,
};

use crate::{
    conn::{ConfigFile, Server, ServerArgs, Usage},
    filters::FilterArgs,
    status::{printable, thousands},
    top::{parse_time, ts},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WhatIfFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WhatIfArgs {
    /// NetworkPolicy YAML files (networking.k8s.io/v1; several documents or
    /// a List each) to try beside the policies in force; one with the name
    /// of a policy in force replaces it
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Replay the connections since this time (a duration before now or a
    /// time, as `observe --since`) [default: all the history held]
    #[arg(long, value_name = "TIME", value_parser = parse_time, help_heading = "What-if")]
    pub since: Option<DateTime<Utc>>,
    /// Until this time [default: now]
    #[arg(long, value_name = "TIME", value_parser = parse_time, help_heading = "What-if")]
    pub until: Option<DateTime<Utc>>,
    /// Output: table, or json (one object)
    #[arg(short, long, value_enum, default_value_t = WhatIfFormat::Table, help_heading = "What-if")]
    pub output: WhatIfFormat,
}

pub async fn run(args: WhatIfArgs, config: &ConfigFile) -> anyhow::Result<()> {
    let filters = args.filters.clone();
    filters.compile().map_err(|e| Usage(e.to_string()))?;
    let mut policies = Vec::new();
    for f in &args.files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading the policy file {}", f.display()))?;
        policies.push(text);
    }
    let (server, _forward) = Server::resolve_forwarded(&args.server, config).await?;
    let req = WhatIfRequest {
        policies,
        since: args.since.map(ts),
        until: args.until.map(ts),
        whitelist: filters.allowlist.clone(),
        blacklist: filters.denylist.clone(),
    };
    let answer = ask(&server, req).await?;
    let out = match args.output {
        WhatIfFormat::Table => table(&answer, args.since, args.until),
        WhatIfFormat::Json => json(&answer),
    };
    print!("{out}");
    Ok(())
}

/// Asks `server` what candidates would change: the answer, a usage error
/// (the server refused the candidates or the filters), or why there is
/// none. `webb policy what-if` and the dashboard's what-if both ask here.
pub async fn ask(server: &Server, req: WhatIfRequest) -> anyhow::Result<WhatIfResponse> {
    let channel = server.connect().await?;
    let mut client = AnalysisClient::new(channel).max_decoding_message_size(64 << 20);
    match tokio::time::timeout(server.request_timeout, client.what_if(req)).await {
        Err(_) => anyhow::bail!(
            "WhatIf on {}: no answer within {:?} (--request-timeout)",
            server.address,
            server.request_timeout
        ),
        Ok(Ok(a)) => Ok(a.into_inner()),
        Ok(Err(s)) if s.code() == tonic::Code::InvalidArgument => {
            Err(Usage(s.message().to_owned()).into())
        }
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => anyhow::bail!(
            "{} has no webb Analysis service (a Hubble server?): what-if needs webb-agent's policy compiler",
            server.address
        ),
        Ok(Err(s)) => Err(server.call_error("WhatIf", &s)),
    }
}

fn change_name(c: i32) -> &'static str {
    match WhatIfChange::try_from(c) {
        Ok(WhatIfChange::WhatIfWouldDrop) => "WOULD DROP",
        Ok(WhatIfChange::WhatIfWouldAllow) => "WOULD ALLOW",
        _ => "CHANGE",
    }
}

fn time_text(t: Option<DateTime<Utc>>, or: &str) -> String {
    t.map_or_else(
        || or.to_owned(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// What `webb policy what-if` prints: a line on the window, then a row per
/// pair whose connections would change, drops first.
pub fn table(
    a: &WhatIfResponse,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> String {
    let mut out = format!(
        "Window {} .. {}, {} node(s), {} connections decided",
        time_text(since, "the oldest flow held"),
        time_text(until, "now"),
        a.nodes.len(),
        thousands(a.connections_decided),
    );
    if !a.unavailable_nodes.is_empty() {
        let names: Vec<String> = a.unavailable_nodes.iter().map(|n| printable(n)).collect();
        out.push_str(&format!("; unavailable: {}", names.join(", ")));
    }
    if a.flows_gone > 0 {
        out.push_str(&format!(
            "; {} flows of the window no longer held",
            thousands(a.flows_gone)
        ));
    }
    out.push('\n');
    if a.pairs.is_empty() {
        out.push_str("No connection would change verdict.\n");
        return out;
    }
    let mut rows: Vec<[String; 7]> = vec![[
        "CHANGE".into(),
        "DIRECTION".into(),
        "SOURCE".into(),
        "DESTINATION".into(),
        "PORT".into(),
        "CONNECTIONS".into(),
        "POLICIES".into(),
    ]];
    let mut pairs: Vec<_> = a.pairs.iter().collect();
    pairs.sort_by(|x, y| {
        x.change
            .cmp(&y.change)
            .then(y.connections.cmp(&x.connections))
            .then_with(|| {
                (&x.source, &x.destination, &x.port).cmp(&(&y.source, &y.destination, &y.port))
            })
    });
    for p in pairs {
        rows.push([
            change_name(p.change).to_owned(),
            p.direction.to_lowercase(),
            printable(&p.source),
            printable(&p.destination),
            printable(&p.port),
            thousands(p.connections),
            if p.policies.is_empty() {
                "-".to_owned()
            } else {
                p.policies
                    .iter()
                    .map(|n| printable(n))
                    .collect::<Vec<_>>()
                    .join(",")
            },
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The answer as one JSON object, for scripts.
pub fn json(a: &WhatIfResponse) -> String {
    use serde_json::json;
    let ts = |t: Option<webb_proto::wkt::Timestamp>| t.map(|t| t.to_string());
    let pairs: Vec<serde_json::Value> = a
        .pairs
        .iter()
        .map(|p| {
            json!({
                "change": change_name(p.change).replace(' ', "_"),
                "direction": p.direction,
                "source": p.source,
                "destination": p.destination,
                "port": p.port,
                "connections": p.connections,
                "first": ts(p.first),
                "last": ts(p.last),
                "policies": p.policies,
            })
        })
        .collect();
    let v = json!({
        "pairs": pairs,
        "connections_decided": a.connections_decided,
        "flows_gone": a.flows_gone,
        "nodes": a.nodes,
        "unavailable_nodes": a.unavailable_nodes,
    });
    format!("{v}\n")
}
