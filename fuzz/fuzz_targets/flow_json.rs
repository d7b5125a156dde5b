//! Hubble JSON lines (`--input-file`): arbitrary text must parse or fail
//! cleanly, and what parses must print and parse back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webb_proto::json;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(r) = json::parse_line(text) {
        let line = json::to_line(&r);
        let back = json::parse_line(&line).expect("our own output parses");
        assert_eq!(back, r);
    }
});
