//! Hubble's output formats: compact (one line per flow), dict (`KEY: value`
//! blocks), table (tab-aligned columns), json/jsonpb (one `GetFlowsResponse`
//! per line). Line for line what `hubble observe` prints, so eyes and scripts
//! carry over; where webb knows more (the kernel's own drop reason, an L7
//! latency) it is added after Hubble's text.

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use webb_proto::{
    flow::{DebugCapturePoint, Flow, LostEvent, LostEventSource, Verdict, layer4, layer7},
    names,
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
    relay::{NodeState, NodeStatusEvent},
    wkt::Timestamp,
};

use crate::time::TimeFormat;

pub(crate) mod tabwriter;
use tabwriter::TabWriter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// One line per flow.
    #[default]
    Compact,
    /// KEY: value blocks separated by `------------`.
    Dict,
    /// One GetFlowsResponse per line, in JSON (Hubble's -o json).
    Json,
    /// The same as json (Hubble's -o jsonpb).
    Jsonpb,
    /// Tab-aligned columns with a header.
    Table,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub format: Format,
    pub time_format: TimeFormat,
    pub color: bool,
    pub node_name: bool,
    /// Show pod names instead of IPs (off with `--numeric` or
    /// `--ip-translation=false`).
    pub ip_translation: bool,
    /// `--numeric` (IPs instead of names; reserved identities keep their
    /// names, as in Hubble).
    pub numeric: bool,
    /// `--print-policy-names`: `ALLOWED BY name (kind)`.
    pub policy_names: bool,
    /// `-D`: every node status change, not only failures.
    pub debug: bool,
    /// `-s`: nothing on stderr.
    pub silent: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            format: Format::Compact,
            time_format: TimeFormat::StampMilli,
            color: false,
            node_name: false,
            ip_translation: true,
            numeric: false,
            policy_names: false,
            debug: false,
            silent: false,
        }
    }
}

impl Format {
    /// The name `-o` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Compact => "compact",
            Self::Dict => "dict",
            Self::Json => "json",
            Self::Jsonpb => "jsonpb",
            Self::Table => "table",
        }
    }
}

const DICT_SEPARATOR: &str = "------------\n";

/// ANSI colours as Hubble uses them.
mod ansi {
    pub const RESET: &str = "\x1b[0m";
    pub const RED: &str = "\x1b[31m";
    pub const GREEN: &str = "\x1b[32m";
    pub const YELLOW: &str = "\x1b[33m";
    pub const MAGENTA: &str = "\x1b[35m";
    pub const CYAN: &str = "\x1b[36m";
}

/// Unaligned table text the tabwriter may hold before it aligns and writes
/// it out. Hubble aligns the whole output at the end, so that a large
/// capture printed as a table is held in memory in full; webb aligns blocks
/// of a few thousand rows, and memory stays bounded.
const TABLE_BLOCK_BYTES: usize = 1 << 20;

enum Sink<W: Write> {
    Plain(W),
    /// Go's tabwriter, holding the rows it has not aligned yet.
    Table(TabWriter<W>),
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Table(w) => w.write(buf),
        }
    }
    /// Callers write whole lines, so a block ends at a line's end.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.write_all(buf),
            Self::Table(w) => {
                w.write_all(buf)?;
                if w.held() >= TABLE_BLOCK_BYTES {
                    w.flush()?;
                }
                Ok(())
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Table(w) => w.flush(),
        }
    }
}

/// Writes responses in one format. Node status events go to `err` in the
/// human formats (Hubble prints them on stderr) and inline in JSON.
pub struct Printer<W: Write, E: Write> {
    opts: Options,
    out: Sink<W>,
    err: E,
    /// Records written so far (for the dict separator and table header).
    records: u64,
    /// Which stream the first record went to (None: none yet).
    err_first: Option<bool>,
    /// Bytes written to `err` so far.
    err_bytes: usize,
    line: String,
    /// The JSON line being written, reused across records.
    json: Vec<u8>,
    json_writer: webb_proto::json::LineWriter,
}

impl<W: Write, E: Write> Printer<W, E> {
    pub fn options(&self) -> Options {
        self.opts
    }

    /// The chunk printer's buffers, to hand to [`Printer::write_chunk`].
    pub fn into_buffers(self) -> (Vec<u8>, Vec<u8>)
    where
        W: Into<Vec<u8>>,
        E: Into<Vec<u8>>,
    {
        let out = match self.out {
            Sink::Plain(w) => w.into(),
            Sink::Table(t) => t.into_inner().map(Into::into).unwrap_or_default(),
        };
        (out, self.err.into())
    }

    pub fn new(mut opts: Options, out: W, err: E) -> Self {
        // Hubble's tabwriter cannot align coloured text: tables are plain.
        if opts.format == Format::Table {
            opts.color = false;
        }
        let out = match opts.format {
            // Hubble's tabwriter: min width 2, padding 3, spaces.
            Format::Table => Sink::Table(TabWriter::new(out, 2, 3)),
            _ => Sink::Plain(out),
        };
        Self {
            opts,
            out,
            err,
            records: 0,
            err_first: None,
            err_bytes: 0,
            line: String::with_capacity(256),
            json: Vec::with_capacity(2048),
            json_writer: Default::default(),
        }
    }

    /// A printer for one chunk of a parallel run: it writes to memory, and as
    /// if records came before it (every dict record gets its separator, no
    /// table header, no tab alignment); [`Printer::write_chunk`] stitches
    /// chunks back together.
    pub fn for_chunk(opts: Options) -> Printer<Vec<u8>, Vec<u8>> {
        Printer {
            opts,
            out: Sink::Plain(Vec::with_capacity(512 * 1024)),
            err: Vec::new(),
            records: 1,
            err_first: None,
            err_bytes: 0,
            line: String::with_capacity(256),
            json: Vec::with_capacity(2048),
            json_writer: Default::default(),
        }
    }

    /// Writes the output of a [`Printer::for_chunk`] printer, in order.
    /// `err_first`: the chunk's first record went to stderr (then, in dict
    /// format, that one loses its separator instead of stdout's first).
    pub fn write_chunk(&mut self, out: &[u8], err: &[u8], err_first: bool) -> io::Result<()> {
        let mut out = out;
        let mut err = err;
        // (Under -s the node status wrote nothing, but still counts.)
        if self.records == 0 && self.opts.format == Format::Dict && err_first {
            err = err.strip_prefix(DICT_SEPARATOR.as_bytes()).unwrap_or(err);
            self.records += 1;
        }
        if !out.is_empty() {
            if self.records == 0 {
                match self.opts.format {
                    Format::Dict => {
                        out = out.strip_prefix(DICT_SEPARATOR.as_bytes()).unwrap_or(out)
                    }
                    Format::Table => {
                        self.line.clear();
                        self.table_header();
                        self.out.write_all(self.line.as_bytes())?;
                    }
                    _ => {}
                }
            }
            self.records += 1;
            self.out.write_all(out)?;
        }
        self.err.write_all(err)
    }

    pub fn write(&mut self, resp: &GetFlowsResponse) -> io::Result<()> {
        match &resp.response_types {
            Some(ResponseTypes::NodeStatus(n)) => return self.node_status(n, resp),
            // A response with no payload is not printed, in any format.
            None => return Ok(()),
            Some(_) => {}
        }
        if self.err_first.is_none() {
            self.err_first = Some(false);
        }
        if matches!(self.opts.format, Format::Json | Format::Jsonpb) {
            self.json.clear();
            self.json_writer.append_line(&mut self.json, resp);
            self.json.push(b'\n');
            return self.out.write_all(&self.json);
        }
        self.line.clear();
        match &resp.response_types {
            Some(ResponseTypes::Flow(f)) => self.flow(f),
            Some(ResponseTypes::LostEvents(l)) => self.lost(l, resp.time.as_ref(), &resp.node_name),
            Some(ResponseTypes::NodeStatus(_)) | None => return Ok(()),
        }
        self.records += 1;
        let line = hubble_escape(&self.line, self.opts.color);
        self.out.write_all(line.as_bytes())
    }

    /// A relay's node status, as Hubble writes it: only a node becoming
    /// unavailable or failing (connections and departures are not news,
    /// except under `-D`), always on stderr (nothing under `-s`): JSON as
    /// the response, a dict block (its separator counted with the flows'),
    /// or one line.
    fn node_status(&mut self, n: &NodeStatusEvent, resp: &GetFlowsResponse) -> io::Result<()> {
        let state = NodeState::try_from(n.state_change).ok();
        if !self.opts.debug
            && !matches!(
                state,
                Some(NodeState::NodeUnavailable | NodeState::NodeError)
            )
        {
            return Ok(());
        }
        if self.err_first.is_none() {
            self.err_first = Some(true);
        }
        let ts = self.time(resp.time.as_ref());
        let nodes = join_with_cut_off(&n.node_names, ", ", 50);
        let state_name = state.map_or_else(
            || n.state_change.to_string(),
            |s| s.as_str_name().to_owned(),
        );
        let text = match self.opts.format {
            Format::Json | Format::Jsonpb if self.opts.silent => return Ok(()),
            Format::Json | Format::Jsonpb => {
                self.json.clear();
                self.json_writer.append_line(&mut self.json, resp);
                self.json.push(b'\n');
                self.err_bytes += self.json.len();
                return self.err.write_all(&self.json);
            }
            Format::Dict => {
                let sep = if self.records != 0 {
                    DICT_SEPARATOR
                } else {
                    self.records += 1;
                    ""
                };
                let message = if n.message.is_empty() {
                    "N/A".to_owned()
                } else {
                    go_quote(&n.message)
                };
                format!(
                    "{sep}  TIMESTAMP: {ts}\n      STATE: {state_name}\n      NODES: {nodes}\n    MESSAGE: {message}\n"
                )
            }
            Format::Compact | Format::Table => {
                let prefix = format!("{ts} [{}]", resp.node_name);
                let count = n.node_names.len();
                match state {
                    Some(NodeState::NodeConnected) => {
                        format!("{prefix}: Receiving flows from {count} nodes: {nodes}\n")
                    }
                    Some(NodeState::NodeUnavailable) => {
                        format!("{prefix}: {count} nodes are unavailable: {nodes}\n")
                    }
                    Some(NodeState::NodeGone) => {
                        format!("{prefix}: {count} nodes removed from cluster: {nodes}\n")
                    }
                    Some(NodeState::NodeError) => format!(
                        "{prefix}: Error {} on {count} nodes: {nodes}\n",
                        go_quote(&n.message)
                    ),
                    _ => format!(
                        "{prefix}: unknown node status event: {}\n",
                        node_status_text(n)
                    ),
                }
            }
        };
        // Under -s the text goes nowhere, but a dict block still counts
        // for the separator, as in Hubble (which writes it to a discard).
        if self.opts.silent {
            return Ok(());
        }
        let text = hubble_escape(&text, self.opts.color);
        self.err_bytes += text.len();
        self.err.write_all(text.as_bytes())
    }

    /// A log line (a reader's warning) on stderr, where Hubble's logger
    /// writes it, in order with the node statuses; `-s` does not silence it.
    pub fn log(&mut self, line: &str) -> io::Result<()> {
        self.err_bytes += line.len();
        self.err.write_all(line.as_bytes())
    }

    /// Bytes written to stderr so far.
    pub fn err_bytes(&self) -> usize {
        self.err_bytes
    }

    /// Whether this printer's first record went to stderr (a node status),
    /// for [`Printer::write_chunk`].
    pub fn err_first(&self) -> bool {
        self.err_first == Some(true)
    }

    /// Flushes; in table format this also aligns and writes the block of rows
    /// buffered so far. Call it at the end of the output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.err.flush()
    }

    /// Shows what is ready when the stream pauses: flushes, except the table
    /// rows held for alignment. Where a table's columns break must not
    /// depend on when the network paused (Hubble aligns the whole table at
    /// its end; webb only every [`TABLE_BLOCK_BYTES`]).
    pub fn flush_ready(&mut self) -> io::Result<()> {
        if let Sink::Plain(w) = &mut self.out {
            w.flush()?;
        }
        self.err.flush()
    }

    /// `text` in `color` when colours are on, as Hubble's colour library
    /// writes it (the code, the text, a reset).
    fn painted(&self, color: &str, text: &str) -> String {
        if self.opts.color {
            format!("{color}{text}{}", ansi::RESET)
        } else {
            text.to_owned()
        }
    }

    fn time(&self, t: Option<&Timestamp>) -> String {
        t.and_then(Timestamp::to_datetime)
            .filter(go_time_is_valid)
            .map(|t: DateTime<Utc>| self.opts.time_format.format(t))
            .unwrap_or_else(|| "N/A".to_owned())
    }

    /// The verdict column: Hubble's word, then under `--print-policy-names`
    /// the policies that decided a policy verdict, in the verdict's colour:
    /// for ALLOWED (forwarded, redirected) the allowing and for DENIED
    /// (dropped, error) the denying policies of the flow's direction, as
    /// Hubble names them (none when the direction is unknown).
    fn verdict(&self, f: &Flow) -> String {
        let mut v = verdict_text(f);
        if self.opts.policy_names
            && f.event_type
                .is_some_and(|t| t.r#type == names::EVENT_POLICY_VERDICT)
        {
            let ingress = f.traffic_direction == webb_proto::flow::TrafficDirection::Ingress as i32;
            let egress = f.traffic_direction == webb_proto::flow::TrafficDirection::Egress as i32;
            let list = match Verdict::try_from(f.verdict) {
                Ok(Verdict::Forwarded | Verdict::Redirected) if egress => {
                    Some(&f.egress_allowed_by)
                }
                Ok(Verdict::Forwarded | Verdict::Redirected) if ingress => {
                    Some(&f.ingress_allowed_by)
                }
                Ok(Verdict::Dropped | Verdict::Error) if egress => Some(&f.egress_denied_by),
                Ok(Verdict::Dropped | Verdict::Error) if ingress => Some(&f.ingress_denied_by),
                _ => None,
            };
            let named: Vec<String> = list
                .into_iter()
                .flatten()
                .filter(|p| !p.name.is_empty() && !p.kind.is_empty())
                .map(|p| format!("{} ({})", p.name, p.kind))
                .collect();
            if !named.is_empty() {
                v.push_str(" BY ");
                v.push_str(&named.join(", "));
            }
        }
        match verdict_color(f) {
            Some(c) => self.painted(c, &v),
            None => v,
        }
    }

    fn flow(&mut self, f: &Flow) {
        let (mut src, mut dst) = host_names_with(f, self.opts.ip_translation, self.opts.color);
        let ts = self.time(f.time.as_ref());
        let ty = flow_type(f);
        let verdict = self.verdict(f);
        let mut summary = String::new();
        if let Some(id) = f.ip_trace_id.as_ref().filter(|t| t.trace_id > 0) {
            summary.push_str(&format!("IP Trace ID: {}; ", id.trace_id));
        }
        // The flow's own summary, as Hubble prints it (empty when the server
        // sent none).
        #[allow(deprecated)] // Summary is deprecated in the API but is what Hubble prints.
        summary.push_str(&f.summary);
        // The policy's authentication, as Hubble appends it.
        if f.auth_type != 0 {
            let auth = webb_proto::flow::AuthType::try_from(f.auth_type)
                .map(|a| a.as_str_name().to_owned())
                .unwrap_or_else(|_| f.auth_type.to_string());
            let color = if f.auth_type == webb_proto::flow::AuthType::TestAlwaysFail as i32 {
                ansi::RED
            } else {
                ansi::GREEN
            };
            summary.push_str("; Auth: ");
            summary.push_str(&self.painted(color, &auth));
        }
        let extra = webb_extra(f);
        match self.opts.format {
            Format::Compact => {
                let (mut src_id, mut dst_id) = (
                    self.identity(f.source.as_ref().map_or(0, |e| e.identity)),
                    self.identity(f.destination.as_ref().map_or(0, |e| e.identity)),
                );
                let arrow = match f.is_reply {
                    None => "<>",
                    Some(r) if r.value => {
                        std::mem::swap(&mut src, &mut dst);
                        std::mem::swap(&mut src_id, &mut dst_id);
                        "<-"
                    }
                    Some(_) => "->",
                };
                let node = if self.opts.node_name {
                    format!(" [{}]", f.node_name)
                } else {
                    String::new()
                };
                self.line.push_str(&format!(
                    "{ts}{node}: {src} {src_id} {arrow} {dst} {dst_id} {ty} {verdict} ({summary})"
                ));
                for (k, v) in &extra {
                    self.line.push_str(&format!(" {k}={v}"));
                }
                self.line.push('\n');
            }
            Format::Dict => {
                if self.records > 0 {
                    self.line.push_str(DICT_SEPARATOR);
                }
                let mut kv = |k: &str, v: &str| {
                    self.line.push_str(&format!("{k:>11}: {v}\n"));
                };
                kv("TIMESTAMP", &ts);
                if self.opts.node_name {
                    kv("NODE", &f.node_name);
                }
                kv("SOURCE", &src);
                kv("DESTINATION", &dst);
                kv("TYPE", &ty);
                kv("VERDICT", &verdict);
                kv("SUMMARY", &summary);
                for (k, v) in &extra {
                    let key = match *k {
                        "kernel-drop-reason" => "KERNEL DROP",
                        _ => "TRUNCATED",
                    };
                    kv(key, v);
                }
            }
            Format::Table => {
                if self.records == 0 {
                    self.table_header();
                }
                self.line.push_str(&ts);
                self.line.push('\t');
                if self.opts.node_name {
                    self.line.push_str(&f.node_name);
                    self.line.push('\t');
                }
                for col in [src.as_str(), dst.as_str(), ty.as_str(), verdict.as_str()] {
                    self.line.push_str(col);
                    self.line.push('\t');
                }
                self.line.push_str(&summary);
                self.line.push('\n');
            }
            Format::Json | Format::Jsonpb => unreachable!("handled in write"),
        }
    }

    fn table_header(&mut self) {
        self.line.push_str("TIMESTAMP\t");
        if self.opts.node_name {
            self.line.push_str("NODE\t");
        }
        self.line
            .push_str("SOURCE\tDESTINATION\tTYPE\tVERDICT\tSUMMARY\n");
    }

    /// `(ID:n)`, or a reserved identity's name (also under `--numeric`, as
    /// Hubble prints it), in magenta.
    fn identity(&self, id: u32) -> String {
        let text = match names::reserved_identity_name(id) {
            Some(name) => format!("({name})"),
            None => format!("(ID:{id})"),
        };
        self.painted(ansi::MAGENTA, &text)
    }

    fn lost(&mut self, l: &LostEvent, time: Option<&Timestamp>, node: &str) {
        let source = LostEventSource::try_from(l.source)
            .map_or_else(|_| l.source.to_string(), |s| s.as_str_name().to_owned());
        let cpu = l.cpu.map_or(0, |c| c.value);
        let n = l.num_events_lost;
        let ts = self.time(time);
        // When the server says which events the count covers.
        let span = if l.first.is_some() && l.last.is_some() {
            format!(
                " (first: {}, last: {})",
                self.time(l.first.as_ref()),
                self.time(l.last.as_ref())
            )
        } else {
            String::new()
        };
        let node = if node.is_empty() { "-" } else { node };
        match self.opts.format {
            Format::Compact => {
                self.line.push_str(&format!(
                    "{ts} EVENTS LOST: {source} CPU({cpu}) {n}{span}\n"
                ));
            }
            Format::Dict => {
                if self.records > 0 {
                    self.line.push_str(DICT_SEPARATOR);
                }
                self.line.push_str(&format!("  TIMESTAMP: {ts}\n"));
                if self.opts.node_name {
                    self.line.push_str(&format!("       NODE: {node}\n"));
                }
                self.line.push_str(&format!(
                    "     SOURCE: {source}\n       TYPE: EVENTS LOST\n    VERDICT: -\n    SUMMARY: CPU({cpu}) - {n}{span}\n"
                ));
            }
            Format::Table => {
                if self.records == 0 {
                    self.table_header();
                }
                let node = if self.opts.node_name {
                    format!("{node}\t")
                } else {
                    String::new()
                };
                self.line.push_str(&format!(
                    "{ts}\t{node}{source}\t-\tEVENTS LOST\t-\tCPU({cpu}) - {n}{span}\n"
                ));
            }
            Format::Json | Format::Jsonpb => unreachable!("handled in write"),
        }
    }
}

/// Names joined until about `target` characters, then how many were left
/// out: `a, b, c (and 4 more)`; at least one name is always shown.
fn join_with_cut_off(names: &[String], sep: &str, target: usize) -> String {
    let mut len = 0;
    let mut end = names.len();
    for (i, n) in names.iter().enumerate() {
        len += n.len() + sep.len();
        if len > target && i > 0 {
            end = i;
            break;
        }
    }
    let joined = names[..end].join(sep);
    match names.len() - end {
        0 => joined,
        more => format!("{joined} (and {more} more)"),
    }
}

/// A string quoted as Go's `%q` quotes it: `\"` and `\\`, the usual
/// letter escapes, `\xNN` for other control bytes, printable text as is.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if !go_is_print(c) && (c as u32) < 0x10000 => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if !go_is_print(c) => out.push_str(&format!("\\U{:08x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.IsPrint` for the runes Go's quoting escapes: controls,
/// format characters (bidi overrides, zero-width ones, BOM), separators
/// other than the ASCII space, and private use.
pub(crate) fn go_is_print(c: char) -> bool {
    let u = c as u32;
    !(c.is_control()
        || matches!(u,
            0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890 | 0x891 | 0x8e2 | 0x180e
            | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f
            | 0xfeff | 0xfff9..=0xfffb | 0x110bd | 0x110cd | 0x13430..=0x1343f
            | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a | 0xe0001 | 0xe0020..=0xe007f
            // Separators (the ASCII space is printable).
            | 0xa0 | 0x1680 | 0x2000..=0x200a | 0x2028 | 0x2029 | 0x202f | 0x205f | 0x3000
            // Private use and surrogates.
            | 0xe000..=0xf8ff | 0xf0000..=0xffffd | 0x100000..=0x10fffd))
}

/// The colour sequences Hubble's printer itself writes; with colours on,
/// these pass its terminal escaper as they are.
const HUBBLE_SEQUENCES: [&str; 7] = [
    "\x1b[31m", "\x1b[32m", "\x1b[34m", "\x1b[36m", "\x1b[35m", "\x1b[33m", "\x1b[0m",
];

/// Hubble's terminal escaper, applied to every line of text it prints: ESC
/// becomes `^[` and CR `\\r`, so a name, URL or DNS answer cannot move the
/// cursor, clear the screen or retitle the terminal. With colours on, the
/// colour codes the printer uses are let through, wherever they appear (as
/// in Hubble). Other characters (tab, newline, BEL) are left as they are,
/// exactly as `hubble observe` leaves them; `webb ui` escapes more.
pub fn hubble_escape(s: &str, color: bool) -> std::borrow::Cow<'_, str> {
    if !s.bytes().any(|b| b == 0x1b || b == b'\r') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    let mut rest = s;
    while let Some(i) = rest.find(['\x1b', '\r']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with('\r') {
            out.push_str("\\r");
            rest = &rest[1..];
        } else if let Some(seq) = HUBBLE_SEQUENCES
            .iter()
            .find(|q| color && rest.starts_with(**q))
        {
            out.push_str(seq);
            rest = &rest[seq.len()..];
        } else {
            out.push_str("^[");
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// A node status in the protobuf text form Hubble prints for a state it
/// has no sentence for.
fn node_status_text(n: &NodeStatusEvent) -> String {
    let mut parts = Vec::new();
    if n.state_change != 0 {
        parts.push(format!(
            "state_change:{}",
            NodeState::try_from(n.state_change).map_or_else(
                |_| n.state_change.to_string(),
                |s| s.as_str_name().to_owned()
            )
        ));
    }
    for name in &n.node_names {
        parts.push(format!("node_names:{}", go_quote(name)));
    }
    if !n.message.is_empty() {
        parts.push(format!("message:{}", go_quote(&n.message)));
    }
    parts.join(" ")
}

/// Go's `Timestamp.IsValid`: years 1 to 9999; other times print as `N/A`.
fn go_time_is_valid(t: &DateTime<Utc>) -> bool {
    use chrono::Datelike as _;
    (1..=9999).contains(&t.year())
}

/// Source and destination as Hubble names them: `ns/pod:port` when the
/// endpoint is a pod (and translation is on), else `ns/service`, else the DNS
/// names, else the IP; IPv6 addresses with a port are bracketed.
pub fn host_names(f: &Flow, translate: bool) -> (String, String) {
    host_names_with(f, translate, false)
}

/// [`host_names`], coloured as Hubble colours them when `color`: the whole
/// name in cyan with the port in yellow inside it.
fn host_names_with(f: &Flow, translate: bool, color: bool) -> (String, String) {
    let cyan = |h: String| {
        if color {
            format!("{}{h}{}", ansi::CYAN, ansi::RESET)
        } else {
            h
        }
    };
    let Some(ip) = f.ip.as_ref() else {
        return match &f.ethernet {
            Some(e) => (cyan(e.source.clone()), cyan(e.destination.clone())),
            None => (String::new(), String::new()),
        };
    };
    let (sp, dp) = ports(f);
    let src = host(
        &ip.source,
        sp,
        translate,
        color,
        f.source
            .as_ref()
            .map(|e| (e.namespace.as_str(), e.pod_name.as_str())),
        f.source_service
            .as_ref()
            .map(|s| (s.namespace.as_str(), s.name.as_str())),
        &f.source_names,
    );
    let dst = host(
        &ip.destination,
        dp,
        translate,
        color,
        f.destination
            .as_ref()
            .map(|e| (e.namespace.as_str(), e.pod_name.as_str())),
        f.destination_service
            .as_ref()
            .map(|s| (s.namespace.as_str(), s.name.as_str())),
        &f.destination_names,
    );
    (cyan(src), cyan(dst))
}

/// Go's `path.Join(ns, name)`, which Hubble's printer uses: the non-empty
/// parts joined by `/` and cleaned (`a//b` is `a/b`, `a/./b` is `a/b`,
/// `a/x/../b` is `a/b`, no trailing `/`).
fn join_ns(ns: &str, name: &str) -> String {
    let joined = match (ns.is_empty(), name.is_empty()) {
        (true, true) => return String::new(),
        (true, false) => name.to_owned(),
        (false, true) => ns.to_owned(),
        (false, false) => format!("{ns}/{name}"),
    };
    go_clean_path(&joined)
}

/// Go's `path.Clean`.
fn go_clean_path(p: &str) -> String {
    if !p.contains("//") && !p.ends_with('/') && !p.split('/').any(|e| e == "." || e == "..") {
        return p.to_owned();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for e in p.split('/') {
        match e {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            e => out.push(e),
        }
    }
    let body = out.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_owned(),
        (false, false) => body,
    }
}

fn host(
    ip: &str,
    port: u32,
    translate: bool,
    color: bool,
    pod: Option<(&str, &str)>,
    service: Option<(&str, &str)>,
    names: &[String],
) -> String {
    let mut h = ip.to_owned();
    if translate {
        if let Some((ns, p)) = pod.filter(|(_, p)| !p.is_empty()) {
            h = join_ns(ns, p);
        } else if let Some((ns, s)) = service.filter(|(_, s)| !s.is_empty()) {
            h = join_ns(ns, s);
        } else if !names.is_empty() {
            h = names.join(",");
        }
    }
    if port == 0 {
        return h;
    }
    let port = if color {
        format!("{}{port}{}", ansi::YELLOW, ansi::RESET)
    } else {
        port.to_string()
    };
    if h.contains(':') {
        format!("[{h}]:{port}")
    } else {
        format!("{h}:{port}")
    }
}

fn ports(f: &Flow) -> (u32, u32) {
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(layer4::Protocol::Tcp(t)) => (t.source_port, t.destination_port),
        Some(layer4::Protocol::Udp(u)) => (u.source_port, u.destination_port),
        Some(layer4::Protocol::Sctp(s)) => (s.source_port, s.destination_port),
        _ => (0, 0),
    }
}

/// Hubble's TYPE column: `to-endpoint`, `Policy denied`, `http-request`,
/// `policy-verdict:L3-L4 INGRESS`, ...
pub fn flow_type(f: &Flow) -> String {
    flow_type_with(f, true)
}

/// The type without a DNS record's observer (`dns-request`), for the
/// dashboard's narrow column.
pub fn flow_type_short(f: &Flow) -> String {
    flow_type_with(f, false)
}

#[allow(deprecated)] // Kafka records are deprecated but still named.
fn flow_type_with(f: &Flow, observer: bool) -> String {
    if let Some(l7) = &f.l7 {
        let proto = match &l7.record {
            Some(layer7::Record::Http(_)) => "http",
            Some(layer7::Record::Dns(_)) => "dns",
            Some(layer7::Record::Kafka(_)) => "kafka",
            // webb's TLS ClientHello (no Hubble record type exists for it).
            None if l7.webb_tls.is_some() => "tls",
            None => "l7",
        };
        let ty = webb_proto::flow::L7FlowType::try_from(l7.r#type)
            .map(|t| t.as_str_name().to_ascii_lowercase())
            .unwrap_or_else(|_| l7.r#type.to_string());
        // Hubble names a DNS record's observer after its type, space
        // separated, even when it is empty: `dns-request proxy`.
        if let Some(layer7::Record::Dns(d)) = &l7.record
            && observer
        {
            return format!("{proto}-{ty} {}", d.observation_source);
        }
        return format!("{proto}-{ty}");
    }
    let et = f.event_type.unwrap_or_default();
    match et.r#type {
        // Hubble reads the sub type as a byte; one it has no name for
        // prints as its number (a drop's with its extended error, 0).
        names::EVENT_TRACE => names::trace_point_name(et.sub_type & 0xff)
            .map_or_else(|| (et.sub_type & 0xff).to_string(), str::to_owned),
        names::EVENT_DROP => names::drop_reason_text((et.sub_type & 0xff) as u32)
            .map_or_else(|| format!("{}, 0", et.sub_type & 0xff), str::to_owned),
        names::EVENT_POLICY_VERDICT => {
            let m = match f.policy_match_type {
                0 => "none",
                1 => "L3-Only",
                2 => "L3-L4",
                3 => "L4-Only",
                4 => "all",
                5 => "L3-Proto",
                6 => "Proto-Only",
                _ => "unknown",
            };
            let dir = webb_proto::flow::TrafficDirection::try_from(f.traffic_direction)
                .map_or_else(
                    |_| f.traffic_direction.to_string(),
                    |d| d.as_str_name().to_owned(),
                );
            format!("policy-verdict:{m} {dir}")
        }
        names::EVENT_CAPTURE => DebugCapturePoint::try_from(f.debug_capture_point)
            .map(|p| p.as_str_name().to_owned())
            .unwrap_or_else(|_| f.debug_capture_point.to_string()),
        // A socket translation is named by its point, as Hubble names it;
        // a point it has no short name for prints as the enum value.
        names::EVENT_TRACE_SOCK => match f.sock_xlate_point {
            1 => "pre-xlate-fwd".to_owned(),
            2 => "post-xlate-fwd".to_owned(),
            3 => "pre-xlate-rev".to_owned(),
            4 => "post-xlate-rev".to_owned(),
            p => webb_proto::flow::SocketTranslationPoint::try_from(p)
                .map(|p| p.as_str_name().to_owned())
                .unwrap_or_else(|_| p.to_string()),
        },
        _ => "UNKNOWN".to_owned(),
    }
}

/// The verdict as Hubble prints it; policy verdict events say ALLOWED /
/// DENIED / AUDITED; a value from a newer Hubble prints as its number.
pub fn verdict_text(f: &Flow) -> String {
    let Ok(v) = Verdict::try_from(f.verdict) else {
        return f.verdict.to_string();
    };
    if f.event_type
        .is_some_and(|t| t.r#type == names::EVENT_POLICY_VERDICT)
    {
        match v {
            Verdict::Forwarded | Verdict::Redirected => return "ALLOWED".into(),
            Verdict::Dropped | Verdict::Error => return "DENIED".into(),
            Verdict::Audit => return "AUDITED".into(),
            _ => {}
        }
    }
    v.as_str_name().into()
}

/// The verdict's colour in Hubble's printer; an unknown verdict has none.
fn verdict_color(f: &Flow) -> Option<&'static str> {
    match Verdict::try_from(f.verdict).ok()? {
        Verdict::Forwarded | Verdict::Redirected => Some(ansi::GREEN),
        Verdict::Dropped | Verdict::Error => Some(ansi::RED),
        Verdict::Audit | Verdict::Traced | Verdict::Translated => Some(ansi::YELLOW),
        Verdict::Unknown => None,
    }
}

/// The flow's Summary, or one built from its layers when the server sent
/// none (a field-masked or hand-written flow), for the dashboard; `observe`
/// prints the field as it is, as Hubble does.
#[allow(deprecated)] // Summary is deprecated in the API but is what Hubble prints.
pub fn summary(f: &Flow) -> String {
    if !f.summary.is_empty() {
        return f.summary.clone();
    }
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(layer4::Protocol::Tcp(t)) => {
            let flags = t.flags.unwrap_or_default();
            let names: Vec<&str> = [
                (flags.syn, "SYN"),
                (flags.ack, "ACK"),
                (flags.psh, "PSH"),
                (flags.fin, "FIN"),
                (flags.rst, "RST"),
                (flags.urg, "URG"),
                (flags.ece, "ECE"),
                (flags.cwr, "CWR"),
                (flags.ns, "NS"),
            ]
            .into_iter()
            .filter_map(|(set, n)| set.then_some(n))
            .collect();
            format!("TCP Flags: {}", names.join(", "))
        }
        Some(layer4::Protocol::Udp(_)) => "UDP".to_owned(),
        Some(layer4::Protocol::Sctp(_)) => "SCTP".to_owned(),
        Some(layer4::Protocol::IcmPv4(i)) => format!("ICMPv4 type {} code {}", i.r#type, i.code),
        Some(layer4::Protocol::IcmPv6(i)) => format!("ICMPv6 type {} code {}", i.r#type, i.code),
        _ => String::new(),
    }
}

/// What webb knows beyond Hubble's text, as `key=value` pairs, only from
/// webb's extension fields (so Hubble's own data prints as Hubble prints
/// it; an HTTP response's latency is already in its summary): the kernel's
/// drop reason, and whether the L7 record was cut short.
fn webb_extra(f: &Flow) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if !f.webb_kernel_drop_reason.is_empty() {
        out.push(("kernel-drop-reason", f.webb_kernel_drop_reason.clone()));
    }
    if f.l7.as_ref().is_some_and(|l| l.webb_truncated) {
        out.push(("truncated", "true".to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, rc::Rc};

    use webb_proto::flow::{Flow, Ip};

    use super::*;

    /// A writer whose bytes the test can read while the printer holds it.
    #[derive(Clone, Default)]
    struct Shared(Rc<RefCell<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn policy_names_are_the_deciding_direction_s_as_hubble_names_them() {
        use webb_proto::flow::{CiliumEventType, Policy, TrafficDirection};
        let policy = |name: &str| Policy {
            name: name.into(),
            kind: "CiliumNetworkPolicy".into(),
            ..Default::default()
        };
        let verdict = |verdict: Verdict, direction: TrafficDirection| {
            let f = Flow {
                verdict: verdict as i32,
                traffic_direction: direction as i32,
                event_type: Some(CiliumEventType {
                    r#type: names::EVENT_POLICY_VERDICT,
                    sub_type: 0,
                }),
                ingress_allowed_by: vec![policy("in-allow")],
                egress_allowed_by: vec![policy("out-allow")],
                ingress_denied_by: vec![policy("in-deny")],
                egress_denied_by: vec![policy("out-deny")],
                ..Default::default()
            };
            let p = Printer::new(
                Options {
                    policy_names: true,
                    ..Options::default()
                },
                io::sink(),
                io::sink(),
            );
            p.verdict(&f)
        };
        use TrafficDirection::{Egress, Ingress, Unknown};
        assert_eq!(
            verdict(Verdict::Forwarded, Ingress),
            "ALLOWED BY in-allow (CiliumNetworkPolicy)"
        );
        assert_eq!(
            verdict(Verdict::Redirected, Egress),
            "ALLOWED BY out-allow (CiliumNetworkPolicy)"
        );
        assert_eq!(
            verdict(Verdict::Error, Egress),
            "DENIED BY out-deny (CiliumNetworkPolicy)"
        );
        assert_eq!(verdict(Verdict::Dropped, Unknown), "DENIED");
        assert_eq!(verdict(Verdict::Audit, Ingress), "AUDITED");
    }

    #[test]
    fn names_join_as_go_path_join() {
        assert_eq!(join_ns("shop", "cart-1"), "shop/cart-1");
        assert_eq!(join_ns("", "cart-1"), "cart-1");
        assert_eq!(join_ns("shop", ""), "shop");
        assert_eq!(join_ns("http://a", "b"), "http:/a/b");
        assert_eq!(join_ns("a/./x/..", "b/"), "a/b");
        assert_eq!(join_ns("..", "b"), "../b");
        assert_eq!(join_ns("/", "b"), "/b");
        assert_eq!(join_ns("x", ".."), ".");
    }

    #[test]
    fn a_tls_client_hello_is_a_tls_request() {
        let f = Flow {
            l7: Some(Box::new(webb_proto::flow::Layer7 {
                r#type: webb_proto::flow::L7FlowType::Request as i32,
                webb_tls: Some(webb_proto::flow::WebbTlsClientHello {
                    server_name: "shop.example".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(flow_type(&f), "tls-request");
    }

    #[test]
    fn terminal_escapes_are_neutralised_as_hubble_does() {
        // ESC and CR are written out; a pod cannot clear the screen or
        // retitle the terminal.
        assert_eq!(
            hubble_escape("evil\x1b[2J\rx\x1b]0;t\x07", false),
            "evil^[[2J\\rx^[]0;t\x07"
        );
        // With colours on, only the printer's own colour codes pass.
        assert_eq!(
            hubble_escape("\x1b[31mred\x1b[0m\x1b[2J", true),
            "\x1b[31mred\x1b[0m^[[2J"
        );
        assert_eq!(hubble_escape("\x1b[31m", false), "^[[31m");
        assert!(matches!(
            hubble_escape("plain", true),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn node_status_is_hubbles_on_stderr_and_shares_the_dict_separator() {
        let status = |state: NodeState, names: &[&str], msg: &str| GetFlowsResponse {
            node_name: "relay".into(),
            response_types: Some(ResponseTypes::NodeStatus(NodeStatusEvent {
                state_change: state as i32,
                node_names: names.iter().map(|n| (*n).to_owned()).collect(),
                message: msg.into(),
            })),
            ..Default::default()
        };
        let flow = GetFlowsResponse {
            response_types: Some(ResponseTypes::Flow(Box::default())),
            ..Default::default()
        };
        let run = |format: Format, items: &[GetFlowsResponse]| {
            let (out, err) = (Shared::default(), Shared::default());
            let mut p = Printer::new(
                Options {
                    format,
                    ..Options::default()
                },
                out.clone(),
                err.clone(),
            );
            for i in items {
                p.write(i).unwrap();
            }
            p.flush().unwrap();
            let text = |s: Shared| String::from_utf8(s.0.borrow().clone()).unwrap();
            (text(out), text(err))
        };
        let many: Vec<String> = (0..20).map(|i| format!("node-{i:02}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let (_, err) = run(
            Format::Compact,
            &[
                status(NodeState::NodeConnected, &["a"], ""),
                status(NodeState::NodeUnavailable, &many, ""),
                status(NodeState::NodeError, &["b"], "refused \"x\"\u{1b}"),
                status(NodeState::NodeGone, &["c"], ""),
            ],
        );
        assert_eq!(
            err,
            "N/A [relay]: 20 nodes are unavailable: node-00, node-01, node-02, node-03, node-04 (and 15 more)\n\
             N/A [relay]: Error \"refused \\\"x\\\"\\x1b\" on 1 nodes: b\n"
        );
        // Dict: the first record of either stream has no separator, and a
        // node status before the first flow gives that flow one.
        let (out, err) = run(
            Format::Dict,
            &[status(NodeState::NodeUnavailable, &["a"], ""), flow.clone()],
        );
        assert!(
            err.starts_with("  TIMESTAMP: N/A\n      STATE: NODE_UNAVAILABLE\n"),
            "{err}"
        );
        assert!(err.ends_with("    MESSAGE: N/A\n"), "{err}");
        assert!(out.starts_with(DICT_SEPARATOR), "{out}");
        // JSON: the response, on stderr only.
        let (out, err) = run(
            Format::Json,
            &[status(NodeState::NodeUnavailable, &["a"], "")],
        );
        assert!(out.is_empty());
        assert!(
            err.starts_with("{\"node_status\":{\"state_change\":\"NODE_UNAVAILABLE\""),
            "{err}"
        );
    }

    #[test]
    fn a_pause_in_the_stream_does_not_break_a_table_s_columns() {
        let table = Options {
            format: Format::Table,
            ..Default::default()
        };
        let flow = |src: &str| GetFlowsResponse {
            response_types: Some(ResponseTypes::Flow(Box::new(Flow {
                ip: Some(Ip {
                    source: src.into(),
                    destination: "10.9.9.9".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }))),
            ..Default::default()
        };
        let print = |pause: bool| {
            let out = Shared::default();
            let mut p = Printer::new(table, out.clone(), io::sink());
            p.write(&flow("fe80::c8bf:a8ff:fe43:9fa2")).unwrap();
            if pause {
                p.flush_ready().unwrap();
                assert!(out.0.borrow().is_empty(), "rows are held until the end");
            }
            p.write(&flow("10.0.0.1")).unwrap();
            p.flush().unwrap();
            let bytes = out.0.borrow().clone();
            String::from_utf8(bytes).unwrap()
        };
        let whole = print(false);
        assert_eq!(print(true), whole);
        // And both rows are aligned together.
        let cols: Vec<_> = whole.lines().map(|l| l.find("10.9.9.9")).collect();
        assert_eq!(cols[1], cols[2], "{whole}");
    }

    #[test]
    fn a_long_table_is_aligned_in_blocks_so_memory_stays_bounded() {
        let table = Options {
            format: Format::Table,
            ..Default::default()
        };
        let out = Shared::default();
        let mut p = Printer::new(table, out.clone(), io::sink());
        let flow = |i: u32| GetFlowsResponse {
            response_types: Some(ResponseTypes::Flow(Box::new(Flow {
                ip: Some(Ip {
                    source: format!("10.0.{}.{}", i / 250, i % 250),
                    destination: "10.9.9.9".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }))),
            ..Default::default()
        };
        // Each row is some 60 bytes: 3 MiB / 100 is more than a block.
        let rows = 3 * TABLE_BLOCK_BYTES / 100;
        for i in 0..rows as u32 {
            p.write(&flow(i)).expect("write");
        }
        // More than a block went in and nothing flushed it: the first
        // block must already be out.
        let before_flush = out.0.borrow().len();
        assert!(before_flush > 0, "the whole table is still held in memory");
        p.flush().expect("flush");
        let text = String::from_utf8(out.0.borrow().clone()).expect("utf-8");
        assert_eq!(text.lines().count(), rows + 1, "every row and the header");
        // Rows of the first block line up under the header.
        let col = |l: &str| l.find("10.9.9.9").unwrap_or(usize::MAX);
        let header = text.lines().next().unwrap_or_default();
        let dest = header.find("DESTINATION").unwrap_or(usize::MAX);
        assert!(
            text.lines().skip(1).take(100).all(|l| col(l) == dest),
            "{text:.1000}"
        );
    }
}
