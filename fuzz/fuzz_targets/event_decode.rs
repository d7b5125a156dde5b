//! Kernel event records (any bytes the ring could hold) through the agent's
//! decoder: every record must become a flow without panicking.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use node_agent_ebpf::FlowEvent;
use webb_agent::{
    decode::{Context, Decoder},
    endpoints::EndpointTable,
    kernel::DropReasons,
    policy,
};

fuzz_target!(|data: &[u8]| {
    if data.len() < std::mem::size_of::<FlowEvent>() {
        return;
    }
    // SAFETY: FlowEvent is plain old data and the slice is long enough.
    let ev: FlowEvent = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
    let table = EndpointTable::parse(
        "host_ips: [10.0.0.1]\nendpoints:\n  - {namespace: a, pod: p, labels: {app: x}, ips: [10.0.0.2, 'fd00::2']}\n",
    )
    .expect("fixture");
    let compiled = policy::compile(&[], &table);
    let mut d = Decoder::new(Context {
        node_name: "fuzz".into(),
        endpoints: Arc::new(table),
        policy: Arc::new(compiled),
        drop_reasons: Arc::new(DropReasons::from_names([(2, "NOT_SPECIFIED".into())])),
    });
    let flow = d.decode(&ev);
    let _ = webb_proto::json::to_line(&webb_proto::observer::GetFlowsResponse {
        response_types: Some(webb_proto::observer::get_flows_response::ResponseTypes::Flow(Box::new(flow))),
        ..Default::default()
    });
});
