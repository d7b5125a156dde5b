//! Endpoints files: arbitrary text must parse or fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webb_agent::endpoints::EndpointTable;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(t) = EndpointTable::parse(text) {
        for e in &t.endpoints {
            for ip in &e.ips {
                let _ = t.endpoint_for(ip);
            }
        }
    }
});
