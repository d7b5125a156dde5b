//! NetworkPolicy files: parse and compile arbitrary text without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webb_agent::{endpoints::EndpointTable, policy};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(policies) = policy::parse(text) {
        let table = EndpointTable::parse(
            "endpoints:\n  - {namespace: default, pod: a, labels: {app: a}, ips: [10.0.0.2]}\n",
        )
        .expect("fixture");
        let _ = policy::compile(&policies, &table);
    }
});
