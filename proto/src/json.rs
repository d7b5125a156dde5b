//! Hubble's JSON form of the API: one `GetFlowsResponse` per line (NDJSON),
//! proto field names, enums as names, 64-bit integers as strings, RFC 3339 UTC
//! times. The serde impls come from pbjson (see build.rs); this module adds the
//! line framing and errors that name the line.

use std::io::{self, BufRead, Write};

use crate::observer::GetFlowsResponse;

pub(crate) mod open;
mod write;

#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("line {line}: not a Hubble GetFlowsResponse: {source}")]
    Parse {
        line: usize,
        /// The line as read.
        text: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("reading line {line}: {source}")]
    Io {
        line: usize,
        #[source]
        source: io::Error,
    },
}

/// Writes one response as a JSON line, exactly as `hubble observe -o json`
/// does: the oneof member (`flow`, `node_status` or `lost_events`) first, then
/// `node_name` and `time`, in the order Go's protojson writes them.
pub fn write_line<W: Write>(out: &mut W, response: &GetFlowsResponse) -> io::Result<()> {
    let mut line = Vec::with_capacity(1024);
    append_line(&mut line, response);
    line.push(b'\n');
    out.write_all(&line)
}

/// The JSON line of one response, without the newline.
pub fn to_line(response: &GetFlowsResponse) -> String {
    let mut line = Vec::with_capacity(1024);
    append_line(&mut line, response);
    // serde_json writes UTF-8 only.
    String::from_utf8(line).unwrap_or_default()
}

/// Appends the JSON line of one response, without the newline, to `buf`
/// (callers writing many lines reuse one buffer).
pub fn append_line(buf: &mut Vec<u8>, response: &GetFlowsResponse) {
    write::response(buf, response, None);
}

/// Writes lines as [`append_line`] does, remembering the JSON of the
/// endpoints it wrote lately: a stream's flows share their endpoints (see
/// [`crate::decoder`]), and each is then written once and copied after.
/// One per writing thread.
#[derive(Default)]
pub struct LineWriter {
    endpoints: write::Texts,
}

impl LineWriter {
    /// Appends the JSON line of one response, without the newline.
    pub fn append_line(&mut self, buf: &mut Vec<u8>, response: &GetFlowsResponse) {
        write::response(buf, response, Some(&mut self.endpoints));
    }
}

/// Serializes `v` into `buf` as Go's `encoding/json` writes it, which is
/// what `hubble observe -o json`/`jsonpb` print: serde_json's compact form,
/// plus Go's HTML-safe escapes (`<`, `>`, `&` as `\u003c`, `\u003e`,
/// `\u0026`) and the JavaScript line terminators U+2028 and U+2029 as
/// `\u2028`/`\u2029`. A script comparing webb's output with hubble's byte
/// for byte sees no difference.
pub fn to_go_writer<T: serde::Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) {
    let mut ser = serde_json::Serializer::with_formatter(&mut *buf, GoFormatter);
    // Generated types serialize into memory without failing (build.rs
    // makes an enum number without a name a number, not an error).
    let _ = v.serialize(&mut ser);
}

/// [`to_go_writer`] into a new string.
pub fn to_go_string<T: serde::Serialize + ?Sized>(v: &T) -> String {
    let mut buf = Vec::with_capacity(256);
    to_go_writer(&mut buf, v);
    // serde_json writes UTF-8 only.
    String::from_utf8(buf).unwrap_or_default()
}

/// serde_json's compact formatter with Go's extra string escapes (see
/// [`to_go_writer`]); serde_json already escapes `"`, `\` and C0 controls
/// as Go does (`\b \f \n \r \t` short, the rest `\u00xx`).
struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let esc: &[u8] = match c {
                '<' => b"\\u003c",
                '>' => b"\\u003e",
                '&' => b"\\u0026",
                '\u{2028}' => b"\\u2028",
                '\u{2029}' => b"\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(esc)?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Whether a string needs more than quotes in Go's JSON: a byte serde_json
/// escapes, one of Go's HTML-safe escapes, or the lead byte of U+2028/U+2029
/// (checked conservatively: any character starting 0xE2).
pub(crate) fn needs_escape(s: &str) -> bool {
    // No early exit: the fold compiles to a vector loop over short strings.
    s.bytes().fold(false, |esc, b| {
        esc | (b < 0x20)
            | (b == b'"')
            | (b == b'\\')
            | (b == b'<')
            | (b == b'>')
            | (b == b'&')
            | (b == 0xE2)
    })
}

/// Parses one JSON line written by `hubble observe -o json` (or by webb).
/// Unknown fields are ignored, enum values from a newer Hubble kept as
/// numbers (see [`open`]); both proto and lowerCamelCase names are read.
pub fn parse_line(line: &str) -> Result<GetFlowsResponse, serde_json::Error> {
    serde_json::from_str(line)
}

/// A line read as Hubble's reader reads it: the response, and what in it
/// this build did not know (the first unknown field or enum name; the field
/// was skipped, the enum left at zero), for a one-time warning.
#[derive(Debug)]
pub struct Parsed {
    pub response: GetFlowsResponse,
    pub unknown: Option<String>,
}

/// FlowFilters in JSON, one after another, read as Hubble reads
/// `--allowlist`/`--denylist` (protojson, strict): a field or enum name
/// this build does not know is an error, as in Hubble.
pub fn filters_strict(text: &str) -> Result<Vec<crate::flow::FlowFilter>, String> {
    let _ = open::take();
    let mut out = Vec::new();
    let mut stream =
        serde_json::Deserializer::from_str(text).into_iter::<crate::flow::FlowFilter>();
    for f in stream.by_ref() {
        let f = f.map_err(|e| e.to_string())?;
        if let Some(note) = open::take() {
            return Err(format!("proto: {}", note.describe(text)));
        }
        out.push(f);
    }
    Ok(out)
}

/// [`parse_line`], saying what it did not know.
pub fn parse_line_noting(line: &str) -> Result<Parsed, serde_json::Error> {
    let _ = open::take();
    let parsed = serde_json::from_str(line);
    let unknown = open::take().map(|n| n.describe(line));
    parsed.map(|response| Parsed { response, unknown })
}

/// [`read_lines`], saying what each line held that this build did not know.
pub fn read_lines_noting<R: BufRead>(reader: R) -> impl Iterator<Item = Result<Parsed, JsonError>> {
    reader.lines().enumerate().filter_map(|(i, line)| {
        let line_no = i + 1;
        match line {
            Err(source) => Some(Err(JsonError::Io {
                line: line_no,
                source,
            })),
            Ok(l) if l.trim().is_empty() => None,
            Ok(l) => Some(parse_line_noting(&l).map_err(|source| JsonError::Parse {
                line: line_no,
                text: l,
                source,
            })),
        }
    })
}

/// Reads NDJSON responses, skipping blank lines; each item says which line
/// failed so a bad capture can be fixed.
pub fn read_lines<R: BufRead>(
    reader: R,
) -> impl Iterator<Item = Result<GetFlowsResponse, JsonError>> {
    reader.lines().enumerate().filter_map(|(i, line)| {
        let line_no = i + 1;
        match line {
            Err(source) => Some(Err(JsonError::Io {
                line: line_no,
                source,
            })),
            Ok(l) if l.trim().is_empty() => None,
            Ok(l) => Some(parse_line(&l).map_err(|source| JsonError::Parse {
                line: line_no,
                text: l,
                source,
            })),
        }
    })
}
