//! Golden round trips: hand-written lines in Hubble's exact JSON form must
//! parse and print back byte for byte.

use webb_proto::{
    flow::{Verdict, layer4, layer7},
    json,
    observer::get_flows_response::ResponseTypes,
};

const GOLDEN: &str = include_str!("golden/hubble.jsonl");

#[test]
fn every_line_round_trips_exactly() {
    for (i, line) in GOLDEN.lines().enumerate() {
        let parsed = json::parse_line(line).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        assert_eq!(
            json::to_line(&parsed),
            line,
            "line {} did not round-trip",
            i + 1
        );
        // And through the wire format.
        let bytes = prost::Message::encode_to_vec(&parsed);
        let back: webb_proto::observer::GetFlowsResponse =
            prost::Message::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, parsed);
    }
}

#[test]
fn fields_land_where_jq_paths_expect() {
    let lines: Vec<_> = GOLDEN
        .lines()
        .map(|l| json::parse_line(l).unwrap())
        .collect();
    let flow = |i: usize| match &lines[i].response_types {
        Some(ResponseTypes::Flow(f)) => f.clone(),
        other => panic!("line {i} is not a flow: {other:?}"),
    };
    let f = flow(0);
    assert_eq!(f.source.as_ref().unwrap().pod_name, "client-abc");
    assert!(
        matches!(f.l4.unwrap().protocol, Some(layer4::Protocol::Tcp(t)) if t.destination_port == 80)
    );
    assert_eq!(flow(1).verdict, Verdict::Dropped as i32);
    assert_eq!(flow(2).webb_kernel_drop_reason, "NO_SOCKET");
    assert!(
        matches!(flow(3).l7.unwrap().record, Some(layer7::Record::Dns(d)) if d.query == "api.shop.svc.cluster.local.")
    );
    assert!(matches!(flow(6).l7.unwrap().record, Some(layer7::Record::Http(h)) if h.code == 200));
    assert!(
        matches!(&lines[7].response_types, Some(ResponseTypes::LostEvents(l)) if l.num_events_lost == 42)
    );
    assert!(
        matches!(&lines[8].response_types, Some(ResponseTypes::NodeStatus(n)) if n.node_names == ["kind-worker2"])
    );
}

#[test]
fn readers_accept_camel_case_and_unknown_fields() {
    let line = r#"{"flow":{"verdict":"DROPPED","dropReasonDesc":"POLICY_DENIED","nodeName":"n1","futureField":{"x":1},"source":{"podName":"a"}},"nodeName":"n1"}"#;
    let r = json::parse_line(line).unwrap();
    let Some(ResponseTypes::Flow(f)) = r.response_types else {
        panic!("not a flow")
    };
    assert_eq!(
        (f.node_name.as_str(), f.source.unwrap().pod_name.as_str()),
        ("n1", "a")
    );
    assert_eq!(
        f.drop_reason_desc,
        webb_proto::flow::DropReason::PolicyDenied as i32
    );
}

#[test]
fn bad_lines_name_their_line_number() {
    let input = format!("{}\n\nnot json\n", GOLDEN.lines().next().unwrap());
    let results: Vec<_> = json::read_lines(input.as_bytes()).collect();
    assert_eq!(results.len(), 2, "blank lines are skipped");
    assert!(results[0].is_ok());
    let err = results[1].as_ref().unwrap_err().to_string();
    assert!(err.starts_with("line 3:"), "{err}");
}
