use prost::Message as _;

use super::*;
use crate::flow::{Flow, Workload};

fn data(pod: &str) -> EndpointData {
    EndpointData {
        id: 7,
        identity: 4242,
        cluster_name: "default".into(),
        namespace: "shop".into(),
        labels: vec!["k8s:app=cart".into(), "k8s:tier=web".into()],
        pod_name: pod.into(),
        workloads: vec![Workload {
            name: "cart".into(),
            kind: "Deployment".into(),
        }],
    }
}

/// What the generated code would have made of `flow.Endpoint`: the same
/// fields, tags and types, written out by hand from flow.proto.
#[derive(Clone, PartialEq, prost::Message)]
struct WireEndpoint {
    #[prost(uint32, tag = "1")]
    id: u32,
    #[prost(uint32, tag = "2")]
    identity: u32,
    #[prost(string, tag = "7")]
    cluster_name: String,
    #[prost(string, tag = "3")]
    namespace: String,
    #[prost(string, repeated, tag = "4")]
    labels: Vec<String>,
    #[prost(string, tag = "5")]
    pod_name: String,
    #[prost(message, repeated, tag = "6")]
    workloads: Vec<Workload>,
}

#[test]
fn endpoint_data_repeats_flow_endpoint_field_for_field() {
    use prost_types::{DescriptorProto, FileDescriptorSet};
    let bytes = include_bytes!(concat!(env!("OUT_DIR"), "/webb_descriptor.bin"));
    let set = FileDescriptorSet::decode(bytes.as_slice()).expect("descriptor set");
    let find = |package: &str, name: &str| -> DescriptorProto {
        set.file
            .iter()
            .filter(|f| f.package() == package)
            .flat_map(|f| &f.message_type)
            .find(|m| m.name() == name)
            .cloned()
            .expect("message present")
    };
    let fields = |m: &DescriptorProto| {
        m.field
            .iter()
            .map(|f| {
                (
                    f.name().to_owned(),
                    f.number(),
                    f.r#type(),
                    f.label(),
                    f.type_name().to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        fields(&find("flow", "Endpoint")),
        fields(&find("shared", "EndpointData"))
    );
}

#[test]
fn wire_form_is_flow_endpoint() {
    let d = data("cart-1");
    let ep = Endpoint::from(d.clone());
    let wire = WireEndpoint {
        id: d.id,
        identity: d.identity,
        cluster_name: d.cluster_name.clone(),
        namespace: d.namespace.clone(),
        labels: d.labels.clone(),
        pod_name: d.pod_name.clone(),
        workloads: d.workloads.clone(),
    };
    assert_eq!(ep.encode_to_vec(), wire.encode_to_vec());
    let back = Endpoint::decode(wire.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(back, ep);
}

#[test]
fn a_flow_round_trips_with_its_endpoints() {
    let flow = Flow {
        source: Some(data("cart-1").into()),
        destination: Some(data("db-0").into()),
        node_name: "n1".into(),
        ..Default::default()
    };
    let back = Flow::decode(flow.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(back, flow);
    // An empty endpoint is present but has nothing to encode.
    let empty = Flow {
        source: Some(Endpoint::default()),
        ..Default::default()
    };
    let back = Flow::decode(empty.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(back.source, Some(Endpoint::default()));
}

#[test]
fn json_is_hubbles() {
    let ep = Endpoint::from(data("cart-1"));
    let json = serde_json::to_string(&ep).expect("serializes");
    assert_eq!(
        json,
        r#"{"ID":7,"identity":4242,"cluster_name":"default","namespace":"shop","labels":["k8s:app=cart","k8s:tier=web"],"pod_name":"cart-1","workloads":[{"name":"cart","kind":"Deployment"}]}"#
    );
    let back: Endpoint = serde_json::from_str(&json).expect("parses");
    assert_eq!(back, ep);
    // Unset fields are omitted, and camelCase names are read too.
    assert_eq!(
        serde_json::to_string(&Endpoint::default()).expect("serializes"),
        "{}"
    );
    let camel: Endpoint =
        serde_json::from_str(r#"{"podName":"p","clusterName":"c"}"#).expect("parses");
    assert_eq!(
        (camel.pod_name.as_str(), camel.cluster_name.as_str()),
        ("p", "c")
    );
}

#[test]
fn clones_share_and_edits_copy() {
    let a = Endpoint::from(data("cart-1"));
    let mut b = a.clone();
    assert!(a.ptr_eq(&b));
    b.make_mut().pod_name = "cart-2".into();
    assert!(!a.ptr_eq(&b));
    assert_eq!(a.pod_name, "cart-1");
    assert_eq!(b.pod_name, "cart-2");
}

#[test]
fn interner_shares_equal_endpoints_within_its_bound() {
    let mut interner = Interner::new(2);
    let first = Endpoint::from(data("cart-1"));
    let mut again = Endpoint::from(data("cart-1"));
    assert!(!first.ptr_eq(&again));
    let mut kept = first.clone();
    interner.intern(&mut kept);
    interner.intern(&mut again);
    assert!(again.ptr_eq(&first));

    let mut flow = Flow {
        source: Some(data("cart-1").into()),
        destination: Some(data("db-0").into()),
        ..Default::default()
    };
    interner.intern_flow(&mut flow);
    assert!(flow.source.as_ref().is_some_and(|s| s.ptr_eq(&first)));
    assert_eq!(interner.len(), 2);
    // A third distinct endpoint starts the table over.
    let mut third = Endpoint::from(data("web-1"));
    interner.intern(&mut third);
    assert_eq!(interner.len(), 1);
}
