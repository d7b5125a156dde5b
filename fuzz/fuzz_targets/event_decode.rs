//! Kernel ring records (any bytes the ring could hold) through the agent's
//! decoder: flow events and L7 records (event, header, payload), several per
//! input so that DNS and HTTP pairing state carries from one to the next.
//! Every record must become a flow, or be skipped and counted, without
//! panicking, and every flow must print as JSON.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use webb_agent::{
    decode::{Context, Decoded, Decoder},
    endpoints::EndpointTable,
    kernel::DropReasons,
    policy,
};

fn context() -> Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let table = EndpointTable::parse(
            "host_ips: [10.0.0.1]\nendpoints:\n  - {namespace: a, pod: p, labels: {app: x}, ips: [10.0.0.2, 'fd00::2']}\n",
        )
        .expect("fixture");
        let compiled = policy::compile(&[], &table);
        Context {
            node_name: "fuzz".into(),
            endpoints: Arc::new(table),
            policy: Arc::new(compiled),
            drop_reasons: Arc::new(DropReasons::from_names([(2, "NOT_SPECIFIED".into())])),
        }
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::new(context());
    // Records are length-prefixed (2 bytes, little endian) within the input.
    let mut rest = data;
    while let [lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (record, next) = tail.split_at(len);
        rest = next;
        if let Decoded::Flow(flow) = d.decode_record(record) {
            let _ = webb_proto::json::to_line(&webb_proto::observer::GetFlowsResponse {
                response_types: Some(
                    webb_proto::observer::get_flows_response::ResponseTypes::Flow(Box::new(flow)),
                ),
                ..Default::default()
            });
        }
    }
});
