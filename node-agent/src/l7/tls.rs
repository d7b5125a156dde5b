//! TLS ClientHellos: the server name (SNI), the ALPN protocols and the
//! highest version a client offers, read from the first bytes of a TLS
//! connection without decrypting anything (there is nothing to decrypt:
//! the ClientHello is sent in the clear).
//!
//! The record and handshake frames are walked here so that a hello cut
//! short by the capture length or split across TCP segments still yields
//! what its first bytes hold; the extensions are parsed by `tls-parser`.

use tls_parser::{TlsExtension, TlsVersion, parse_tls_extensions};

use super::Error;

/// What a ClientHello offered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    pub server_name: String,
    pub alpn: Vec<String>,
    /// The highest version offered, as "TLS 1.3".
    pub version: String,
    /// The hello continued past the bytes seen (cut by the capture length,
    /// or split across segments): what is missing may include the SNI.
    pub truncated: bool,
}

/// A TLS record header, then a handshake header: 5 + 4 bytes.
const HEADERS: usize = 9;
/// The ClientHello's fixed part: version and random.
const FIXED: usize = 2 + 32;

/// Parses the start of a TCP stream that the datapath saw begin with a TLS
/// handshake record.
pub fn parse(payload: &[u8]) -> Result<ClientHello, Error> {
    if payload.len() < HEADERS + FIXED {
        return Err(Error::TlsShort);
    }
    // Record: content type 22 (handshake), version 3.x, length.
    if payload[0] != 22 || payload[1] != 3 {
        return Err(Error::TlsBadHello);
    }
    let record_len = usize::from(u16::from_be_bytes([payload[3], payload[4]]));
    // Handshake: type 1 (ClientHello), 24-bit length.
    if payload[5] != 1 {
        return Err(Error::TlsBadHello);
    }
    let hello_len =
        usize::from(payload[6]) << 16 | usize::from(payload[7]) << 8 | usize::from(payload[8]);
    if record_len < 4 || hello_len > (1 << 16) + 4096 {
        return Err(Error::TlsBadHello);
    }
    let end = (HEADERS + hello_len).min(5 + record_len).min(payload.len());
    let truncated = payload.len() < HEADERS + hello_len || record_len < 4 + hello_len;
    let body = payload.get(HEADERS..end).unwrap_or_default();
    if body.len() < FIXED {
        // The record or the hello says it is shorter than a hello can be.
        return Err(Error::TlsBadHello);
    }
    let legacy = u16::from_be_bytes([body[0], body[1]]);
    let mut at = FIXED;
    // session id, cipher suites, compression methods: length-prefixed.
    for width in [1usize, 2, 1] {
        let Some(len) = read_len(body, at, width) else {
            return partial(legacy, truncated);
        };
        at += width + len;
    }
    let Some(ext_len) = read_len(body, at, 2) else {
        return partial(legacy, truncated);
    };
    let ext_start = at + 2;
    if ext_start > body.len() {
        return partial(legacy, truncated);
    }
    let ext_end = (ext_start + ext_len).min(body.len());
    let truncated = truncated || ext_start + ext_len > body.len();
    let (_, extensions) =
        parse_tls_extensions(&body[ext_start..ext_end]).map_err(|_| Error::TlsBadHello)?;
    let mut hello = ClientHello {
        version: version_name(legacy),
        truncated,
        ..Default::default()
    };
    let mut highest = None;
    for e in extensions {
        match e {
            TlsExtension::SNI(names) => {
                if let Some((_, name)) = names.first() {
                    hello.server_name = String::from_utf8_lossy(name).into_owned();
                }
            }
            TlsExtension::ALPN(protocols) => {
                hello.alpn = protocols
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
            }
            TlsExtension::SupportedVersions(versions) => {
                highest = versions
                    .iter()
                    .map(|TlsVersion(v)| *v)
                    .filter(|v| !is_grease(*v))
                    .max();
            }
            _ => {}
        }
    }
    if let Some(v) = highest {
        hello.version = version_name(v);
    }
    Ok(hello)
}

/// What can be said of a hello cut before its extensions: its version.
fn partial(legacy: u16, truncated: bool) -> Result<ClientHello, Error> {
    if !truncated {
        return Err(Error::TlsBadHello);
    }
    Ok(ClientHello {
        version: version_name(legacy),
        truncated: true,
        ..Default::default()
    })
}

/// A big-endian length of `width` bytes at `at`, when those bytes are there.
fn read_len(b: &[u8], at: usize, width: usize) -> Option<usize> {
    let bytes = b.get(at..at + width)?;
    Some(bytes.iter().fold(0usize, |n, &x| n << 8 | usize::from(x)))
}

/// GREASE values (RFC 8701) clients offer to keep servers honest.
fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

fn version_name(v: u16) -> String {
    match v {
        0x0300 => "SSL 3.0".into(),
        0x0301 => "TLS 1.0".into(),
        0x0302 => "TLS 1.1".into(),
        0x0303 => "TLS 1.2".into(),
        0x0304 => "TLS 1.3".into(),
        v => format!("0x{v:04x}"),
    }
}

/// A ClientHello record as a client writes it: two cipher suites, then the
/// SNI, ALPN and supported_versions extensions and `padding` bytes of a
/// padding extension after them. For tests, benchmarks and fuzz seeds.
pub fn client_hello(sni: &str, alpn: &[&str], versions: &[u16], padding: usize) -> Vec<u8> {
    let mut ext = Vec::new();
    let mut push_ext = |ty: u16, data: &[u8]| {
        ext.extend_from_slice(&ty.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    };
    let mut sni_data = Vec::new();
    sni_data.extend_from_slice(&((sni.len() + 3) as u16).to_be_bytes());
    sni_data.push(0);
    sni_data.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    sni_data.extend_from_slice(sni.as_bytes());
    push_ext(0, &sni_data);
    let mut alpn_list = Vec::new();
    for p in alpn {
        alpn_list.push(p.len() as u8);
        alpn_list.extend_from_slice(p.as_bytes());
    }
    let mut alpn_data = (alpn_list.len() as u16).to_be_bytes().to_vec();
    alpn_data.extend_from_slice(&alpn_list);
    push_ext(16, &alpn_data);
    let mut vdata = vec![(versions.len() * 2) as u8];
    for v in versions {
        vdata.extend_from_slice(&v.to_be_bytes());
    }
    push_ext(43, &vdata);
    push_ext(21, &vec![0; padding]);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(32);
    body.extend_from_slice(&[9; 32]);
    body.extend_from_slice(&4u16.to_be_bytes());
    body.extend_from_slice(&[0x13, 0x01, 0x13, 0x02]);
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(sni: &str, alpn: &[&str], versions: &[u16]) -> Vec<u8> {
        client_hello(sni, alpn, versions, 40)
    }

    #[test]
    fn reads_the_name_protocols_and_version_offered() {
        let b = hello(
            "shop.example",
            &["h2", "http/1.1"],
            &[0x3a3a, 0x0304, 0x0303],
        );
        let h = parse(&b).unwrap();
        assert_eq!(h.server_name, "shop.example");
        assert_eq!(h.alpn, vec!["h2", "http/1.1"]);
        assert_eq!(h.version, "TLS 1.3");
        assert!(!h.truncated);
        // Without supported_versions, the hello's own version.
        let b = hello("a", &[], &[]);
        assert_eq!(parse(&b).unwrap().version, "TLS 1.2");
    }

    #[test]
    fn a_cut_hello_gives_what_it_holds_and_says_it_was_cut() {
        let b = hello("shop.example", &["h2"], &[0x0304]);
        // Cut inside the padding: everything before it is there.
        let h = parse(&b[..b.len() - 10]).unwrap();
        assert_eq!(h.server_name, "shop.example");
        assert!(h.truncated);
        // Cut before the extensions: the version only.
        let h = parse(&b[..50]).unwrap();
        assert!(h.truncated && h.server_name.is_empty());
        assert_eq!(parse(&b[..20]), Err(Error::TlsShort));
    }

    #[test]
    fn what_is_not_a_client_hello_is_an_error() {
        let mut b = hello("x", &[], &[]);
        b[5] = 2; // a ServerHello
        assert_eq!(parse(&b), Err(Error::TlsBadHello));
        assert_eq!(parse(&[0x17; 64]), Err(Error::TlsBadHello));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic sweep beside the fuzz target: every prefix
        // and every single-byte change of a real hello.
        let b = hello("shop.example", &["h2", "http/1.1"], &[0x0304]);
        for n in 0..b.len() {
            let _ = parse(&b[..n]);
        }
        for i in 0..b.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut c = b.clone();
                c[i] = v;
                let _ = parse(&c);
            }
        }
    }
}
