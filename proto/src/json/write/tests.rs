//! The hand-written writer against the generated serde code: byte for byte.

use prost::Message as _;

use super::flow;
use crate::{
    flow::Flow,
    json,
    observer::get_flows_response::ResponseTypes,
    testing::{Rng, generated},
};

fn serde_form(f: &Flow) -> String {
    serde_json::to_string(f).expect("serializes")
}

fn ours(f: &Flow) -> String {
    let mut buf = Vec::new();
    flow(&mut buf, f, None);
    String::from_utf8(buf).expect("UTF-8")
}

#[test]
fn recorded_flows_come_out_as_serde_writes_them() {
    let files = [
        include_str!("../../../../examples/demo.jsonl"),
        include_str!("../../../tests/golden/hubble.jsonl"),
        include_str!("../../../../tui/tests/fixtures/flows.jsonl"),
    ];
    let mut n = 0;
    for text in files {
        for r in json::read_lines(text.as_bytes()) {
            let r = r.expect("the recording parses");
            if let Some(ResponseTypes::Flow(f)) = &r.response_types {
                assert_eq!(ours(f), serde_form(f));
                n += 1;
            }
        }
    }
    assert!(n > 7_000, "{n} flows compared");
}

#[test]
fn generated_flows_come_out_as_serde_writes_them() {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    for i in 0..20_000 {
        let f = generated(&mut r);
        assert_eq!(ours(&f), serde_form(&f), "flow {i}: {f:?}");
        // Whatever was generated is a flow the wire can carry.
        assert_eq!(Flow::decode(f.encode_to_vec().as_slice()).ok(), Some(f));
    }
}

#[test]
fn unknown_enum_values_are_numbers_as_protojson_writes_them() {
    let f = Flow {
        verdict: 77,
        ..Default::default()
    };
    assert_eq!(ours(&f), r#"{"verdict":77}"#);
    // The generated writers too (lost events, node status, L7, filters):
    // a whole line, never a broken one.
    let line = r#"{"lost_events":{"source":80,"num_events_lost":"1","cpu":-1},"node_name":"n","time":"2025-03-14T21:40:00.100Z"}"#;
    let r = json::read_lines(line.as_bytes())
        .next()
        .expect("a line")
        .expect("parses");
    assert_eq!(json::to_line(&r).trim_end(), line);
    let filter = crate::flow::FlowFilter {
        verdict: vec![1, 99],
        traffic_direction: vec![42],
        ..Default::default()
    };
    assert_eq!(
        json::to_go_string(&filter),
        r#"{"traffic_direction":[42],"verdict":["FORWARDED",99]}"#
    );
}

/// Endpoints shared by the decoder are written once and copied after: the
/// lines are the ones written without the copies, and an endpoint edited
/// after it was written (a copy, then) gets its new text.
#[test]
fn a_line_writer_copies_shared_endpoints_and_writes_the_same_lines() {
    let text = include_str!("../../../../examples/demo.jsonl");
    let mut decoder = crate::decoder::ResponseDecoder::new();
    let mut writer = json::LineWriter::default();
    let mut n = 0;
    for r in json::read_lines(text.as_bytes()) {
        let r = r.expect("the recording parses");
        let shared = decoder.decode(&r.encode_to_vec()).expect("decodes");
        let mut line = Vec::new();
        writer.append_line(&mut line, &shared);
        assert_eq!(String::from_utf8(line).expect("UTF-8"), json::to_line(&r));
        n += 1;

        if let Some(ResponseTypes::Flow(f)) = &shared.response_types
            && let Some(source) = &f.source
        {
            let mut edited = (**f).clone();
            let mut e = source.clone();
            e.make_mut().pod_name = format!("{}-edited", e.pod_name);
            edited.source = Some(e);
            let mut line = Vec::new();
            writer.append_line(
                &mut line,
                &crate::observer::GetFlowsResponse {
                    response_types: Some(ResponseTypes::Flow(Box::new(edited.clone()))),
                    ..Default::default()
                },
            );
            let line = String::from_utf8(line).expect("UTF-8");
            assert!(line.contains(&serde_form(&edited)), "{line}");
        }
    }
    assert!(n > 7_000, "{n} lines");
}

#[test]
fn strings_are_escaped_as_go_escapes_them() {
    // Go's encoding/json, which `hubble observe -o json` uses: HTML-safe
    // escapes and the JavaScript line terminators, on top of JSON's own.
    let s = "a&b<c>d\u{2028}e\u{2029}f\"g\\h\ti\u{1b}j\u{7f}é";
    let want = r#""a\u0026b\u003cc\u003ed\u2028e\u2029f\"g\\h\ti\u001bj"#.to_owned() + "\u{7f}é\"";
    let mut buf = Vec::new();
    super::string(&mut buf, s);
    assert_eq!(String::from_utf8(buf).unwrap(), want);
    assert_eq!(crate::json::to_go_string(s), want);
    // A plain string takes the fast path and is unchanged.
    let mut buf = Vec::new();
    super::string(&mut buf, "kube-system/coredns");
    assert_eq!(buf, b"\"kube-system/coredns\"");
}
