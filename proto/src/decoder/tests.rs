//! The decoder against prost's generated code: the same value for every
//! input, and endpoints shared where the input repeats them.

use prost::Message as _;

use super::ResponseDecoder;
use crate::{
    flow::LostEvent,
    flow::{EndpointData, Flow},
    json,
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
    testing::{Rng, generated},
};

fn recorded() -> Vec<GetFlowsResponse> {
    let files = [
        include_str!("../../../examples/demo.jsonl"),
        include_str!("../../tests/golden/hubble.jsonl"),
        include_str!("../../../tui/tests/fixtures/flows.jsonl"),
    ];
    files
        .iter()
        .flat_map(|text| json::read_lines(text.as_bytes()))
        .map(|r| r.expect("the recording parses"))
        .collect()
}

fn flow(r: &GetFlowsResponse) -> &Flow {
    match &r.response_types {
        Some(ResponseTypes::Flow(f)) => f,
        other => panic!("not a flow: {other:?}"),
    }
}

#[test]
fn recorded_responses_decode_as_prost_decodes_them_and_share_repeated_endpoints() {
    let responses = recorded();
    // The product's table is seeded per process; with a random seed two of
    // the recording's hot endpoints land in one slot in some runs and evict
    // each other on every flow, which is a cost, not a fault. The count below
    // is about sharing, so it runs on the fixed seed.
    let mut decoder = ResponseDecoder::fixed();
    let mut decoded = Vec::new();
    for r in &responses {
        let wire = r.encode_to_vec();
        let ours = decoder.decode(&wire).expect("decodes");
        assert_eq!(
            ours,
            GetFlowsResponse::decode(wire.as_slice()).expect("decodes")
        );
        assert_eq!(&ours, r);
        decoded.push(ours);
    }
    assert!(decoded.len() > 7_000, "{} responses", decoded.len());
    // An endpoint equal to the one decoded last time is the same allocation
    // while it is still in the table. The table is direct-mapped, so two of
    // the recording's few dozen endpoints may share a slot and evict each
    // other now and then: a re-decode is allowed, but rarely.
    let mut seen: Vec<crate::flow::Endpoint> = Vec::new();
    let mut shared = 0;
    let mut decoded_again = 0;
    for r in decoded
        .iter()
        .filter(|r| matches!(r.response_types, Some(ResponseTypes::Flow(_))))
    {
        let f = flow(r);
        for e in [&f.source, &f.destination].into_iter().flatten() {
            match seen.iter_mut().find(|s| **s == *e) {
                Some(last) if last.ptr_eq(e) => shared += 1,
                Some(last) => {
                    decoded_again += 1;
                    *last = e.clone();
                }
                None => seen.push(e.clone()),
            }
        }
    }
    assert!(shared > 10_000, "{shared} endpoints shared");
    assert!(
        decoded_again * 20 < shared,
        "{decoded_again} equal endpoints decoded again, {shared} shared"
    );
}

#[test]
fn generated_flows_decode_as_prost_decodes_them() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut decoder = ResponseDecoder::new();
    for i in 0..20_000 {
        let resp = GetFlowsResponse {
            node_name: r.text(),
            response_types: Some(ResponseTypes::Flow(Box::new(generated(&mut r)))),
            time: None,
        };
        let wire = resp.encode_to_vec();
        assert_eq!(decoder.decode(&wire).ok(), Some(resp), "response {i}");
    }
}

/// Cut, flipped and spliced bytes: an error exactly where prost gives one,
/// and otherwise the same value.
#[test]
fn corrupted_input_gives_what_prost_gives() {
    let responses = recorded();
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let mut decoder = ResponseDecoder::new();
    let (mut errors, mut values) = (0, 0);
    for (i, resp) in responses.iter().enumerate().step_by(7) {
        let wire = resp.encode_to_vec();
        let mut cases = vec![
            wire[..r.next() as usize % wire.len()].to_vec(),
            wire[r.next() as usize % wire.len()..].to_vec(),
        ];
        for _ in 0..4 {
            let mut flipped = wire.clone();
            let at = r.next() as usize % wire.len();
            flipped[at] ^= 1 << (r.next() % 8);
            cases.push(flipped);
        }
        let other = responses[r.next() as usize % responses.len()].encode_to_vec();
        cases.push([&wire[..wire.len() / 2], &other[other.len() / 2..]].concat());
        for bytes in cases {
            let theirs = GetFlowsResponse::decode(bytes.as_slice());
            let ours = decoder.decode(&bytes);
            assert_eq!(ours.is_err(), theirs.is_err(), "response {i}: {bytes:?}");
            if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                assert_eq!(ours, theirs, "response {i}");
                values += 1;
            } else {
                errors += 1;
            }
        }
    }
    assert!(
        errors > 1_000 && values > 1_000,
        "{errors} errors, {values} values"
    );
}

/// Protobuf merges a repeated message field; no encoder writes one, but
/// the decoder must not hand out a shared endpoint changed by it.
#[test]
fn an_endpoint_given_twice_merges_without_touching_the_shared_copy() {
    let first = EndpointData {
        namespace: "shop".into(),
        pod_name: "cart-1".into(),
        labels: vec!["app=cart".into()],
        ..Default::default()
    };
    let plain = GetFlowsResponse {
        response_types: Some(ResponseTypes::Flow(Box::new(Flow {
            source: Some(first.clone().into()),
            ..Default::default()
        }))),
        ..Default::default()
    };
    let second = EndpointData {
        pod_name: "cart-2".into(),
        ..Default::default()
    };
    let mut twice_flow = Flow {
        source: Some(first.into()),
        ..Default::default()
    }
    .encode_to_vec();
    prost::encoding::message::encode(8, &second, &mut twice_flow);
    let mut twice = Vec::new();
    prost::encoding::bytes::encode(1, &twice_flow, &mut twice);

    let mut decoder = ResponseDecoder::new();
    let a = decoder.decode(&plain.encode_to_vec()).expect("decodes");
    let b = decoder.decode(&twice).expect("decodes");
    assert_eq!(
        b,
        GetFlowsResponse::decode(twice.as_slice()).expect("decodes")
    );
    assert_eq!(
        flow(&b).source.as_ref().map(|e| e.pod_name.as_str()),
        Some("cart-2")
    );
    assert_eq!(flow(&b).source.as_ref().map(|e| e.labels.len()), Some(1));
    // The first flow's endpoint, and the table's, are untouched.
    assert_eq!(
        flow(&a).source.as_ref().map(|e| e.pod_name.as_str()),
        Some("cart-1")
    );
    let c = decoder.decode(&plain.encode_to_vec()).expect("decodes");
    assert_eq!(c, plain);
}

#[test]
fn other_responses_and_a_flow_given_twice_decode_as_prost_decodes_them() {
    let lost = GetFlowsResponse {
        node_name: "node-1".into(),
        response_types: Some(ResponseTypes::LostEvents(LostEvent {
            num_events_lost: 7,
            ..Default::default()
        })),
        ..Default::default()
    };
    let mut decoder = ResponseDecoder::new();
    let wire = lost.encode_to_vec();
    assert_eq!(decoder.decode(&wire).ok(), Some(lost));
    // A flow after a lost-events member replaces it; a second flow merges.
    let responses = recorded();
    let mut joined = wire;
    joined.extend(responses[0].encode_to_vec());
    joined.extend(responses[1].encode_to_vec());
    assert_eq!(
        decoder.decode(&joined).ok(),
        GetFlowsResponse::decode(joined.as_slice()).ok()
    );
    assert!(decoder.decode(&joined).is_ok());
}
