use super::*;
use crate::flow::{
    CiliumEventType, Dns, DropReason, EndpointData, Http, Ip, IpVersion, Layer4, Layer7, Tcp,
    TraceContext, TraceParent, TrafficDirection, Udp, Verdict,
};
use crate::wkt::BoolValue;

fn endpoint(ns: &str, pod: &str, labels: &[&str], id: u32) -> Endpoint {
    EndpointData {
        identity: id,
        namespace: ns.into(),
        pod_name: pod.into(),
        labels: labels.iter().map(|s| s.to_string()).collect(),
        workloads: vec![Workload {
            name: pod.split('-').next().unwrap_or(pod).into(),
            kind: "Deployment".into(),
        }],
        ..Default::default()
    }
    .into()
}

fn tcp_flow() -> Flow {
    Flow {
        uuid: "u-tcp".into(),
        verdict: Verdict::Forwarded as i32,
        ip: Some(Ip {
            source: "10.0.0.1".into(),
            destination: "10.0.1.2".into(),
            ip_version: IpVersion::IPv4 as i32,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(Tcp {
                source_port: 43210,
                destination_port: 80,
                flags: Some(TcpFlags {
                    syn: true,
                    ack: true,
                    ..Default::default()
                }),
            })),
        }),
        source: Some(endpoint(
            "shop",
            "frontend-abc",
            &["k8s:app=frontend", "k8s:tier=web"],
            1001,
        )),
        destination: Some(endpoint("shop", "cart-xyz", &["k8s:app=cart"], 1002)),
        node_name: "lab/node-1".into(),
        node_labels: vec!["k8s:zone=a".into()],
        event_type: Some(CiliumEventType {
            r#type: 4,
            sub_type: 0,
        }),
        traffic_direction: TrafficDirection::Egress as i32,
        is_reply: Some(BoolValue { value: false }),
        interface: Some(NetworkInterface {
            index: 7,
            name: "lxc1".into(),
        }),
        destination_names: vec!["cart.shop.svc.cluster.local".into()],
        trace_context: Some(Box::new(TraceContext {
            parent: Some(TraceParent {
                trace_id: "t1".into(),
            }),
        })),
        ..Default::default()
    }
}

fn drop_flow() -> Flow {
    Flow {
        uuid: "u-drop".into(),
        verdict: Verdict::Dropped as i32,
        drop_reason_desc: DropReason::PolicyDenied as i32,
        ip: Some(Ip {
            source: "fd00::1".into(),
            destination: "fd00::2".into(),
            ip_version: IpVersion::IPv6 as i32,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Udp(Udp {
                source_port: 5353,
                destination_port: 53,
            })),
        }),
        source: Some(endpoint(
            "shop",
            "frontend-abc",
            &["k8s:app=frontend"],
            1001,
        )),
        destination: Some(
            EndpointData {
                identity: 2,
                labels: vec!["reserved:world".into()],
                ..Default::default()
            }
            .into(),
        ),
        event_type: Some(CiliumEventType {
            r#type: 1,
            sub_type: 133,
        }),
        traffic_direction: TrafficDirection::Ingress as i32,
        is_reply: Some(BoolValue { value: true }),
        ..Default::default()
    }
}

fn http_flow() -> Flow {
    Flow {
        uuid: "u-http".into(),
        verdict: Verdict::Forwarded as i32,
        l7: Some(Box::new(Layer7 {
            r#type: 2,
            latency_ns: 3_000_000,
            webb_truncated: false,
            webb_tls: None,
            record: Some(layer7::Record::Http(Http {
                code: 503,
                method: "GET".into(),
                url: "http://cart:8080/items/42?x=1".into(),
                protocol: "HTTP/1.1".into(),
                headers: vec![HttpHeader {
                    key: "Content-Type".into(),
                    value: "text/plain".into(),
                }],
            })),
        })),
        event_type: Some(CiliumEventType {
            r#type: 129,
            sub_type: 0,
        }),
        ..Default::default()
    }
}

fn dns_flow() -> Flow {
    Flow {
        uuid: "u-dns".into(),
        l7: Some(Box::new(Layer7 {
            r#type: 1,
            record: Some(layer7::Record::Dns(Dns {
                query: "api.example.com.".into(),
                ..Default::default()
            })),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Which of the four sample flows (tcp, drop, http, dns) a whitelist of one
/// filter lets through.
fn selected(f: FlowFilter) -> [bool; 4] {
    let filters = FlowFilters::compile(&[f], &[]).expect("filter compiles");
    [tcp_flow(), drop_flow(), http_flow(), dns_flow()].map(|fl| filters.matches(&fl))
}

macro_rules! ff {
    ($($field:ident : $value:expr),* $(,)?) => {
        FlowFilter { $($field: $value,)* ..Default::default() }
    };
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn table() {
    let cases: Vec<(&str, FlowFilter, [bool; 4])> = vec![
        ("empty filter matches all", ff!(), [true, true, true, true]),
        (
            "exact source ip",
            ff!(source_ip: s(&["10.0.0.1"])),
            [true, false, false, false],
        ),
        (
            "source cidr",
            ff!(source_ip: s(&["10.0.0.0/8"])),
            [true, false, false, false],
        ),
        (
            "v6 cidr",
            ff!(destination_ip: s(&["fd00::/64"])),
            [false, true, false, false],
        ),
        (
            "ip alternatives are OR-ed",
            ff!(source_ip: s(&["10.0.0.1", "fd00::1"])),
            [true, true, false, false],
        ),
        (
            "pod namespace/prefix",
            ff!(destination_pod: s(&["shop/cart"])),
            [true, false, false, false],
        ),
        (
            "pod namespace only",
            ff!(source_pod: s(&["shop/"])),
            [true, true, false, false],
        ),
        (
            "pod wrong namespace",
            ff!(source_pod: s(&["other/frontend"])),
            [false, false, false, false],
        ),
        (
            // As Hubble reads it: a name without a namespace is in "default".
            "pod prefix without namespace is in default",
            ff!(source_pod: s(&["front"])),
            [false, false, false, false],
        ),
        (
            "pod prefix in any namespace",
            ff!(source_pod: s(&["/front"])),
            [true, true, false, false],
        ),
        (
            "label k8s:app=cart",
            ff!(destination_label: s(&["k8s:app=cart"])),
            [true, false, false, false],
        ),
        (
            "label without source",
            ff!(source_label: s(&["app=frontend"])),
            [true, true, false, false],
        ),
        (
            "label in set",
            ff!(source_label: s(&["app in (frontend, x)"])),
            [true, true, false, false],
        ),
        (
            "label AND within selector",
            ff!(source_label: s(&["app=frontend,tier=web"])),
            [true, false, false, false],
        ),
        (
            // Flows 3 and 4 have no source endpoint: no labels, so notin
            // holds (a Kubernetes selector's meaning, and Hubble's).
            "label notin",
            ff!(source_label: s(&["k8s:app notin (frontend)"])),
            [false, false, true, true],
        ),
        (
            "label exists",
            ff!(destination_label: s(&["reserved:world"])),
            [false, true, false, false],
        ),
        (
            "label not exists",
            ff!(source_label: s(&["!tier"])),
            [false, true, true, true],
        ),
        (
            "verdict",
            ff!(verdict: vec![Verdict::Dropped as i32]),
            [false, true, false, false],
        ),
        (
            "drop reason",
            ff!(drop_reason_desc: vec![DropReason::PolicyDenied as i32]),
            [false, true, false, false],
        ),
        (
            "event type drop",
            ff!(event_type: vec![EventTypeFilter { r#type: 1, ..Default::default() }]),
            [false, true, false, false],
        ),
        (
            "event type with sub type",
            ff!(event_type: vec![EventTypeFilter { r#type: 1, match_sub_type: true, sub_type: 5 }]),
            [false, false, false, false],
        ),
        (
            "direction",
            ff!(traffic_direction: vec![TrafficDirection::Egress as i32]),
            [true, false, false, false],
        ),
        (
            "protocol tcp",
            ff!(protocol: s(&["TCP"])),
            [true, false, false, false],
        ),
        (
            "protocol udp",
            ff!(protocol: s(&["udp"])),
            [false, true, false, false],
        ),
        (
            "protocol http",
            ff!(protocol: s(&["http"])),
            [false, false, true, false],
        ),
        (
            "protocol dns",
            ff!(protocol: s(&["dns"])),
            [false, false, false, true],
        ),
        (
            "destination port",
            ff!(destination_port: s(&["53"])),
            [false, true, false, false],
        ),
        (
            "source port",
            ff!(source_port: s(&["43210"])),
            [true, false, false, false],
        ),
        (
            "tcp flags subset",
            ff!(tcp_flags: vec![TcpFlags { syn: true, ..Default::default() }]),
            [true, false, false, false],
        ),
        (
            "tcp flags missing",
            ff!(tcp_flags: vec![TcpFlags { fin: true, ..Default::default() }]),
            [false, false, false, false],
        ),
        (
            "node name glob",
            ff!(node_name: s(&["node-*"])),
            [true, false, false, false],
        ),
        (
            "node name with cluster",
            ff!(node_name: s(&["lab/node-1"])),
            [true, false, false, false],
        ),
        (
            "node labels",
            ff!(node_labels: s(&["zone=a"])),
            [true, false, false, false],
        ),
        (
            "fqdn wildcard",
            ff!(destination_fqdn: s(&["*.shop.svc.cluster.local"])),
            [true, false, false, false],
        ),
        (
            // Hubble's `*` is any run of `-.0-9a-z`: it spans labels.
            "fqdn star spans labels",
            ff!(destination_fqdn: s(&["*.svc.cluster.local"])),
            [true, false, false, false],
        ),
        (
            "fqdn pattern lowercased, name matched as it is",
            ff!(destination_fqdn: s(&[" Cart.Shop.svc.cluster.local. "])),
            [true, false, false, false],
        ),
        (
            "http status prefix",
            ff!(http_status_code: s(&["5+"])),
            [false, false, true, false],
        ),
        (
            "http status exact",
            ff!(http_status_code: s(&["503"])),
            [false, false, true, false],
        ),
        (
            "http status other",
            ff!(http_status_code: s(&["4+"])),
            [false, false, false, false],
        ),
        (
            "http method",
            ff!(http_method: s(&["get"])),
            [false, false, true, false],
        ),
        (
            "http path regex",
            ff!(http_path: s(&["^/items/[0-9]+$"])),
            [false, false, true, false],
        ),
        (
            "http url regex",
            ff!(http_url: s(&["cart:8080"])),
            [false, false, true, false],
        ),
        (
            "http header",
            ff!(http_header: vec![HttpHeader { key: "content-type".into(), value: "text/plain".into() }]),
            [false, false, true, false],
        ),
        (
            "dns query regex",
            ff!(dns_query: s(&["example\\.com"])),
            [false, false, false, true],
        ),
        (
            "identity",
            ff!(destination_identity: vec![1002]),
            [true, false, false, false],
        ),
        ("reply", ff!(reply: vec![true]), [false, true, false, false]),
        (
            "ip version",
            ff!(ip_version: vec![IpVersion::IPv6 as i32]),
            [false, true, false, false],
        ),
        (
            "interface by name",
            ff!(interface: vec![NetworkInterface { index: 0, name: "lxc1".into() }]),
            [true, false, false, false],
        ),
        (
            "uuid",
            ff!(uuid: s(&["u-http"])),
            [false, false, true, false],
        ),
        (
            "workload",
            ff!(source_workload: vec![Workload { name: "frontend".into(), kind: String::new() }]),
            [true, true, false, false],
        ),
        (
            "trace id",
            ff!(trace_id: s(&["t1"])),
            [true, false, false, false],
        ),
        (
            "fields are AND-ed",
            ff!(source_pod: s(&["shop/"]), verdict: vec![Verdict::Dropped as i32]),
            [false, true, false, false],
        ),
    ];
    for (name, filter, want) in cases {
        assert_eq!(selected(filter.clone()), want, "case {name:?}");
        // What the store skips by, never skips a flow that passes.
        let filters = FlowFilters::compile(&[filter], &[]).unwrap();
        for (i, fl) in [tcp_flow(), drop_flow(), http_flow(), dns_flow()]
            .iter()
            .enumerate()
        {
            let mut summary = Summary::default();
            summary.add(fl);
            assert!(
                filters.may_match_key(&ItemKey::of_flow(fl)) >= want[i],
                "case {name:?}, flow {i}: its key rules out a flow that passes"
            );
            assert!(
                filters.may_match(&summary) >= want[i],
                "case {name:?}, flow {i}"
            );
        }
    }
}

#[test]
fn item_keys_rule_out_what_cannot_pass() {
    let key = ItemKey::of_flow(&tcp_flow());
    assert_eq!(ItemKey::from_bytes(&key.to_bytes()), key);
    let may = |f: FlowFilter| FlowFilters::compile(&[f], &[]).unwrap().may_match_key(&key);
    assert!(may(ff!(destination_port: s(&["80"]))));
    assert!(!may(ff!(destination_port: s(&["81"]))));
    assert!(!may(ff!(source_port: s(&["80"]))));
    assert!(!may(ff!(verdict: vec![Verdict::Dropped as i32])));
    assert!(may(ff!(source_pod: s(&["shop/front"]))));
    assert!(!may(ff!(source_pod: s(&["kube-system/"]))));
    // Any one whitelist filter may let it through; a filter on what keys
    // do not hold (an IP) never rules it out.
    let either = FlowFilters::compile(
        &[
            ff!(destination_port: s(&["81"])),
            ff!(source_ip: s(&["10.9.9.9"])),
        ],
        &[],
    )
    .unwrap();
    assert!(either.may_match_key(&key));
    // Responses that are not flows always may.
    let strict = FlowFilters::compile(&[ff!(destination_port: s(&["81"]))], &[]).unwrap();
    assert!(strict.may_match_key(&ItemKey::non_flow()));
    // A verdict out of the key's range may be anything.
    let odd = ItemKey::of_flow(&Flow {
        verdict: 300,
        ..tcp_flow()
    });
    assert!(
        FlowFilters::compile(&[ff!(verdict: vec![7])], &[])
            .unwrap()
            .may_match_key(&odd)
    );
}

#[test]
fn whitelist_or_blacklist_and() {
    let wl = vec![
        ff!(verdict: vec![Verdict::Dropped as i32]),
        ff!(protocol: s(&["http"])),
    ];
    let bl = vec![ff!(ip_version: vec![IpVersion::IPv6 as i32])];
    let f = FlowFilters::compile(&wl, &bl).unwrap();
    let got = [tcp_flow(), drop_flow(), http_flow(), dns_flow()].map(|fl| f.matches(&fl));
    assert_eq!(got, [false, false, true, false]);

    let only_bl = FlowFilters::compile(&[], &bl).unwrap();
    let got = [tcp_flow(), drop_flow(), http_flow(), dns_flow()].map(|fl| only_bl.matches(&fl));
    assert_eq!(got, [true, false, true, true]);
}

#[test]
fn bad_filters_are_errors() {
    let bad: Vec<(FlowFilter, &str)> = vec![
        (ff!(source_ip: s(&["10.0.0.300"])), "source_ip"),
        (ff!(destination_port: s(&["http"])), "destination_port"),
        (ff!(http_status_code: s(&["5xx"])), "http_status_code"),
        (ff!(http_path: s(&["("])), "http_path"),
        (ff!(protocol: s(&["quic"])), "protocol"),
        (ff!(source_label: s(&["app in (a"])), "source_label"),
        // Hubble's FQDN and node name patterns: only `-.0-9_a-z*`.
        (ff!(source_fqdn: s(&["a,b"])), "invalid rune"),
        (
            ff!(destination_fqdn: s(&["x\u{1b}[31m.com"])),
            "invalid rune",
        ),
        (ff!(destination_fqdn: s(&[" . "])), "empty pattern"),
        (ff!(destination_fqdn: s(&["a.."])), "multiple trailing dots"),
        (ff!(node_name: s(&[""])), "empty pattern"),
        (ff!(node_name: s(&["a/b/c"])), "too many slashes"),
        (ff!(node_name: s(&["kind:worker"])), "invalid rune"),
        (
            ff!(experimental: Some(crate::flow::flow_filter::Experimental { cel_expression: s(&["_flow.verdict =="]) })),
            "cel_expression",
        ),
    ];
    for (f, needle) in bad {
        let err = FlowFilters::compile(&[f], &[]).unwrap_err();
        assert!(
            err.to_string().contains(needle),
            "{err} should mention {needle}"
        );
    }
}

#[test]
fn url_path_extraction() {
    // As Go's url.ParseRequestURI reads them, in Hubble's path filter.
    let path = |u| url_path(u).map(|p| p.into_owned());
    assert_eq!(path("http://a:80/x/y?z=1").as_deref(), Some("/x/y"));
    assert_eq!(path("http://a").as_deref(), Some(""));
    assert_eq!(path("/p#frag").as_deref(), Some("/p#frag"));
    assert_eq!(path("/a%20b?").as_deref(), Some("/a b"));
    assert_eq!(path("http:/x").as_deref(), Some("/x"));
    assert_eq!(path("mailto:x@y").as_deref(), Some(""));
    assert_eq!(path("*").as_deref(), Some("*"));
    assert_eq!(path("https://u:p@[::1]:8443/v6").as_deref(), Some("/v6"));
    for refused in [
        "",
        "x/y",
        ":x",
        "http://evil/\u{1b}[2J",
        "/a\rb",
        "/bad%zz",
        "/bad%4",
        "http://h:80x/p",
        "http://h h/p",
        "http://[::1/p",
    ] {
        assert_eq!(path(refused), None, "{refused:?}");
    }
}

#[test]
fn non_flows_pass_as_in_hubbles_reader() {
    // A lost event or node status is filtered as a missing flow: the
    // filters that refuse a missing flow outright never match it, so in a
    // denylist they let it through; the others read it as empty.
    let deny = |f: FlowFilter| FlowFilters::compile(&[], &[f]).unwrap().matches_non_flow();
    let allow = |f: FlowFilter| FlowFilters::compile(&[f], &[]).unwrap().matches_non_flow();
    assert!(deny(ff!(verdict: vec![Verdict::Unknown as i32])));
    assert!(deny(ff!(traffic_direction: vec![0])));
    assert!(deny(ff!(uuid: s(&[""]))));
    assert!(deny(ff!(ip_version: vec![0])));
    assert!(!deny(ff!(destination_label: s(&["!app"]))));
    assert!(!deny(ff!(trace_id: s(&[""]))));
    assert!(!deny(ff!(encrypted: vec![false])));
    assert!(!allow(ff!(verdict: vec![Verdict::Unknown as i32])));
    assert!(allow(ff!(encrypted: vec![false])));
    assert!(!allow(ff!(reply: vec![false])));
}

#[test]
fn label_selectors_as_kubernetes_parses_them() {
    let labels: Vec<String> = [
        "k8s:app=cart",
        "k8s:version=3",
        "reserved:world",
        "tier=web",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let sel = |s: &str| Selector::parse("source_label", s);
    for (s, want) in [
        ("app=cart", true),
        ("k8s:app==cart", true),
        ("container:app=cart", false),
        ("app in (web, cart)", true),
        ("app notin (cart)", false),
        ("!app", false),
        ("!k8s:nope,reserved:world", true),
        ("tier=web", true),
        ("unspec:tier=web", true),
        ("version>2", true),
        ("version<3", false),
        ("app in (,)", false),
        ("app=", false),
        ("", true),
    ] {
        let got = sel(s)
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .matches(&labels);
        assert_eq!(got, want, "{s:?}");
    }
    // Refused as Kubernetes refuses them (the key is checked with its
    // source, `any.` when none is given).
    for s in [
        "  ",
        "===",
        "app=ca rt",
        "app=-cart",
        "app=cart!",
        "app in (cart",
        ",app",
        "app,",
        "reserved:",
        ":app=cart",
        "version>x",
        &format!("{}=b", "a".repeat(64)),
        &format!("app={}", "x".repeat(64)),
        "K8S.io/App=x",
    ] {
        assert!(sel(s).is_err(), "{s:?} must be refused");
    }
}
