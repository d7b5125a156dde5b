//! The sharing decoder against prost's generated code: arbitrary bytes
//! decode to the same value, or fail, exactly as prost decodes them, also
//! when the decoder has seen endpoints before (each input is decoded whole,
//! in two halves, then whole again through one decoder).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use webb_proto::{decoder::ResponseDecoder, observer::GetFlowsResponse};

fuzz_target!(|data: &[u8]| {
    let mut decoder = ResponseDecoder::new();
    let (a, b) = data.split_at(data.len() / 2);
    for part in [data, a, b, data] {
        let ours = decoder.decode(part);
        let theirs = GetFlowsResponse::decode(part);
        assert_eq!(ours.is_ok(), theirs.is_ok());
        if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
            assert_eq!(ours, theirs);
        }
    }
});
