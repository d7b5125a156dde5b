//! `webb top`: the pairs that talk most, from the server's `Top` answers
//! (`webb_proto::top`). Against a server without webb's Analysis service
//! (a Hubble relay or agent) the flows of the window are read and summed
//! here instead.

use std::{
    io::{self, IsTerminal as _, Write as _},
    time::Duration,
};

use chrono::{DateTime, Utc};
use tonic::transport::Channel;
use webb_proto::{
    analysis::{TopKey, TopRequest, TopResponse, analysis_client::AnalysisClient},
    observer::observer_client::ObserverClient,
    top::Figures,
    wkt::Timestamp,
};

use crate::{
    conn::{ConfigFile, Server, ServerArgs, Usage},
    filters::FilterArgs,
    status::{printable, thousands},
    time,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    Workload,
    Pod,
    Namespace,
    Node,
    Port,
    Fqdn,
    Reason,
}

impl By {
    fn key(self) -> TopKey {
        match self {
            Self::Workload => TopKey::Workload,
            Self::Pod => TopKey::Pod,
            Self::Namespace => TopKey::Namespace,
            Self::Node => TopKey::Node,
            Self::Port => TopKey::Port,
            Self::Fqdn => TopKey::Fqdn,
            Self::Reason => TopKey::Reason,
        }
    }

    fn pair_wide(self) -> bool {
        matches!(self, Self::Node | Self::Port | Self::Reason)
    }

    fn header(self) -> &'static str {
        match self {
            Self::Node => "NODE",
            Self::Port => "PORT",
            Self::Reason => "REASON",
            _ => "",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Workload => "workload",
            Self::Pod => "pod",
            Self::Namespace => "namespace",
            Self::Node => "node",
            Self::Port => "port",
            Self::Fqdn => "fqdn",
            Self::Reason => "reason",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    Flows,
    Bytes,
    Packets,
    Drops,
    Errors,
    Latency,
}

impl SortBy {
    /// In the order of the table's columns.
    pub const ALL: [SortBy; 6] = [
        SortBy::Flows,
        SortBy::Bytes,
        SortBy::Packets,
        SortBy::Drops,
        SortBy::Errors,
        SortBy::Latency,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortBy::Flows => "flows",
            SortBy::Bytes => "bytes",
            SortBy::Packets => "packets",
            SortBy::Drops => "drops",
            SortBy::Errors => "errors",
            SortBy::Latency => "p95 latency",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TopFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// What tells pairs apart, comma-separated: workload, pod, namespace,
    /// fqdn (each end), node, port, reason (the pair)
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "workload",
        help_heading = "Top"
    )]
    pub by: Vec<By>,
    /// The column pairs are ordered by, largest first
    #[arg(long, value_enum, default_value_t = SortBy::Bytes, help_heading = "Top")]
    pub sort: SortBy,
    /// Sum the flows since this time (a duration before now or a time, as
    /// `observe --since`) and print one answer
    #[arg(long, value_name = "TIME", value_parser = parse_time, help_heading = "Top")]
    pub since: Option<DateTime<Utc>>,
    /// With --since: until this time (default now)
    #[arg(long, value_name = "TIME", value_parser = parse_time, requires = "since", help_heading = "Top")]
    pub until: Option<DateTime<Utc>>,
    /// Live: the rates are over the last this long
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION", help_heading = "Top")]
    pub window: Duration,
    /// Live: refresh this often
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION", help_heading = "Top")]
    pub interval: Duration,
    /// Print one answer and exit
    #[arg(long, help_heading = "Top")]
    pub once: bool,
    /// Rows shown (0: all; live on a terminal: as many as fit)
    #[arg(long, default_value_t = 20, value_name = "N", help_heading = "Top")]
    pub limit: usize,
    /// Output: table, or json (one object per answer, one line each)
    #[arg(short, long, value_enum, default_value_t = TopFormat::Table, help_heading = "Top")]
    pub output: TopFormat,
}

pub(crate) fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    time::parse_time(s, Utc::now())
        .ok_or_else(|| format!("{s:?} is not a time; use {}", time::FORMATS_HELP))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = webb_proto::duration::parse(s).ok_or_else(|| webb_proto::duration::error(s))?;
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

pub(crate) fn ts(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// The server, and whether it has webb's Analysis service (learnt from its
/// first answer).
struct Source {
    channel: Channel,
    server: Server,
    analysis: bool,
}

impl Source {
    async fn top(&mut self, req: &TopRequest) -> anyhow::Result<TopResponse> {
        if self.analysis {
            let mut c =
                AnalysisClient::new(self.channel.clone()).max_decoding_message_size(256 << 20);
            let asked = tokio::time::timeout(self.server.request_timeout, c.top(req.clone())).await;
            match asked {
                Err(_) => anyhow::bail!(
                    "Top on {}: no answer within {:?} (--request-timeout)",
                    self.server.address,
                    self.server.request_timeout
                ),
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
                    eprintln!(
                        "{} has no webb Analysis service (a Hubble server?): reading its flows and summing them here",
                        self.server.address
                    );
                    self.analysis = false;
                }
                Ok(Err(s)) => return Err(self.server.call_error("Top", &s)),
            }
        }
        let mut c = ObserverClient::new(self.channel.clone()).max_decoding_message_size(64 << 20);
        webb_proto::top::over_get_flows(&mut c, req)
            .await
            .map_err(|s| self.server.call_error("GetFlows", &s))
    }
}

pub async fn run(args: TopArgs, config: &ConfigFile) -> anyhow::Result<()> {
    let filters = args.filters.clone();
    filters.compile().map_err(|e| Usage(e.to_string()))?;
    let (server, _forward) = Server::resolve_forwarded(&args.server, config).await?;
    let channel = server.connect().await?;
    let mut source = Source {
        channel,
        server,
        analysis: true,
    };
    let mut by = args.by.clone();
    by.dedup();
    let request = |since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>| TopRequest {
        by: by.iter().map(|b| b.key() as i32).collect(),
        since: since.map(ts),
        until: until.map(ts),
        whitelist: filters.allowlist.clone(),
        blacklist: filters.denylist.clone(),
    };
    let history = args.since.is_some();
    let once = args.once || history;
    let tty = io::stdout().is_terminal();
    let live_screen = !once && tty && args.output == TopFormat::Table;
    if live_screen {
        print!("\x1b[?1049h\x1b[?25l");
    }
    let result = async {
        let mut tick = tokio::time::interval(args.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Utc::now();
            let (since, until) = if history {
                (args.since, Some(args.until.unwrap_or(now)))
            } else {
                let window = chrono::Duration::from_std(args.window).unwrap_or_default();
                (Some(now - window), Some(now))
            };
            let answer = source.top(&request(since, until)).await?;
            let span = Span {
                since,
                until,
                live: !history,
            };
            let text = match args.output {
                TopFormat::Json => json_line(&answer, &by, &span),
                TopFormat::Table => {
                    let limit = if live_screen && args.limit == 20 {
                        crossterm::terminal::size()
                            .map_or(20, |(_, rows)| usize::from(rows).saturating_sub(4).max(1))
                    } else {
                        args.limit
                    };
                    table(&answer, &by, args.sort, limit, &span)
                }
            };
            let mut out = io::stdout().lock();
            let wrote = if live_screen {
                write!(out, "\x1b[H\x1b[2J{}", text.replace('\n', "\r\n"))
            } else {
                out.write_all(text.as_bytes())
            }
            .and_then(|()| out.flush());
            match wrote {
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                other => other?,
            }
            if once {
                return Ok(());
            }
        }
    };
    let result: anyhow::Result<()> = tokio::select! {
        r = result => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    if live_screen {
        print!("\x1b[?25h\x1b[?1049l");
        let _ = io::stdout().flush();
    }
    result
}

/// The window an answer covers.
pub struct Span {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Rates per second (live) or totals (history).
    pub live: bool,
}

impl Span {
    /// The window's length in seconds, for rates; from the answer's first
    /// flow when the window has no start.
    fn seconds(&self, a: &TopResponse) -> f64 {
        let start = self.since.or_else(|| {
            a.first
                .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        });
        match (start, self.until) {
            (Some(s), Some(u)) => ((u - s).num_milliseconds() as f64 / 1000.0).max(0.001),
            _ => 1.0,
        }
    }
}

/// The answer's pairs, largest first by `sort` (ties by flows, then by
/// name, so the order is stable between refreshes).
pub(crate) fn ranked(a: &TopResponse, sort: SortBy) -> Vec<(Figures, usize)> {
    let mut rows: Vec<(Figures, usize)> = a
        .pairs
        .iter()
        .enumerate()
        .map(|(i, p)| (Figures::of(p), i))
        .collect();
    let metric = |f: &Figures| match sort {
        SortBy::Flows => f.flows,
        SortBy::Bytes => f.bytes,
        SortBy::Packets => f.packets,
        SortBy::Drops => f.drops,
        SortBy::Errors => f.errors,
        SortBy::Latency => f.p95_us.unwrap_or(0),
    };
    rows.sort_by(|(fa, ia), (fb, ib)| {
        metric(fb)
            .cmp(&metric(fa))
            .then(fb.flows.cmp(&fa.flows))
            .then_with(|| {
                format!("{:?}", a.pairs[*ia].keys).cmp(&format!("{:?}", a.pairs[*ib].keys))
            })
    });
    rows
}

/// 1536 -> `1.5 KiB`.
pub(crate) fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub(crate) fn latency(us: Option<u64>) -> String {
    match us {
        None => "-".into(),
        Some(us) if us < 1000 => format!("{us}µs"),
        Some(us) if us < 1_000_000 => format!("{:.1}ms", us as f64 / 1000.0),
        Some(us) => format!("{:.2}s", us as f64 / 1e6),
    }
}

pub(crate) fn rate(n: u64, secs: f64) -> String {
    let r = n as f64 / secs;
    if r >= 100.0 || r == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

fn end_text(p: &webb_proto::analysis::TopPair, by: &[By], source: bool) -> String {
    let parts: Vec<String> = by
        .iter()
        .zip(&p.keys)
        .filter(|(b, _)| !b.pair_wide())
        .map(|(_, v)| printable(if source { &v.source } else { &v.destination }))
        .collect();
    parts.join(" ")
}

fn time_text(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "start".into(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// What a window did not count, for the header.
fn warnings(a: &TopResponse) -> Vec<String> {
    let mut w = Vec::new();
    if !a.unavailable_nodes.is_empty() {
        let names: Vec<String> = a.unavailable_nodes.iter().map(|n| printable(n)).collect();
        w.push(format!("unavailable: {}", names.join(", ")));
    }
    if a.flows_gone > 0 {
        w.push(format!(
            "{} flows of the window no longer held",
            thousands(a.flows_gone)
        ));
    }
    if a.flows_left_out > 0 {
        w.push(format!(
            "{} flows of pairs past the limit left out",
            thousands(a.flows_left_out)
        ));
    }
    w
}

/// The table `webb top` prints for one answer.
pub fn table(a: &TopResponse, by: &[By], sort: SortBy, limit: usize, span: &Span) -> String {
    let secs = span.seconds(a);
    let mut out = format!(
        "{} {} .. {} ({:.0}s), {} node(s), {} flows",
        if span.live { "Live" } else { "Window" },
        time_text(span.since),
        time_text(span.until),
        secs,
        a.nodes.len(),
        thousands(a.flows_counted),
    );
    for w in warnings(a) {
        out.push_str("; ");
        out.push_str(&w);
    }
    out.push_str("\n\n");
    let ends = by.iter().any(|b| !b.pair_wide());
    let mut text = String::new();
    if ends {
        text.push_str("SOURCE\tDESTINATION\t");
    }
    for b in by.iter().filter(|b| b.pair_wide()) {
        text.push_str(b.header());
        text.push('\t');
    }
    text.push_str(if span.live {
        "FLOWS/S\tBYTES/S\tPACKETS/S\tDROPS\tERRORS\tP95"
    } else {
        "FLOWS\tBYTES\tPACKETS\tDROPS\tERRORS\tP95"
    });
    text.push('\n');
    let rows = ranked(a, sort);
    let shown = if limit == 0 {
        rows.len()
    } else {
        limit.min(rows.len())
    };
    for (f, i) in &rows[..shown] {
        let p = &a.pairs[*i];
        if ends {
            text.push_str(&end_text(p, by, true));
            text.push('\t');
            text.push_str(&end_text(p, by, false));
            text.push('\t');
        }
        for (_, v) in by.iter().zip(&p.keys).filter(|(b, _)| b.pair_wide()) {
            text.push_str(if v.pair.is_empty() { "-" } else { &v.pair });
            text.push('\t');
        }
        let row = if span.live {
            format!(
                "{}\t{}/s\t{}\t{}\t{}\t{}",
                rate(f.flows, secs),
                human_bytes(f.bytes as f64 / secs),
                rate(f.packets, secs),
                thousands(f.drops),
                thousands(f.errors),
                latency(f.p95_us)
            )
        } else {
            format!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                thousands(f.flows),
                human_bytes(f.bytes as f64),
                thousands(f.packets),
                thousands(f.drops),
                thousands(f.errors),
                latency(f.p95_us)
            )
        };
        // Names are printable already; a tab in one would break the
        // columns, and printable() escapes it.
        text.push_str(&printable_row(&row));
        text.push('\n');
    }
    out.push_str(&crate::status::tabulate(&text));
    if shown < rows.len() {
        out.push_str(&format!("({} more pairs)\n", rows.len() - shown));
    }
    out
}

fn printable_row(s: &str) -> String {
    s.chars()
        .filter(|c| *c == '\t' || !c.is_control())
        .collect()
}

/// One answer as one line of JSON: the window, the nodes, and every pair
/// with its figures (totals, and per-second rates over the window).
pub fn json_line(a: &TopResponse, by: &[By], span: &Span) -> String {
    use serde_json::{Map, Value, json};
    let secs = span.seconds(a);
    let pairs: Vec<Value> = ranked(a, SortBy::Bytes)
        .into_iter()
        .map(|(f, i)| {
            let p = &a.pairs[i];
            let (mut src, mut dst, mut pair) = (Map::new(), Map::new(), Map::new());
            for (b, v) in by.iter().zip(&p.keys) {
                if b.pair_wide() {
                    pair.insert(b.name().into(), v.pair.clone().into());
                } else {
                    src.insert(b.name().into(), v.source.clone().into());
                    dst.insert(b.name().into(), v.destination.clone().into());
                }
            }
            let mut o = Map::new();
            if !src.is_empty() {
                o.insert("source".into(), Value::Object(src));
                o.insert("destination".into(), Value::Object(dst));
            }
            o.extend(pair);
            o.insert("flows".into(), f.flows.into());
            o.insert("bytes".into(), f.bytes.into());
            o.insert("packets".into(), f.packets.into());
            o.insert("drops".into(), f.drops.into());
            o.insert("errors".into(), f.errors.into());
            o.insert("responses".into(), f.responses.into());
            o.insert(
                "p95_latency_us".into(),
                f.p95_us.map_or(Value::Null, Value::from),
            );
            o.insert("flows_per_second".into(), json!(f.flows as f64 / secs));
            o.insert("bytes_per_second".into(), json!(f.bytes as f64 / secs));
            Value::Object(o)
        })
        .collect();
    let stamp = |t: Option<DateTime<Utc>>| t.map_or(Value::Null, |t| t.to_rfc3339().into());
    let line = json!({
        "since": stamp(span.since),
        "until": stamp(span.until),
        "seconds": secs,
        "nodes": a.nodes,
        "unavailable_nodes": a.unavailable_nodes,
        "flows_counted": a.flows_counted,
        "flows_gone": a.flows_gone,
        "flows_left_out": a.flows_left_out,
        "pairs": pairs,
    });
    format!("{line}\n")
}

#[cfg(test)]
mod tests;
