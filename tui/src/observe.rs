//! `webb observe`: flows from a server or a file, filtered, printed.

use std::{
    collections::VecDeque,
    io::{self, BufRead, BufReader, BufWriter, IsTerminal as _, Write},
    path::PathBuf,
};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{FutureExt as _, StreamExt as _};
use webb_proto::{
    decoder::ResponseDecoder,
    filter::FlowFilters,
    observer::{GetFlowsRequest, GetFlowsResponse, get_flows_response::ResponseTypes},
    undecoded,
    wkt::{FieldMask, Timestamp},
};

use crate::{
    conn::{ConfigFile, Server, ServerArgs},
    filters::{self, FilterArgs},
    printer::{self, Format, Printer},
    time::{self, TimeFormat},
};

#[derive(Debug, Clone, clap::Args)]
pub struct ObserveArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub selectors: Selectors,
    #[command(flatten)]
    pub filters: FilterArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Read flows from this file (`hubble observe -o json` or webb output)
    /// instead of a server; '-' reads stdin
    #[arg(long, value_name = "FILE", help_heading = "Other")]
    pub input_file: Option<PathBuf>,
    /// Print the request's allowlist and denylist and exit
    #[arg(long, help_heading = "Other")]
    pub print_raw_filters: bool,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct Selectors {
    /// The last N flows of the server's buffer (N per node through a relay);
    /// 20 when nothing else selects
    #[arg(long, value_name = "N", conflicts_with_all = ["first", "all"], help_heading = "Selectors")]
    pub last: Option<u64>,
    /// The first N flows of the server's buffer (N per node through a relay)
    #[arg(long, value_name = "N", conflicts_with_all = ["all", "follow"], help_heading = "Selectors")]
    pub first: Option<u64>,
    /// Every flow in the server's buffer
    #[arg(long, help_heading = "Selectors")]
    pub all: bool,
    /// Keep streaming new flows
    #[arg(short, long, help_heading = "Selectors")]
    pub follow: bool,
    /// Flows since this time: a duration before now (3s, 4m, 1h43m) or a
    /// time (RFC 3339, 2024-01-02T03:04, 2024-01-02, Unix seconds)
    #[arg(long, value_name = "TIME", value_parser = parse_time, help_heading = "Selectors")]
    pub since: Option<DateTime<Utc>>,
    /// Flows until this time (same forms as --since)
    #[arg(long, value_name = "TIME", value_parser = parse_time, help_heading = "Selectors")]
    pub until: Option<DateTime<Utc>>,
}

impl Selectors {
    /// The request's `number` and `first`: every record, the first or last
    /// N, or the last 20 when nothing else selects (Hubble's default).
    pub fn number_and_first(&self) -> (u64, bool) {
        if self.all {
            (u64::MAX, false)
        } else if let Some(n) = self.first {
            (n, true)
        } else if let Some(n) = self.last {
            (n, false)
        } else if !self.follow && self.since.is_none() && self.until.is_none() {
            (20, false)
        } else {
            (0, false)
        }
    }
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    time::parse_time(s, Utc::now())
        .ok_or_else(|| format!("{s:?} is not a time; use {}", time::FORMATS_HELP))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Format::Compact, help_heading = "Output")]
    pub output: Format,
    /// Time format
    #[arg(long, value_enum, default_value_t = TimeFormat::StampMilli, help_heading = "Output")]
    pub time_format: TimeFormat,
    /// Colour the output (auto: when stdout is a terminal and NO_COLOR is unset)
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto, help_heading = "Output")]
    pub color: ColorWhen,
    /// Print the node name of each flow
    #[arg(long, help_heading = "Output")]
    pub print_node_name: bool,
    /// Print numbers: IPs instead of names, identities as numbers
    #[arg(long, help_heading = "Output")]
    pub numeric: bool,
    /// Show pod and service names instead of IPs (--ip-translation=false to turn off)
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set, help_heading = "Output")]
    pub ip_translation: bool,
    /// Ask the server for only these fields (comma-separated paths, e.g.
    /// time,source.pod_name,verdict)
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "PATHS",
        help_heading = "Output"
    )]
    pub field_mask: Vec<String>,
}

impl OutputArgs {
    pub fn printer_options(&self) -> printer::Options {
        let color = match self.color {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && io::stdout().is_terminal()
            }
        };
        printer::Options {
            format: self.output,
            time_format: self.time_format,
            color,
            node_name: self.print_node_name,
            ip_translation: self.ip_translation && !self.numeric,
            numeric: self.numeric,
        }
    }
}

/// The GetFlows request these arguments ask for.
pub fn request(args: &ObserveArgs) -> GetFlowsRequest {
    let s = &args.selectors;
    let mut req = GetFlowsRequest {
        follow: s.follow,
        whitelist: args.filters.allowlist.clone(),
        blacklist: args.filters.denylist.clone(),
        since: s.since.map(Timestamp::from),
        until: s.until.map(Timestamp::from),
        ..Default::default()
    };
    (req.number, req.first) = s.number_and_first();
    if !args.output.field_mask.is_empty() {
        req.field_mask = Some(FieldMask {
            paths: args.output.field_mask.clone(),
        });
    }
    req
}

/// What ended the output early: the reader went away (`| head`).
fn is_broken_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

mod parallel;

pub async fn run(args: ObserveArgs, config: &ConfigFile) -> anyhow::Result<()> {
    if args.print_raw_filters {
        print!("{}", filters::raw_listing(&args.filters));
        return Ok(());
    }
    let opts = args.output.printer_options();
    let out = BufWriter::with_capacity(64 * 1024, io::stdout());
    let mut printer = Printer::new(opts, out, io::stderr());
    let result = match &args.input_file {
        Some(path) => from_file(&args, path, &mut printer)
            .and_then(|()| printer.flush().map_err(anyhow::Error::from)),
        None => from_server(&args, config, printer).await,
    };
    match result {
        Err(e) if e.downcast_ref::<io::Error>().is_some_and(is_broken_pipe) => Ok(()),
        other => other,
    }
}

/// Streams from a server. The connection task only reads: each response
/// goes, undecoded, in batches to a second thread that decodes and prints
/// it, so reading and formatting use two cores and the CLI keeps up with
/// the server.
async fn from_server<W: Write + Send + 'static, E: Write + Send + 'static>(
    args: &ObserveArgs,
    config: &ConfigFile,
    mut printer: Printer<W, E>,
) -> anyhow::Result<()> {
    let (server, _forward) = Server::resolve_forwarded(&args.server, config).await?;
    let channel = server.connect().await?;
    let mut stream = undecoded::get_flows(channel, request(args), 64 * 1024 * 1024)
        .await
        .map_err(|s| server.call_error("GetFlows", &s))?;

    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Bytes>>(8);
    let formatter = std::thread::spawn(move || print_batches(rx, &mut printer));

    const BATCH: usize = 512;
    let mut failure = None;
    while let Some(first) = stream.next().await {
        let mut batch = Vec::with_capacity(16);
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                Ok(bytes) => batch.push(bytes),
                Err(s) => {
                    failure = Some(server.call_error("GetFlows stream", &s));
                    break;
                }
            }
            next = if batch.len() < BATCH {
                stream.next().now_or_never().flatten()
            } else {
                None
            };
        }
        // A send fails only when the formatter stopped (the reader of our
        // output went away, or a response did not decode); its error says
        // why.
        if tx.send(batch).is_err() || failure.is_some() {
            break;
        }
    }
    drop(tx);
    match formatter.join() {
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => failure.map_or(Ok(()), Err),
        Err(_) => Err(anyhow::anyhow!(
            "the output thread failed; output may be incomplete"
        )),
    }
}

/// The formatter thread: decodes each response of each batch and prints it,
/// flushing at the end of every batch. The decoder shares the endpoints a
/// stream repeats instead of decoding them again (half the decoding cost).
fn print_batches<W: Write, E: Write>(
    batches: impl IntoIterator<Item = Vec<Bytes>>,
    printer: &mut Printer<W, E>,
) -> anyhow::Result<()> {
    let mut decoder = ResponseDecoder::new();
    for batch in batches {
        for bytes in &batch {
            let resp = decoder.decode(bytes).map_err(|e| {
                anyhow::anyhow!(
                    "GetFlows stream: the server sent a malformed response ({} bytes): {e}",
                    bytes.len()
                )
            })?;
            printer.write(&resp)?;
        }
        // A batch ends where the stream had nothing more ready: show it now
        // (this is what makes --follow immediate).
        printer.flush()?;
    }
    Ok(printer.flush()?)
}

/// Reads a capture, applying the same filters, time window and selectors a
/// server would: everything by default, `--first N` / `--last N` when asked.
fn from_file<W: Write, E: Write>(
    args: &ObserveArgs,
    path: &std::path::Path,
    printer: &mut Printer<W, E>,
) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead + Send> = if path.as_os_str() == "-" {
        Box::new(BufReader::with_capacity(256 * 1024, io::stdin()))
    } else {
        let f = std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("--input-file {}: {e}", path.display()))?;
        Box::new(BufReader::with_capacity(256 * 1024, f))
    };
    let filters = args.filters.compile()?;
    let s = &args.selectors;
    let window = Window {
        since: s.since,
        until: s.until,
        filters: &filters,
    };
    let first = if s.all { None } else { s.first };
    let last = if s.all { None } else { s.last };
    if first.is_none() && last.is_none() {
        return parallel::run(reader, path, &window, printer);
    }
    // `--first`/`--last` count flows, as a server does; lost events and node
    // status records inside the window come along.
    let is_flow = |r: &GetFlowsResponse| matches!(r.response_types, Some(ResponseTypes::Flow(_)));
    let mut tail: VecDeque<GetFlowsResponse> = VecDeque::new();
    let mut tail_flows = 0u64;
    let mut printed_flows = 0u64;
    for item in webb_proto::json::read_lines(reader) {
        let resp = item.map_err(|e| anyhow::anyhow!("--input-file {}: {e}", path.display()))?;
        if !window.keeps(&resp) {
            continue;
        }
        let flow = is_flow(&resp);
        if let Some(n) = last {
            tail_flows += u64::from(flow);
            tail.push_back(resp);
            while tail_flows > n {
                if tail.pop_front().is_some_and(|r| is_flow(&r)) {
                    tail_flows -= 1;
                }
            }
            continue;
        }
        printer.write(&resp)?;
        printed_flows += u64::from(flow);
        if first.is_some_and(|n| printed_flows >= n) {
            break;
        }
    }
    for resp in &tail {
        printer.write(resp)?;
    }
    Ok(())
}

pub(crate) struct Window<'a> {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    filters: &'a FlowFilters,
}

impl Window<'_> {
    pub(crate) fn keeps(&self, resp: &GetFlowsResponse) -> bool {
        if self.since.is_some() || self.until.is_some() {
            let t = resp
                .time
                .as_ref()
                .or(match &resp.response_types {
                    Some(ResponseTypes::Flow(f)) => f.time.as_ref(),
                    _ => None,
                })
                .and_then(Timestamp::to_datetime);
            if let Some(t) = t
                && (self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t > u))
            {
                return false;
            }
        }
        match &resp.response_types {
            Some(ResponseTypes::Flow(f)) => self.filters.matches(f),
            _ => self.filters.passes_non_flow(),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use webb_proto::flow::{Flow, Verdict};

    use super::*;

    fn encoded(resp: &GetFlowsResponse) -> Bytes {
        Bytes::from(resp.encode_to_vec())
    }

    #[test]
    fn a_malformed_response_stops_the_output_with_a_clear_error_after_what_came_before() {
        let good = GetFlowsResponse {
            node_name: "node-a".into(),
            response_types: Some(ResponseTypes::Flow(Box::new(Flow {
                verdict: Verdict::Dropped as i32,
                ..Default::default()
            }))),
            ..Default::default()
        };
        let json = printer::Options {
            format: Format::Json,
            ..Default::default()
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut p = Printer::new(json, &mut out, &mut err);
        // A field tag with wire type 7 does not exist.
        let garbage = Bytes::from_static(&[0x0f, 0x01, 0x02]);
        let e = print_batches(
            [vec![encoded(&good)], vec![encoded(&good), garbage]],
            &mut p,
        )
        .expect_err("garbage must not decode");
        drop(p);
        assert!(
            e.to_string()
                .contains("the server sent a malformed response (3 bytes)"),
            "{e}"
        );
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            text.lines().all(|l| l.contains(r#""verdict":"DROPPED""#)),
            "{text}"
        );
    }
}
