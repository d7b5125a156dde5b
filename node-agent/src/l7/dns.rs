//! DNS messages from packet payloads, parsed with hickory-proto.
//!
//! The header and the question are required; answers are read one by one so
//! that a message cut at the capture length still yields what it holds.

use std::net::IpAddr;

use hickory_proto::{
    op::{Header, MessageType, Query},
    rr::{RData, Record, RecordType},
    serialize::binary::{BinDecodable as _, BinDecoder},
};

use super::Error;

/// What webb reports of one DNS message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub response: bool,
    /// The 4-bit RCODE of the header.
    pub rcode: u32,
    /// The first question's name, as sent, with its trailing dot.
    pub query: String,
    pub qtypes: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// CNAME targets in the answer section.
    pub cnames: Vec<String>,
    /// The types of the answer records.
    pub rrtypes: Vec<String>,
    /// The smallest TTL of the answers (0 without answers).
    pub ttl: u32,
    /// Records are missing: the payload ended before the message did.
    pub truncated: bool,
}

/// Parses a DNS message. `tcp` strips the 2-byte length prefix of DNS over
/// TCP; `cut` says the payload was cut short of the packet's, so running out
/// of bytes is truncation rather than a malformed message.
pub fn parse(payload: &[u8], tcp: bool, cut: bool) -> Result<Message, Error> {
    let mut msg = payload;
    let mut cut = cut;
    if tcp {
        let [hi, lo, rest @ ..] = payload else {
            return Err(Error::DnsShort);
        };
        let declared = usize::from(u16::from_be_bytes([*hi, *lo]));
        if declared < 12 {
            // A TCP segment in the middle of a message starts with message
            // bytes, not a length; such segments are not parsed.
            return Err(Error::DnsTcpSegment);
        }
        if rest.len() < declared {
            cut = true;
        }
        msg = &rest[..rest.len().min(declared)];
    }
    let mut d = BinDecoder::new(msg);
    let header = Header::read(&mut d).map_err(|_| Error::DnsShort)?;
    let mut out = Message {
        id: header.id,
        response: header.message_type == MessageType::Response,
        rcode: u32::from(header.response_code.low()),
        ..Message::default()
    };
    if header.counts.queries == 0 {
        return Err(Error::DnsNoQuestion);
    }
    for i in 0..header.counts.queries {
        match Query::read(&mut d) {
            Ok(q) => {
                if i == 0 {
                    out.query = q.name().to_ascii();
                }
                push_unique(&mut out.qtypes, type_name(q.query_type()));
            }
            Err(_) if cut => {
                out.truncated = true;
                return Ok(out);
            }
            Err(_) => return Err(Error::DnsBadQuestion),
        }
    }
    let mut min_ttl = None::<u32>;
    for _ in 0..header.counts.answers {
        let record = match Record::<RData>::read(&mut d) {
            Ok(r) => r,
            Err(_) if cut => {
                out.truncated = true;
                break;
            }
            Err(_) => return Err(Error::DnsBadRecord),
        };
        min_ttl = Some(min_ttl.map_or(record.ttl, |t| t.min(record.ttl)));
        push_unique(&mut out.rrtypes, type_name(record.record_type()));
        match &record.data {
            RData::A(a) => out.ips.push(IpAddr::V4(a.0)),
            RData::AAAA(a) => out.ips.push(IpAddr::V6(a.0)),
            RData::CNAME(c) => out.cnames.push(c.0.to_ascii()),
            _ => {}
        }
    }
    out.ttl = min_ttl.unwrap_or(0);
    Ok(out)
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// A record type's mnemonic (`A`, `AAAA`, `CNAME`, ...), or `TYPE123`.
fn type_name(t: RecordType) -> String {
    match t {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        t => t.to_string(),
    }
}

/// The RCODE mnemonic Hubble's summaries use.
pub fn rcode_name(rcode: u32) -> String {
    match rcode {
        0 => "NOERROR".to_owned(),
        1 => "FORMERR".to_owned(),
        2 => "SERVFAIL".to_owned(),
        3 => "NXDOMAIN".to_owned(),
        4 => "NOTIMP".to_owned(),
        5 => "REFUSED".to_owned(),
        6 => "YXDOMAIN".to_owned(),
        7 => "YXRRSET".to_owned(),
        8 => "NXRRSET".to_owned(),
        9 => "NOTAUTH".to_owned(),
        10 => "NOTZONE".to_owned(),
        n => format!("RCODE{n}"),
    }
}
