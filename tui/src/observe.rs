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
    conn::{ConfigFile, Server, ServerArgs, Usage},
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
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "FILE",
        help_heading = "Other"
    )]
    pub input_file: Option<PathBuf>,
    /// Words that are not flags: Hubble's observe ignores them, and so
    /// does webb (`hubble observe --numeric false` is `--numeric`).
    #[arg(hide = true)]
    pub ignored: Vec<String>,
    /// Print the request's allowlist and denylist and exit
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool, action = clap::ArgAction::Set, value_name = "BOOL", hide_default_value = true, help_heading = "Other")]
    pub print_raw_filters: bool,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct Selectors {
    /// The last N flows of the server's buffer (through webb-relay the
    /// cluster's newest N; Hubble's relay gives N per node); 20 when
    /// nothing else selects
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "N",
        help_heading = "Selectors"
    )]
    pub last: Option<u64>,
    /// The first N flows of the server's buffer (through webb-relay the
    /// cluster's oldest N; Hubble's relay gives N per node)
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "N",
        help_heading = "Selectors"
    )]
    pub first: Option<u64>,
    /// Every flow in the server's buffer
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool, action = clap::ArgAction::Set, value_name = "BOOL", hide_default_value = true, help_heading = "Selectors")]
    pub all: bool,
    /// Keep streaming new flows
    #[arg(short, long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool, action = clap::ArgAction::Set, value_name = "BOOL", hide_default_value = true, help_heading = "Selectors")]
    pub follow: bool,
    /// Flows since this time: a duration before now (3s, 4m, 1h43m) or a
    /// time (2024-01-02, 2024-01-02T03Z, 2024-01-02T03:04Z, RFC 3339,
    /// RFC1123Z)
    #[arg(long, value_name = "TIME", value_parser = parse_time, allow_hyphen_values = true,
          help_heading = "Selectors")]
    pub since: Option<DateTime<Utc>>,
    /// Flows until this time (same forms as --since); ignored, and not
    /// read, with --follow, as Hubble ignores it
    #[arg(
        long = "until",
        value_name = "TIME",
        allow_hyphen_values = true,
        help_heading = "Selectors"
    )]
    pub until_arg: Option<String>,
    /// `--until` as read by [`Selectors::resolve`]: none when following.
    #[arg(skip)]
    pub until: Option<DateTime<Utc>>,
}

impl Selectors {
    /// Reads `--until`, unless following: Hubble reads it only then, so
    /// `--until junk --follow` is not an error.
    /// Also refuses what Hubble refuses together: --first N with --last N,
    /// --all or --follow, and --last N with --all (N above 0; a 0 is as
    /// good as not given).
    pub fn resolve(&mut self) -> Result<(), String> {
        let first = self.first.is_some_and(|n| n > 0);
        let last = self.last.is_some_and(|n| n > 0);
        for (both, what) in [
            (first && last, "--first and --last"),
            (first && self.all, "--first and --all"),
            (first && self.follow, "--first and --follow"),
            (last && self.all, "--last and --all"),
        ] {
            if both {
                return Err(format!("cannot set both {what}"));
            }
        }
        self.until = match &self.until_arg {
            Some(s) if !self.follow => Some(parse_time(s)?),
            _ => None,
        };
        Ok(())
    }

    /// The request's `number` and `first`: every record, the first or last
    /// N, or the last 20 when nothing else selects (Hubble's default).
    pub fn number_and_first(&self) -> (u64, bool) {
        // As Hubble's CLI forms its request: --all and the default of 20
        // apply only without a time window.
        if let Some(n) = self.first.filter(|&n| n > 0) {
            return (n, true);
        }
        let last = self.last.unwrap_or(0);
        if self.since.is_none() && self.until.is_none() {
            if self.all {
                return (u64::MAX, false);
            }
            if last == 0 && !self.follow {
                return (20, false);
            }
        }
        (last, false)
    }
}

/// A boolean as Go's strconv.ParseBool reads it, with its error: a bool
/// flag's `=VALUE` (pflag's bool flags take `--flag=false`, never the next
/// word) and `webb config set`'s bool keys.
pub fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("strconv.ParseBool: parsing {s:?}: invalid syntax")),
    }
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    time::parse_time(s, Utc::now())
        .ok_or_else(|| format!("{s:?} is not a time; use {}", time::FORMATS_HELP))
}

/// `--color`: `always`, `never`, or anything else (`auto`): when stdout is a
/// terminal, `NO_COLOR` is unset and `TERM` is not `dumb`, as Hubble's colour
/// library decides (it reads an unknown value as `auto` too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

impl ColorWhen {
    pub fn parse(v: &str) -> Result<Self, std::convert::Infallible> {
        Ok(match v.to_ascii_lowercase().as_str() {
            "always" => Self::Always,
            "never" => Self::Never,
            _ => Self::Auto,
        })
    }
}

/// `-o`: Hubble's names (`json` and `JSON` are jsonpb's JSON, `tab` is
/// `table`); anything else is refused as Hubble refuses it.
fn parse_format(v: &str) -> Result<Format, String> {
    Ok(match v {
        "compact" => Format::Compact,
        "dict" => Format::Dict,
        "json" | "JSON" => Format::Json,
        "jsonpb" => Format::Jsonpb,
        "tab" | "table" => Format::Table,
        _ => return Err(format!("invalid output format: {v}")),
    })
}

#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Output format: compact, dict, json, jsonpb, table
    #[arg(
        short = 'o',
        allow_hyphen_values = true,
        long = "output",
        value_name = "FORMAT",
        default_value = "compact",
        help_heading = "Output"
    )]
    pub output_arg: String,
    /// `-o` as read by [`OutputArgs::resolve`]: checked when the command
    /// runs (the last `-o` counts, as in Hubble).
    #[arg(skip)]
    pub output: Format,
    /// Time format: YearMonthDay, YearMonthDayHour, YearMonthDayHourMinute,
    /// StampMilli, RFC3339, RFC3339Milli, RFC3339Micro, RFC3339Nano, RFC1123Z
    /// (any case; an unknown name is StampMilli, as in Hubble)
    #[arg(long, allow_hyphen_values = true, value_name = "NAME", default_value = "StampMilli",
          value_parser = TimeFormat::parse, help_heading = "Output")]
    pub time_format: TimeFormat,
    /// Colour the output: auto (when stdout is a terminal and NO_COLOR is
    /// unset), always or never
    #[arg(long, allow_hyphen_values = true, value_name = "WHEN", default_value = "auto",
          value_parser = ColorWhen::parse, help_heading = "Output")]
    pub color: ColorWhen,
    /// Name the policies that allowed or denied a policy verdict
    /// (`ALLOWED BY name (kind)`)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool, action = clap::ArgAction::Set, value_name = "BOOL", hide_default_value = true, help_heading = "Output")]
    pub print_policy_names: bool,
    /// Silent: write nothing on stderr (node status, warnings)
    #[arg(
        short = 's',
        long,
        visible_alias = "silent-errors",
        num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool, action = clap::ArgAction::Set, value_name = "BOOL", hide_default_value = true,
        help_heading = "Output"
    )]
    pub silent: bool,
    /// Debug: log the request sent and every node status change on stderr
    #[arg(short = 'D', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool, action = clap::ArgAction::Set, value_name = "BOOL", hide_default_value = true, help_heading = "Output")]
    pub debug: bool,
    /// Print the node name of each flow
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool, action = clap::ArgAction::Set, value_name = "BOOL", hide_default_value = true, help_heading = "Output")]
    pub print_node_name: bool,
    /// Print numbers: IPs instead of names, identities as numbers
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool, action = clap::ArgAction::Set, value_name = "BOOL", hide_default_value = true, help_heading = "Output")]
    pub numeric: bool,
    /// Show pod and service names instead of IPs (--ip-translation=false to turn off)
    #[arg(long, default_value = "true", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool, value_name = "BOOL",
          action = clap::ArgAction::Set, help_heading = "Output")]
    pub ip_translation: bool,
    /// Ask the server for only these fields (comma-separated paths, e.g.
    /// time,source.pod_name,verdict)
    #[arg(
        long,
        allow_hyphen_values = true,
        value_delimiter = ',',
        value_name = "PATHS",
        help_heading = "Output"
    )]
    pub field_mask: Vec<String>,
    /// Request only visible fields when the output format is compact,
    /// tab, or dict
    #[arg(long, default_value = "true", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool, value_name = "BOOL",
          action = clap::ArgAction::Set, help_heading = "Output")]
    pub use_default_field_masks: bool,
}

impl OutputArgs {
    /// Reads `-o`; a name Hubble does not know is refused.
    pub fn resolve(&mut self) -> Result<(), String> {
        self.output = parse_format(&self.output_arg)?;
        Ok(())
    }

    pub fn printer_options(&self) -> printer::Options {
        let color = match self.color {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
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
            policy_names: self.print_policy_names,
            debug: self.debug,
            silent: self.silent,
        }
    }

    /// Whether the request carries a text mask: text output, no
    /// `--field-mask`, `--use-default-field-masks` on.
    fn default_text_mask(&self) -> bool {
        self.field_mask.is_empty()
            && self.use_default_field_masks
            && !matches!(self.output, Format::Json | Format::Jsonpb)
    }

    /// Hubble's checks of the output flags against the selectors.
    pub fn check(&self, follow: bool) -> Result<(), String> {
        let json = matches!(self.output, Format::Json | Format::Jsonpb);
        if !json && !self.field_mask.is_empty() {
            return Err(format!(
                "{} output format is not compatible with custom field mask",
                self.output.name()
            ));
        }
        if self.output == Format::Table && follow {
            return Err("table output format is not compatible with follow mode".into());
        }
        if let Err(e) = webb_proto::mask::FlowMask::new(&self.field_mask) {
            return Err(format!("failed to construct field mask: {e}"));
        }
        Ok(())
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
    let o = &args.output;
    if !o.field_mask.is_empty() {
        req.field_mask = Some(FieldMask {
            paths: o.field_mask.clone(),
        });
    } else if o.default_text_mask() {
        req.field_mask = Some(text_mask(&webb_proto::mask::webb_text()));
    }
    req
}

/// A field mask of these paths.
fn text_mask(paths: &[&str]) -> FieldMask {
    FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    }
}

/// Whether a server refused the request's field mask: Cilium answers an
/// unknown path with "invalid fieldmask" (as Unknown), webb-agent with
/// InvalidArgument and the same words.
fn refuses_mask(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::InvalidArgument | tonic::Code::Unknown
    ) && s.message().to_ascii_lowercase().contains("fieldmask")
}

/// What ended the output early: the reader went away (`| head`).
fn is_broken_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

mod parallel;
mod prototext;

/// A value as Go's log/slog text handler writes it: quoted (Go's `%q`) when
/// empty or holding a space, `=`, `"` or an unprintable character.
fn slog_value(v: &str) -> String {
    if v.is_empty()
        || v.chars().any(|c| {
            c.is_whitespace() || c == '=' || c == '"' || c == '\u{fffd}' || !printer::go_is_print(c)
        })
    {
        printer::go_quote(v)
    } else {
        v.to_owned()
    }
}

/// One line of Hubble's log (slog's text form) at `level`.
pub(crate) fn log_line(level: &str, msg: &str, fields: &[(&str, &str)]) -> String {
    let mut line = format!(
        "time={} level={level} msg={}",
        Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        slog_value(msg)
    );
    for (k, v) in fields {
        line.push_str(&format!(" {k}={}", slog_value(v)));
    }
    line.push('\n');
    line
}

/// Hubble's one-time warning for a capture from a newer Hubble (a field or
/// enum value this build does not know: the field is skipped, the value
/// read as 0 or kept as its number).
pub(crate) fn unknown_warning(what: &str) -> String {
    log_line(
        "WARN",
        "unknown field detected, upgrade the Hubble CLI to get rid of this warning",
        &[("error", &format!("proto: {what}"))],
    )
}

/// Hubble's warning for a line that is not a response; the line is skipped
/// and reading goes on.
pub(crate) fn bad_line_warning(err: &serde_json::Error, line: &str) -> String {
    log_line(
        "WARN",
        "Failed to unmarshal json to flow",
        &[("error", &err.to_string()), ("line", line)],
    )
}

/// `-D`: the request logged as Hubble's CLI logs it, on stderr. From a file
/// it is the request Hubble's CLI forms for these flags (every record when
/// nothing selects, its text field mask), which a file reader applies as
/// Hubble's does (the mask is not applied to a file); from a server it is
/// the request sent.
fn log_request(args: &ObserveArgs) {
    let mut req = request(args);
    if args.input_file.is_some() {
        let s = &args.selectors;
        if !s.all && s.first.unwrap_or(0) == 0 && s.last.unwrap_or(0) == 0 {
            req.number = 0;
        }
        if args.output.default_text_mask() {
            req.field_mask = Some(text_mask(webb_proto::mask::HUBBLE_TEXT));
        }
    }
    if req.follow {
        req.until = None;
    }
    eprint!(
        "{}",
        log_line(
            "DEBUG",
            "Sending GetFlows request",
            &[("req", &prototext::request(&req))]
        )
    );
}

pub async fn run(args: ObserveArgs, config: &ConfigFile) -> anyhow::Result<()> {
    args.output
        .check(args.selectors.follow)
        .map_err(|e| anyhow::anyhow!(Usage(e)))?;
    crate::conn::Server::check(&args.server, config)?;
    if args.input_file.is_some() && (args.server.port_forward || config.port_forward) {
        anyhow::bail!(Usage(
            "cannot use --input-file and --auto-port-forward together".into()
        ));
    }
    if args.print_raw_filters {
        print!("{}", filters::raw_listing(&args.filters));
        return Ok(());
    }
    // A value the filter engine refuses (a bad IP, port, pattern, selector
    // or CEL expression) fails here, before any connection, as Hubble's
    // reader and server refuse it.
    args.filters
        .compile()
        .map_err(|e| anyhow::anyhow!(Usage(format!("invalid filter: {e}"))))?;
    if args.output.debug || config.debug {
        log_request(&args);
    }
    let mut opts = args.output.printer_options();
    opts.debug |= config.debug;
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
    let req = request(args);
    let mut stream =
        match undecoded::get_flows(channel.clone(), req.clone(), 64 * 1024 * 1024).await {
            // A Hubble server knows only Hubble's fields: ask again with
            // Hubble's own text mask (webb-only fields are then not printed).
            Err(s) if refuses_mask(&s) && args.output.default_text_mask() => {
                let mut req = req;
                req.field_mask = Some(text_mask(webb_proto::mask::HUBBLE_TEXT));
                undecoded::get_flows(channel, req, 64 * 1024 * 1024).await
            }
            other => other,
        }
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
        printer.flush_ready()?;
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
        non_flow_passes: filters.matches_non_flow(),
        filters: &filters,
    };
    let first = if s.all {
        None
    } else {
        s.first.filter(|&n| n > 0)
    };
    let last = if s.all {
        None
    } else {
        s.last.filter(|&n| n > 0)
    };
    if let Some(n) = last.filter(|&n| n > 1_000_000) {
        anyhow::bail!(Usage(format!("--last must be <= 1_000_000, got {n}")));
    }
    if first.is_none() && last.is_none() {
        return parallel::run(reader, path, &window, printer);
    }
    // As Hubble's file reader counts: every response that passes the time
    // window and the filters counts towards --first/--last, whatever it
    // carries (a node status too, even one that prints nothing).
    let mut tail: VecDeque<GetFlowsResponse> = VecDeque::new();
    let mut returned = 0u64;
    let mut warned = false;
    for item in webb_proto::json::read_lines_noting(reader) {
        let resp = match item {
            Ok(parsed) => {
                if let Some(what) = parsed.unknown.filter(|_| !warned) {
                    warned = true;
                    printer.log(&unknown_warning(&what))?;
                }
                parsed.response
            }
            Err(webb_proto::json::JsonError::Parse { text, source, .. }) => {
                printer.log(&bad_line_warning(&source, &text))?;
                continue;
            }
            Err(e) => anyhow::bail!("--input-file {}: {e}", path.display()),
        };
        if !window.keeps(&resp) {
            continue;
        }
        if let Some(n) = last {
            tail.push_back(resp);
            if tail.len() as u64 > n {
                tail.pop_front();
            }
            continue;
        }
        printer.write(&resp)?;
        returned += 1;
        if first.is_some_and(|n| returned >= n) {
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
    /// Whether a response that is not a flow passes the filters (see
    /// [`FlowFilters::matches_non_flow`]).
    non_flow_passes: bool,
}

impl Window<'_> {
    /// Hubble's file reader: the response's own time (none is the Unix
    /// epoch) within --since/--until, then the filters.
    pub(crate) fn keeps(&self, resp: &GetFlowsResponse) -> bool {
        if self.since.is_some() || self.until.is_some() {
            let t = resp
                .time
                .as_ref()
                .and_then(Timestamp::to_datetime)
                .unwrap_or(DateTime::UNIX_EPOCH);
            if self.since.is_some_and(|s| s > t) || self.until.is_some_and(|u| u < t) {
                return false;
            }
        }
        match &resp.response_types {
            Some(ResponseTypes::Flow(f)) => self.filters.matches(f),
            _ => self.non_flow_passes,
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

#[cfg(test)]
mod mask_tests {
    use std::sync::Arc;

    use webb_proto::{json, mask::FlowMask};

    use super::*;

    /// Recorded flows: the repository's fixtures and, when present beside
    /// the checkout, the shared Hubble corpus.
    fn recorded() -> Vec<GetFlowsResponse> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let files = [
            dir.join("tests/fixtures/flows.jsonl"),
            dir.join("../proto/tests/golden/hubble.jsonl"),
            dir.join("../examples/demo.jsonl"),
            dir.join("../../shared/hubble-oracle/flows.jsonl"),
            dir.join("../../shared/hubble-oracle/edge-cases.jsonl"),
        ];
        let mut out = Vec::new();
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            out.extend(text.lines().filter_map(|l| json::parse_line(l).ok()));
        }
        assert!(out.len() > 100, "{} recorded flows", out.len());
        out
    }

    fn print(opts: printer::Options, resps: &[GetFlowsResponse]) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut p = Printer::new(opts, &mut out, &mut err);
        for r in resps {
            p.write(r).unwrap();
        }
        p.flush().unwrap();
        drop(p);
        (
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    /// The default text mask holds every field webb's printers read: each
    /// format and option prints the masked flows exactly as the whole ones.
    #[test]
    fn text_output_of_masked_flows_is_the_same() {
        let all = recorded();
        let mask = Arc::new(
            FlowMask::new(&webb_proto::mask::webb_text())
                .unwrap()
                .unwrap(),
        );
        let mut m = mask.masker();
        let masked: Vec<_> = all.iter().map(|r| m.response(r)).collect();
        assert_ne!(masked, all, "the mask removes something");
        for format in [Format::Compact, Format::Dict, Format::Table] {
            for (numeric, node_name, policy_names, color) in [
                (false, false, false, false),
                (true, true, true, false),
                (false, true, true, true),
            ] {
                let opts = printer::Options {
                    format,
                    numeric,
                    ip_translation: !numeric,
                    node_name,
                    policy_names,
                    color,
                    ..Default::default()
                };
                let (whole, masked) = (print(opts, &all), print(opts, &masked));
                for (n, (a, b)) in whole.0.lines().zip(masked.0.lines()).enumerate() {
                    assert_eq!(a, b, "{format:?} {opts:?} line {n}");
                }
                assert_eq!(whole, masked, "{format:?} {opts:?}");
            }
        }
    }

    #[test]
    fn a_refused_mask_is_recognised_from_cilium_and_webb() {
        assert!(refuses_mask(&tonic::Status::unknown("invalid fieldmask")));
        assert!(refuses_mask(&tonic::Status::invalid_argument(
            "invalid fieldmask: proto: invalid path \"x\" for message \"flow.Flow\""
        )));
        assert!(!refuses_mask(&tonic::Status::unavailable(
            "invalid fieldmask"
        )));
        assert!(!refuses_mask(&tonic::Status::invalid_argument(
            "since is after until"
        )));
    }

    #[test]
    fn hubbles_mask_is_a_subset_of_webbs_and_both_are_valid() {
        for f in webb_proto::mask::HUBBLE_TEXT {
            assert!(webb_proto::mask::webb_text().contains(f), "{f}");
        }
        assert!(FlowMask::new(webb_proto::mask::HUBBLE_TEXT).is_ok());
    }
}
