//! Arbitrary payloads through the HTTP/1.x head parser and the redaction of
//! its URL and headers. Beyond not panicking: after default redaction no
//! query parameter keeps its value and no credential header keeps its value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webb_agent::l7::http::{self, Head, REDACTED, Redaction};

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = http::parse(data) else {
        return;
    };
    let r = Redaction::default();
    match parsed.head {
        Head::Request {
            target,
            mut headers,
            ..
        } => {
            let url = r.url(&http::url(&target, &headers, "10.0.0.1:80"));
            if let Some((_, query)) = url.split_once('?') {
                let query = query.split('#').next().unwrap_or_default();
                for pair in query.split('&') {
                    if let Some((_, v)) = pair.split_once('=') {
                        assert_eq!(v, REDACTED, "query value left in {url:?}");
                    }
                }
            }
            r.headers(&mut headers);
            check_headers(&headers);
        }
        Head::Response { mut headers, .. } => {
            r.headers(&mut headers);
            check_headers(&headers);
        }
    }
});

fn check_headers(headers: &[(String, String)]) {
    for (k, v) in headers {
        if http::DEFAULT_DENY.contains(&k.to_ascii_lowercase().as_str()) {
            assert_eq!(v, REDACTED);
        }
    }
}
