//! Hubble's output formats: compact (one line per flow), dict (`KEY: value`
//! blocks), table (tab-aligned columns), json/jsonpb (one `GetFlowsResponse`
//! per line). Line for line what `hubble observe` prints, so eyes and scripts
//! carry over; where webb knows more (the kernel's own drop reason, an L7
//! latency) it is added after Hubble's text.

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use tabwriter::TabWriter;
use webb_proto::{
    flow::{DebugCapturePoint, Flow, LostEvent, LostEventSource, Verdict, layer4, layer7},
    names,
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
    relay::{NodeState, NodeStatusEvent},
    wkt::Timestamp,
};

use crate::time::TimeFormat;

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
    /// Identities as numbers, even reserved ones.
    pub numeric: bool,
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
    /// The tabwriter and the bytes written to it since it last flushed.
    Table(TabWriter<W>, usize),
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Table(w, pending) => {
                let n = w.write(buf)?;
                *pending += n;
                Ok(n)
            }
        }
    }
    /// Callers write whole lines, so a block ends at a line's end.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.write_all(buf),
            Self::Table(w, pending) => {
                w.write_all(buf)?;
                *pending += buf.len();
                if *pending >= TABLE_BLOCK_BYTES {
                    *pending = 0;
                    w.flush()?;
                }
                Ok(())
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Table(w, pending) => {
                *pending = 0;
                w.flush()
            }
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
            Sink::Table(t, _) => t.into_inner().map(Into::into).unwrap_or_default(),
        };
        (out, self.err.into())
    }

    pub fn new(opts: Options, out: W, err: E) -> Self {
        let out = match opts.format {
            // Hubble's tabwriter: min width 2, padding 3, spaces.
            Format::Table => Sink::Table(TabWriter::new(out).minwidth(2).padding(3), 0),
            _ => Sink::Plain(out),
        };
        Self {
            opts,
            out,
            err,
            records: 0,
            err_first: None,
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
        if self.records == 0 && self.opts.format == Format::Dict && err_first && !err.is_empty() {
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
        if let Some(ResponseTypes::NodeStatus(n)) = &resp.response_types {
            return self.node_status(n, resp);
        }
        if self.err_first.is_none() && resp.response_types.is_some() {
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
        self.out.write_all(self.line.as_bytes())
    }

    /// A relay's node status, as Hubble writes it: only a node becoming
    /// unavailable or failing (connections and departures are not news),
    /// always on stderr: JSON as the response, a dict block (its separator
    /// counted with the flows'), or one line.
    fn node_status(&mut self, n: &NodeStatusEvent, resp: &GetFlowsResponse) -> io::Result<()> {
        let state = NodeState::try_from(n.state_change).unwrap_or(NodeState::UnknownNodeState);
        if !matches!(state, NodeState::NodeUnavailable | NodeState::NodeError) {
            return Ok(());
        }
        if self.err_first.is_none() {
            self.err_first = Some(true);
        }
        let ts = self.time(resp.time.as_ref());
        let nodes = join_with_cut_off(&n.node_names, ", ", 50);
        let text = match self.opts.format {
            Format::Json | Format::Jsonpb => {
                self.json.clear();
                self.json_writer.append_line(&mut self.json, resp);
                self.json.push(b'\n');
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
                    "{sep}  TIMESTAMP: {ts}\n      STATE: {}\n      NODES: {nodes}\n    MESSAGE: {message}\n",
                    state.as_str_name()
                )
            }
            Format::Compact | Format::Table => {
                let prefix = format!("{ts} [{}]", resp.node_name);
                let count = n.node_names.len();
                match state {
                    NodeState::NodeError => format!(
                        "{prefix}: Error {} on {count} nodes: {nodes}\n",
                        go_quote(&n.message)
                    ),
                    _ => format!("{prefix}: {count} nodes are unavailable: {nodes}\n"),
                }
            }
        };
        self.err.write_all(escape_controls(&text).as_bytes())
    }

    /// Whether this printer's first record went to stderr (a node status),
    /// for [`Printer::write_chunk`].
    pub fn err_first(&self) -> bool {
        self.err_first == Some(true)
    }

    /// Flushes; in table format this also aligns and writes the block of rows
    /// buffered so far (in `--follow` mode the caller calls it when idle).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.err.flush()
    }

    fn paint(&mut self, color: &str, text: &str) {
        if self.opts.color {
            self.line.push_str(color);
            self.line.push_str(text);
            self.line.push_str(ansi::RESET);
        } else {
            self.line.push_str(text);
        }
    }

    fn time(&self, t: Option<&Timestamp>) -> String {
        t.and_then(Timestamp::to_datetime)
            .map(|t: DateTime<Utc>| self.opts.time_format.format(t))
            .unwrap_or_else(|| "N/A".to_owned())
    }

    fn flow(&mut self, f: &Flow) {
        let (mut src, mut dst) = host_names(f, self.opts.ip_translation);
        let ts = self.time(f.time.as_ref());
        let ty = flow_type(f);
        let verdict = verdict_text(f);
        let verdict_color = verdict_color(f.verdict);
        let mut summary = summary(f);
        // The policy's authentication, as Hubble appends it.
        if f.auth_type != 0 {
            let auth = webb_proto::flow::AuthType::try_from(f.auth_type)
                .map(|a| a.as_str_name().to_owned())
                .unwrap_or_else(|_| f.auth_type.to_string());
            summary.push_str("; Auth: ");
            summary.push_str(&auth);
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
                self.line.push_str(&ts);
                if self.opts.node_name {
                    self.line.push_str(" [");
                    self.line.push_str(&f.node_name);
                    self.line.push(']');
                }
                self.line.push_str(": ");
                self.paint(ansi::CYAN, &src);
                self.line.push(' ');
                self.paint(ansi::MAGENTA, &src_id);
                self.line.push(' ');
                self.line.push_str(arrow);
                self.line.push(' ');
                self.paint(ansi::CYAN, &dst);
                self.line.push(' ');
                self.paint(ansi::MAGENTA, &dst_id);
                self.line.push(' ');
                self.line.push_str(&ty);
                self.line.push(' ');
                self.paint(verdict_color, verdict);
                self.line.push_str(" (");
                self.line.push_str(&summary);
                self.line.push(')');
                for (k, v) in &extra {
                    self.line.push(' ');
                    self.line.push_str(k);
                    self.line.push('=');
                    self.line.push_str(v);
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
                kv("VERDICT", verdict);
                kv("SUMMARY", &summary);
                for (k, v) in &extra {
                    let key = match *k {
                        "kernel-drop-reason" => "KERNEL DROP",
                        _ => "LATENCY",
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
                for col in [src.as_str(), dst.as_str(), ty.as_str(), verdict] {
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

    fn identity(&self, id: u32) -> String {
        match names::reserved_identity_name(id) {
            Some(name) if !self.opts.numeric => format!("({name})"),
            _ => format!("(ID:{id})"),
        }
    }

    fn lost(&mut self, l: &LostEvent, time: Option<&Timestamp>, node: &str) {
        let source = LostEventSource::try_from(l.source)
            .map(|s| s.as_str_name())
            .unwrap_or("UNKNOWN_LOST_EVENT_SOURCE");
        let cpu = l.cpu.map_or(0, |c| c.value);
        let n = l.num_events_lost;
        let ts = self.time(time);
        // When the server says which events the count covers.
        let span = if l.first.is_some() || l.last.is_some() {
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
fn go_quote(s: &str) -> String {
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
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Terminal control characters left in text bound for a terminal, written
/// as escapes.
fn escape_controls(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                format!("\\u{{{:x}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Source and destination as Hubble names them: `ns/pod:port` when the
/// endpoint is a pod (and translation is on), else `ns/service`, else the DNS
/// names, else the IP; IPv6 addresses with a port are bracketed.
pub fn host_names(f: &Flow, translate: bool) -> (String, String) {
    let Some(ip) = f.ip.as_ref() else {
        return match &f.ethernet {
            Some(e) => (e.source.clone(), e.destination.clone()),
            None => (String::new(), String::new()),
        };
    };
    let (sp, dp) = ports(f);
    let src = host(
        &ip.source,
        sp,
        translate,
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
        f.destination
            .as_ref()
            .map(|e| (e.namespace.as_str(), e.pod_name.as_str())),
        f.destination_service
            .as_ref()
            .map(|s| (s.namespace.as_str(), s.name.as_str())),
        &f.destination_names,
    );
    (src, dst)
}

fn join_ns(ns: &str, name: &str) -> String {
    if ns.is_empty() {
        name.to_owned()
    } else {
        format!("{ns}/{name}")
    }
}

fn host(
    ip: &str,
    port: u32,
    translate: bool,
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
        h
    } else if h.contains(':') {
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
            None => "l7",
        };
        let ty = webb_proto::flow::L7FlowType::try_from(l7.r#type)
            .map(|t| t.as_str_name().to_ascii_lowercase())
            .unwrap_or_else(|_| "unknown_l7_type".to_owned());
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
        names::EVENT_TRACE => names::trace_point_name(et.sub_type)
            .unwrap_or("unknown")
            .to_owned(),
        names::EVENT_DROP => names::drop_reason_text(et.sub_type as u32)
            .map(str::to_owned)
            .unwrap_or_else(|| et.sub_type.to_string()),
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
                .map(|d| d.as_str_name())
                .unwrap_or("TRAFFIC_DIRECTION_UNKNOWN");
            format!("policy-verdict:{m} {dir}")
        }
        names::EVENT_CAPTURE => DebugCapturePoint::try_from(f.debug_capture_point)
            .map(|p| p.as_str_name().to_owned())
            .unwrap_or_else(|_| "UNKNOWN".to_owned()),
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
/// DENIED / AUDITED.
pub fn verdict_text(f: &Flow) -> &'static str {
    let v = Verdict::try_from(f.verdict).unwrap_or(Verdict::Unknown);
    if f.event_type
        .is_some_and(|t| t.r#type == names::EVENT_POLICY_VERDICT)
    {
        match v {
            Verdict::Forwarded | Verdict::Redirected => return "ALLOWED",
            Verdict::Dropped => return "DENIED",
            Verdict::Audit => return "AUDITED",
            _ => {}
        }
    }
    v.as_str_name()
}

fn verdict_color(v: i32) -> &'static str {
    match Verdict::try_from(v).unwrap_or(Verdict::Unknown) {
        Verdict::Forwarded | Verdict::Redirected => ansi::GREEN,
        Verdict::Dropped | Verdict::Error => ansi::RED,
        _ => ansi::YELLOW,
    }
}

/// The flow's Summary, or one built from its layers when the server sent
/// none (a field-masked or hand-written flow).
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
