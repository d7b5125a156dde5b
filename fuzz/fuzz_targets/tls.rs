//! Arbitrary bytes through the TLS ClientHello reader. Beyond not
//! panicking: a hello read whole (not cut) names a server only from bytes
//! it holds, and a cut hello says so.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webb_agent::l7::tls;

fuzz_target!(|data: &[u8]| {
    let Ok(hello) = tls::parse(data) else {
        return;
    };
    assert!(hello.server_name.len() <= data.len());
    assert!(hello.alpn.iter().map(String::len).sum::<usize>() <= data.len());
    assert!(!hello.version.is_empty());
});
