//! What `observe agent-events` and `observe debug-events` share: a stream of
//! events, each a time, a node and a few named fields, printed in Hubble's
//! four formats (compact, dict, table, JSON) with its terminal escaping.

use std::io::{self, Write};

use futures::{Stream, StreamExt as _};
use tonic::transport::Channel;
use webb_proto::observer::observer_client::ObserverClient;

use crate::{
    conn::{ConfigFile, Server, ServerArgs, Usage},
    observe::{OutputArgs, Selectors},
    printer::{Format, hubble_escape},
    time::TimeFormat,
};

/// The flags of `observe agent-events` and `observe debug-events`: Hubble
/// gives both the server, selector and formatting flags of `observe`.
#[derive(Debug, Clone, clap::Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub selectors: Selectors,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// One response of an event stream, as the printers see it.
pub trait Event {
    /// The table's columns after TIMESTAMP (and NODE).
    const TABLE_HEADER: &'static [&'static str];

    fn time(&self) -> Option<&webb_proto::wkt::Timestamp>;
    fn node_name(&self) -> &str;
    /// Whether the response holds an event; Hubble prints nothing for one
    /// that does not.
    fn present(&self) -> bool;
    /// The dict's lines after TIMESTAMP (and NODE), label and value, as
    /// sent (the printer escapes what it writes).
    fn fields(&self, tf: TimeFormat) -> Vec<(&'static str, String)>;
    /// The compact line after `TIME [NODE]: `.
    fn compact(fields: &[(&'static str, String)]) -> String;
    /// The table's cells after TIMESTAMP (and NODE).
    fn table_cells(fields: Vec<(&'static str, String)>) -> Vec<String>;
    /// The response in Hubble's JSON.
    fn json(&self) -> String;
}

/// Prints events in the chosen format; `table` aligns its columns when
/// flushed.
pub struct EventPrinter<W: Write> {
    format: Format,
    time_format: TimeFormat,
    node_name: bool,
    out: W,
    lines: u64,
    /// Table rows, aligned on flush.
    rows: Vec<Vec<String>>,
}

impl<W: Write> EventPrinter<W> {
    pub fn new(o: &OutputArgs, out: W) -> Self {
        Self {
            format: o.output,
            time_format: o.time_format,
            node_name: o.print_node_name,
            out,
            lines: 0,
            rows: Vec::new(),
        }
    }

    fn time(&self, t: Option<&webb_proto::wkt::Timestamp>) -> String {
        t.and_then(webb_proto::wkt::Timestamp::to_datetime)
            .map(|t| self.time_format.format(t))
            .unwrap_or_else(|| "N/A".to_owned())
    }

    pub fn write<E: Event>(&mut self, r: &E) -> io::Result<()> {
        if !r.present() {
            return Ok(());
        }
        if matches!(self.format, Format::Json | Format::Jsonpb) {
            // Go's JSON escapes control characters itself.
            writeln!(self.out, "{}", r.json())?;
            self.lines += 1;
            return Ok(());
        }
        let ts = self.time(r.time());
        // Hubble's terminal escaper on every text line, as on flows: a pod
        // cannot write escape sequences into the operator's terminal.
        let esc = |s: &str| hubble_escape(s, false).into_owned();
        let node = esc(r.node_name());
        let fields: Vec<_> = r
            .fields(self.time_format)
            .into_iter()
            .map(|(label, value)| (label, esc(&value)))
            .collect();
        match self.format {
            Format::Json | Format::Jsonpb => {} // written above
            Format::Compact => {
                let node = if self.node_name {
                    format!(" [{node}]")
                } else {
                    String::new()
                };
                writeln!(self.out, "{ts}{node}: {}", E::compact(&fields))?;
            }
            Format::Dict => {
                // Hubble's agent and debug event printers write the
                // separator without a newline (so the next record starts on
                // its line: `------------  TIMESTAMP: ...`); byte for byte.
                if self.lines != 0 {
                    self.out.write_all(b"------------")?;
                }
                writeln!(self.out, "  TIMESTAMP: {ts}")?;
                if self.node_name {
                    writeln!(self.out, "       NODE: {node}")?;
                }
                for (label, value) in &fields {
                    writeln!(self.out, "{label:>11}: {value}")?;
                }
            }
            Format::Table => {
                if self.rows.is_empty() {
                    let mut h = vec!["TIMESTAMP".to_owned()];
                    if self.node_name {
                        h.push("NODE".to_owned());
                    }
                    h.extend(E::TABLE_HEADER.iter().map(|c| (*c).to_owned()));
                    self.rows.push(h);
                }
                let mut row = vec![ts];
                if self.node_name {
                    row.push(node);
                }
                row.extend(E::table_cells(fields));
                self.rows.push(row);
            }
        }
        self.lines += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if self.format == Format::Table {
            self.write_table()?;
        }
        self.out.flush()
    }

    /// The rows through Go's tabwriter, as Hubble aligns them.
    fn write_table(&mut self) -> io::Result<()> {
        let mut t = crate::printer::tabwriter::TabWriter::new(&mut self.out, 2, 3);
        for r in std::mem::take(&mut self.rows) {
            t.write_all(r.join("\t").as_bytes())?;
            t.write_all(b"\n")?;
        }
        t.flush()
    }
}

/// Checks the flags, connects (through a port-forward with `-P`), makes
/// the call and prints its stream.
pub async fn run<E, F, Fut>(
    args: &EventsArgs,
    config: &ConfigFile,
    method: &str,
    call: F,
) -> anyhow::Result<()>
where
    E: Event,
    F: FnOnce(ObserverClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<tonic::Streaming<E>>, tonic::Status>>,
{
    args.output
        .check(args.selectors.follow)
        .map_err(|e| anyhow::anyhow!(Usage(e)))?;
    let (server, _forward) = Server::resolve_forwarded(&args.server, config).await?;
    let channel = server.connect().await?;
    let stream = call(ObserverClient::new(channel))
        .await
        .map_err(|s| server.call_error(method, &s))?
        .into_inner();
    let printer = EventPrinter::new(&args.output, io::BufWriter::new(io::stdout()));
    let stream_method = format!("{method} stream");
    print_stream(stream, printer, args.selectors.follow, |s| {
        server.call_error(&stream_method, s)
    })
    .await
}

/// Prints a server's event stream until it ends (or the reader of stdout
/// goes away), flushing after each event when following.
pub async fn print_stream<E, W>(
    mut stream: impl Stream<Item = Result<E, tonic::Status>> + Unpin,
    mut printer: EventPrinter<W>,
    follow: bool,
    call_error: impl Fn(&tonic::Status) -> anyhow::Error,
) -> anyhow::Result<()>
where
    E: Event,
    W: Write,
{
    let broken = |e: &io::Error| e.kind() == io::ErrorKind::BrokenPipe;
    while let Some(item) = stream.next().await {
        let r = item.map_err(|s| call_error(&s))?;
        match printer.write(&r) {
            Err(e) if broken(&e) => return Ok(()),
            other => other?,
        }
        if follow {
            match printer.flush() {
                Err(e) if broken(&e) => return Ok(()),
                other => other?,
            }
        }
    }
    match printer.flush() {
        Err(e) if broken(&e) => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What the printer writes for these events, with colours off and
    /// StampMilli times.
    pub(crate) fn printed<E: Event>(format: Format, node: bool, events: &[E]) -> String {
        let o = OutputArgs {
            output_arg: format.name().to_owned(),
            output: format,
            time_format: TimeFormat::StampMilli,
            color: crate::observe::ColorWhen::Never,
            print_node_name: node,
            numeric: false,
            ip_translation: true,
            field_mask: Vec::new(),
            use_default_field_masks: true,
            print_policy_names: false,
            silent: false,
            debug: false,
        };
        let mut p = EventPrinter::new(&o, Vec::new());
        for e in events {
            p.write(e).unwrap();
        }
        p.flush().unwrap();
        String::from_utf8(p.out).unwrap()
    }
}
