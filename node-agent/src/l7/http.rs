//! HTTP/1.x request and response heads from packet payloads, parsed with
//! httparse, and the redaction of secrets in them.

use std::collections::HashSet;

use super::Error;

/// The value that replaces a redacted secret, as Hubble writes it.
pub const REDACTED: &str = "HUBBLE_REDACTED";

/// Headers parsed from one head at most; more is treated as truncation.
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    Request {
        method: String,
        /// The request target as sent (origin form `/path?q`, or absolute).
        target: String,
        protocol: &'static str,
        headers: Vec<(String, String)>,
    },
    Response {
        code: u16,
        protocol: &'static str,
        headers: Vec<(String, String)>,
    },
}

/// A parsed head, and whether the payload ended inside it (so later headers
/// may be missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub head: Head,
    pub truncated: bool,
}

fn protocol(version: Option<u8>) -> &'static str {
    match version {
        Some(0) => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

fn headers(hs: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    hs.iter()
        .filter(|h| !h.name.is_empty())
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).trim().to_owned(),
            )
        })
        .collect()
}

/// Parses the head a payload starts with. A head the payload does not hold
/// entirely (cut at the capture length, or continued in the next segment)
/// is parsed up to its last complete header line and marked truncated.
pub fn parse(payload: &[u8]) -> Result<Parsed, Error> {
    match parse_complete(payload)? {
        Some(head) => Ok(Parsed {
            head,
            truncated: false,
        }),
        None => {
            // End the head after its last complete line and parse again.
            let end = payload
                .windows(2)
                .rposition(|w| w == b"\r\n")
                .ok_or(Error::HttpShort)?;
            let mut closed = Vec::with_capacity(end + 4);
            closed.extend_from_slice(&payload[..end + 2]);
            closed.extend_from_slice(b"\r\n");
            match parse_complete(&closed)? {
                Some(head) => Ok(Parsed {
                    head,
                    truncated: true,
                }),
                None => Err(Error::HttpShort),
            }
        }
    }
}

/// `Ok(None)` when the payload ends before the head does.
fn parse_complete(buf: &[u8]) -> Result<Option<Head>, Error> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    if buf.starts_with(b"HTTP/") {
        let mut res = httparse::Response::new(&mut hs);
        return match res.parse(buf) {
            Ok(httparse::Status::Complete(_)) => Ok(Some(Head::Response {
                code: res.code.ok_or(Error::HttpBadHead)?,
                protocol: protocol(res.version),
                headers: headers(res.headers),
            })),
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => Ok(None),
            Err(_) => Err(Error::HttpBadHead),
        };
    }
    let mut req = httparse::Request::new(&mut hs);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => Ok(Some(Head::Request {
            method: req.method.ok_or(Error::HttpBadHead)?.to_owned(),
            target: req.path.ok_or(Error::HttpBadHead)?.to_owned(),
            protocol: protocol(req.version),
            headers: headers(req.headers),
        })),
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => Ok(None),
        Err(_) => Err(Error::HttpBadHead),
    }
}

/// What is hidden before a record leaves the agent.
#[derive(Debug, Clone)]
pub struct Redaction {
    /// Replace the values of URL query parameters.
    pub url_query: bool,
    /// Replace the password of `user:password@` in absolute URLs.
    pub userinfo: bool,
    /// Header names (lower case) whose values are replaced.
    pub headers_deny: HashSet<String>,
    /// When set, the values of every header not named here are replaced.
    pub headers_allow: Option<HashSet<String>>,
}

impl Default for Redaction {
    fn default() -> Self {
        Self {
            url_query: true,
            userinfo: true,
            headers_deny: DEFAULT_DENY.iter().map(|s| (*s).to_owned()).collect(),
            headers_allow: None,
        }
    }
}

/// Headers that carry credentials, redacted by default.
pub const DEFAULT_DENY: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

impl Redaction {
    pub fn headers(&self, headers: &mut [(String, String)]) {
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            let hide = match &self.headers_allow {
                Some(allow) => !allow.contains(&lower),
                None => false,
            } || self.headers_deny.contains(&lower);
            if hide {
                *value = REDACTED.to_owned();
            }
        }
    }

    /// Redacts a URL's query values and userinfo password.
    pub fn url(&self, url: &str) -> String {
        let mut out = url.to_owned();
        if self.userinfo {
            out = redact_userinfo(&out);
        }
        if self.url_query {
            out = redact_query(&out);
        }
        out
    }
}

fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let auth_start = scheme_end + 3;
    let auth_end = url[auth_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| auth_start + i);
    let authority = &url[auth_start..auth_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:{}{}",
        &url[..auth_start],
        &userinfo[..colon],
        REDACTED,
        &url[auth_start + at..]
    )
}

fn redact_query(url: &str) -> String {
    let Some(q) = url.find('?') else {
        return url.to_owned();
    };
    let (base, rest) = url.split_at(q + 1);
    let (query, fragment) = match rest.find('#') {
        Some(f) => rest.split_at(f),
        None => (rest, ""),
    };
    let mut out = String::with_capacity(url.len() + 16);
    out.push_str(base);
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, _)) => {
                out.push_str(k);
                out.push('=');
                out.push_str(REDACTED);
            }
            None => out.push_str(pair),
        }
    }
    out.push_str(fragment);
    out
}

/// The URL Hubble reports: absolute-form targets as they are, origin-form
/// ones prefixed with `http://` and the Host header (or the server address).
pub fn url(target: &str, headers: &[(String, String)], server: &str) -> String {
    if target.contains("://") {
        return target.to_owned();
    }
    let host = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map_or(server, |(_, v)| v.as_str());
    if target.starts_with('/') {
        format!("http://{host}{target}")
    } else {
        // `*` (OPTIONS) or the authority form of CONNECT.
        target.to_owned()
    }
}
