use std::sync::Arc;

use webb_proto::flow::{
    CiliumEventType, Dns, DropReason, Endpoint, EndpointData, Flow, FlowType, Http, IcmPv4, Ip,
    L7FlowType, Layer4, Layer7, Tcp, TcpFlags, TrafficDirection, Verdict, Workload, layer4, layer7,
};

use super::*;
use crate::observer::Hub;

fn ep(ns: &str, pod: &str, app: &str) -> Option<Endpoint> {
    Some(
        EndpointData {
            namespace: ns.into(),
            pod_name: pod.into(),
            labels: vec![format!("k8s:app={app}")],
            workloads: vec![Workload {
                name: app.into(),
                kind: "Deployment".into(),
            }],
            identity: 1000,
            ..Default::default()
        }
        .into(),
    )
}

fn tcp_flow(verdict: Verdict, syn: bool, ack: bool) -> Flow {
    Flow {
        verdict: verdict as i32,
        drop_reason_desc: if verdict == Verdict::Dropped {
            DropReason::PolicyDenied as i32
        } else {
            0
        },
        event_type: Some(CiliumEventType {
            r#type: if verdict == Verdict::Dropped { 1 } else { 4 },
            sub_type: if verdict == Verdict::Dropped { 133 } else { 0 },
        }),
        r#type: FlowType::L3L4 as i32,
        ip: Some(Ip {
            source: "10.0.0.1".into(),
            destination: "10.0.0.2".into(),
            ip_version: 1,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(Tcp {
                source_port: 40000,
                destination_port: 8080,
                flags: Some(TcpFlags {
                    syn,
                    ack,
                    ..Default::default()
                }),
            })),
        }),
        source: ep("shop", "frontend-1", "frontend"),
        destination: ep("shop", "db-0", "db"),
        ..Default::default()
    }
}

fn l7_flow(record: layer7::Record, response: bool, latency_ns: u64) -> Flow {
    Flow {
        verdict: Verdict::Forwarded as i32,
        event_type: Some(CiliumEventType {
            r#type: 129,
            sub_type: 0,
        }),
        r#type: FlowType::L7 as i32,
        traffic_direction: TrafficDirection::Ingress as i32,
        l7: Some(Box::new(Layer7 {
            r#type: if response {
                L7FlowType::Response
            } else {
                L7FlowType::Request
            } as i32,
            latency_ns,
            record: Some(record),
            webb_truncated: false,
            webb_tls: None,
        })),
        source: ep("shop", "frontend-1", "frontend"),
        destination: ep("shop", "cart-1", "cart"),
        ..Default::default()
    }
}

fn metrics(spec: &str, max: usize) -> Arc<Metrics> {
    Arc::new(Metrics::new(
        options::parse(spec).unwrap(),
        max,
        Arc::new(Hub::new(16)),
    ))
}

/// The sample lines of a family, sorted, without HELP/TYPE.
fn samples(text: &str, name: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

#[test]
fn hubble_families_in_openmetrics_text() {
    let m = metrics(
        "flow:sourceContext=namespace;destinationContext=workload-name drop tcp icmp port-distribution dns http",
        100,
    );
    let icmp = Flow {
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::IcmPv4(IcmPv4 { r#type: 8, code: 0 })),
        }),
        ..tcp_flow(Verdict::Forwarded, false, false)
    };
    let dns_q = l7_flow(
        layer7::Record::Dns(Dns {
            query: "nope.shop.".into(),
            qtypes: vec!["A".into()],
            ..Default::default()
        }),
        false,
        0,
    );
    let dns_nx = l7_flow(
        layer7::Record::Dns(Dns {
            query: "nope.shop.".into(),
            qtypes: vec!["A".into()],
            rcode: 3,
            ..Default::default()
        }),
        true,
        2_000_000,
    );
    let http_500 = l7_flow(
        layer7::Record::Http(Http {
            code: 500,
            method: "GET".into(),
            url: "http://cart/x".into(),
            protocol: "HTTP/1.1".into(),
            headers: vec![],
        }),
        true,
        30_000_000,
    );
    m.observe(&[
        tcp_flow(Verdict::Forwarded, true, false),
        tcp_flow(Verdict::Forwarded, true, true),
        tcp_flow(Verdict::Dropped, true, false),
        tcp_flow(Verdict::Dropped, true, false),
        icmp,
        dns_q,
        dns_nx,
        http_500,
    ]);
    let text = m.encode();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE hubble_flows_processed counter"));
    assert_eq!(
        samples(&text, "hubble_drop_total"),
        [r#"hubble_drop_total{reason="POLICY_DENIED",protocol="TCP"} 2"#]
    );
    assert!(
        samples(&text, "hubble_flows_processed_total").contains(
            &r#"hubble_flows_processed_total{source="shop",destination="db",type="Drop",subtype="",verdict="DROPPED"} 2"#
                .to_owned()
        ),
        "{text}"
    );
    assert!(text.contains(r#"type="Trace",subtype="to-endpoint",verdict="FORWARDED"} 3"#));
    assert!(text.contains(r#"type="L7",subtype="DNS",verdict="FORWARDED"} 2"#));
    // Dropped packets are not TCP handshakes.
    assert_eq!(
        samples(&text, "hubble_tcp_flags_total"),
        [
            r#"hubble_tcp_flags_total{flag="SYN",family="IPv4"} 1"#,
            r#"hubble_tcp_flags_total{flag="SYN-ACK",family="IPv4"} 1"#
        ]
    );
    assert!(text.contains(r#"hubble_icmp_total{family="IPv4",type="EchoRequest"} 1"#));
    assert!(text.contains(r#"hubble_port_distribution_total{protocol="TCP",port="8080"} 2"#));
    assert!(text.contains(r#"hubble_dns_queries_total{rcode="",qtypes="A",ips_returned=""} 1"#));
    assert!(text.contains(
        r#"hubble_dns_responses_total{rcode="Non-Existent Domain",qtypes="A",ips_returned="0"} 1"#
    ));
    assert!(
        text.contains(
            r#"hubble_http_responses_total{method="GET",status="500",reporter="server"} 1"#
        )
    );
    // 30 ms falls in the 0.05 bucket and every one above it.
    assert!(text.contains(
        r#"hubble_http_request_duration_seconds_bucket{le="0.025",method="GET",reporter="server"} 0"#
    ));
    assert!(text.contains(
        r#"hubble_http_request_duration_seconds_bucket{le="0.05",method="GET",reporter="server"} 1"#
    ));
    assert!(text.contains(
        r#"hubble_http_request_duration_seconds_bucket{le="+Inf",method="GET",reporter="server"} 1"#
    ));
    assert!(text.contains(
        r#"hubble_http_request_duration_seconds_count{method="GET",reporter="server"} 1"#
    ));
    assert!(
        text.contains(r#"webb_dns_query_duration_seconds_count{rcode="Non-Existent Domain"} 1"#)
    );
    assert!(text.contains(r#"hubble_lost_events_total{source="perf_event_ring_buffer"} 0"#));
    assert!(text.contains("webb_ring_capacity 16"));
}

#[test]
fn series_beyond_the_cap_fold_into_other() {
    let m = metrics("flow:sourceContext=pod-name", 3);
    let flows: Vec<Flow> = (0..10)
        .map(|i| Flow {
            source: ep("shop", &format!("pod-{i}"), "x"),
            ..tcp_flow(Verdict::Forwarded, true, false)
        })
        .collect();
    m.observe(&flows);
    let text = m.encode();
    let s = samples(&text, "hubble_flows_processed_total");
    assert_eq!(s.len(), 4, "{s:?}");
    assert!(s.contains(
        &r#"hubble_flows_processed_total{source="other",type="other",subtype="other",verdict="other"} 7"#
            .to_owned()
    ));
    assert!(
        text.contains(r#"webb_metrics_series_folded_total{family="hubble_flows_processed"} 7"#)
    );
}

#[test]
fn contexts_take_the_first_non_empty_alternative_and_no_ips_unless_asked() {
    let m = metrics(
        "drop:sourceContext=pod|reserved-identity;destinationContext=dns|app",
        100,
    );
    let mut world = tcp_flow(Verdict::Dropped, true, false);
    world.source = Some(
        EndpointData {
            identity: 2,
            ..Default::default()
        }
        .into(),
    );
    world.destination_names = vec!["db.example".into()];
    m.observe(&[world, tcp_flow(Verdict::Dropped, true, false)]);
    let text = m.encode();
    let s = samples(&text, "hubble_drop_total");
    assert_eq!(
        s,
        [
            r#"hubble_drop_total{source="reserved:world",destination="db.example",reason="POLICY_DENIED",protocol="TCP"} 1"#,
            r#"hubble_drop_total{source="shop/frontend-1",destination="db",reason="POLICY_DENIED",protocol="TCP"} 1"#,
        ]
    );
    assert!(!text.contains("10.0.0."));
}

#[test]
fn without_handlers_only_the_agent_s_own_metrics() {
    let m = metrics("", 10);
    m.observe(&[tcp_flow(Verdict::Forwarded, true, false)]);
    let text = m.encode();
    assert!(!text.contains("hubble_flows_processed"));
    assert!(text.contains("hubble_lost_events_total"));
    assert!(text.contains("webb_flows_seen_total"));
}

#[test]
fn two_handlers_of_one_kind_share_the_family() {
    let m = metrics("flow flow:sourceContext=namespace", 10);
    m.observe(&[tcp_flow(Verdict::Forwarded, true, false)]);
    let text = m.encode();
    assert_eq!(
        text.matches("# TYPE hubble_flows_processed counter")
            .count(),
        1
    );
    let s = samples(&text, "hubble_flows_processed_total");
    assert_eq!(s.len(), 2, "{s:?}");
    assert!(s.iter().any(|l| l.contains(r#"source="shop""#)));
}

/// Every metric the shipped Grafana dashboard queries is one agent or relay
/// serves.
#[test]
fn the_grafana_dashboard_queries_only_metrics_we_serve() {
    let dashboard = include_str!("../../../deploy/grafana/webb-dashboard.json");
    let relay = include_str!("../../../relay/src/metrics.rs");
    let m = metrics(
        "flow:sourceContext=namespace;destinationContext=namespace drop:sourceContext=namespace tcp icmp port-distribution dns http",
        100,
    );
    let text = m.encode();
    let json: serde_json::Value = serde_json::from_str(dashboard).expect("dashboard JSON");
    let mut checked = 0;
    for panel in json["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("hubble_") || w.starts_with("webb_"))
            {
                let family = name.trim_end_matches("_bucket").trim_end_matches("_total");
                let served = if family.starts_with("webb_relay_") {
                    relay.contains(&format!("\"{family}\""))
                } else {
                    text.contains(&format!("# TYPE {family} "))
                };
                assert!(served, "{name} in {expr:?} is not served");
                checked += 1;
            }
        }
    }
    assert!(checked >= 15);
}

/// A deterministic mix of L3/L4 and L7 flows: shared and one-off endpoints,
/// every verdict the agent emits, TCP flag combinations, UDP to many ports,
/// ICMP, IPv6 and replies.
fn mixed_flows(n: u64) -> Vec<Flow> {
    let shared = [
        ep("shop", "frontend-1", "frontend"),
        ep("shop", "cart-1", "cart"),
        ep("shop", "db-0", "db"),
        ep("kube-system", "coredns-1", "coredns"),
    ];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let r = next();
            let mut f = tcp_flow(
                if r % 7 == 0 {
                    Verdict::Dropped
                } else {
                    Verdict::Forwarded
                },
                r & 2 != 0,
                r & 4 != 0,
            );
            f.source = shared[(r >> 8) as usize % 4].clone();
            f.destination = if r % 11 == 0 {
                // Equal content, separate allocation: a miss, same series.
                ep("shop", "db-0", "db")
            } else {
                shared[(r >> 12) as usize % 4].clone()
            };
            if r % 19 == 0 {
                // A verdict the event type does not imply.
                f.verdict = Verdict::Audit as i32;
            }
            if r % 13 == 0 {
                f.drop_reason_desc = DropReason::InvalidPacketDropped as i32;
            }
            if let Some(Layer4 {
                protocol: Some(layer4::Protocol::Tcp(t)),
            }) = f.l4.as_mut()
                && let Some(fl) = t.flags.as_mut()
            {
                fl.fin = r & 8 != 0;
                fl.rst = r & 16 != 0;
            }
            match (r >> 20) % 5 {
                0 => {
                    f.l4 = Some(Layer4 {
                        protocol: Some(layer4::Protocol::Udp(webb_proto::flow::Udp {
                            source_port: 5353,
                            destination_port: 1000 + (r >> 24) as u32 % 40,
                        })),
                    });
                }
                1 => {
                    f.l4 = Some(Layer4 {
                        protocol: Some(layer4::Protocol::IcmPv4(IcmPv4 {
                            r#type: [0, 3, 8][(r >> 24) as usize % 3],
                            code: (r >> 28) as u32 % 4,
                        })),
                    });
                }
                _ => {}
            }
            if r & 32 != 0 {
                f.ip.as_mut().unwrap().ip_version = 2;
            }
            f.is_reply = match (r >> 6) % 3 {
                0 => None,
                k => Some(webb_proto::wkt::BoolValue { value: k == 2 }),
            };
            if i % 17 == 0 {
                f = l7_flow(
                    layer7::Record::Http(Http {
                        code: [200, 404, 503][(r >> 9) as usize % 3],
                        method: "GET".into(),
                        protocol: "HTTP/1.1".into(),
                        ..Default::default()
                    }),
                    r & 1 != 0,
                    (r >> 16) % 1_000_000_000,
                );
                f.source = shared[0].clone();
            }
            f
        })
        .collect()
}

#[test]
fn the_memo_counts_exactly_what_the_label_path_counts() {
    const ALL: &str = "flow:sourceContext=namespace|pod;destinationContext=workload \
        drop:sourceContext=app;destinationContext=namespace tcp icmp port-distribution \
        dns:query http";
    for max_series in [2000, 25] {
        let flows = mixed_flows(20_000);
        let memo = metrics(ALL, max_series);
        let plain = Arc::new(
            Metrics::new(
                options::parse(ALL).unwrap(),
                max_series,
                Arc::new(Hub::new(16)),
            )
            .without_memo(),
        );
        for batch in flows.chunks(512) {
            memo.observe(batch);
            plain.observe(batch);
        }
        let remembered = memo.memo_len();
        assert!(
            remembered > 10 && remembered < 15_000,
            "the memo is used: {remembered} signatures for 20,000 flows"
        );
        assert_eq!(plain.memo_len(), 0);
        assert_eq!(memo.encode(), plain.encode(), "max_series {max_series}");
    }
}

#[test]
fn contexts_beyond_the_endpoints_turn_the_memo_off() {
    for spec in [
        "flow:sourceContext=dns|namespace",
        "drop:destinationContext=ip",
    ] {
        let m = metrics(spec, 100);
        m.observe(&mixed_flows(100));
        assert_eq!(m.memo_len(), 0, "{spec}");
    }
}

#[test]
fn the_flow_store_is_measured() {
    let dir = std::env::temp_dir().join(format!("webb-metrics-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = crate::store::FlowStore::open(crate::store::Options {
        dir: dir.clone(),
        max_size: 1 << 30,
        max_age: std::time::Duration::from_secs(3600),
    })
    .unwrap();
    let flows: Vec<_> = (0..3)
        .map(|_| crate::observer::flow_item(tcp_flow(Verdict::Forwarded, true, false), "n1"))
        .collect();
    store.append(0, &flows);
    let m = Arc::new(
        Metrics::new(options::parse("flow").unwrap(), 100, Arc::new(Hub::new(16)))
            .with_flow_store(Some(store.clone())),
    );
    let text = m.encode();
    assert_eq!(
        samples(&text, "webb_flow_store_flows"),
        ["webb_flow_store_flows 3"]
    );
    assert_eq!(
        samples(&text, "webb_flow_store_not_stored"),
        ["webb_flow_store_not_stored_total 0"]
    );
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_exporter_is_measured() {
    let c = Arc::new(crate::export::Counters::default());
    c.exported.store(5, Ordering::Relaxed);
    c.dropped.store(2, Ordering::Relaxed);
    let m = Arc::new(
        Metrics::new(options::parse("flow").unwrap(), 100, Arc::new(Hub::new(16)))
            .with_exporter(Some(c)),
    );
    let text = m.encode();
    assert_eq!(
        samples(&text, "webb_export_flows"),
        ["webb_export_flows_total 5"]
    );
    assert_eq!(
        samples(&text, "webb_export_dropped"),
        ["webb_export_dropped_total 2"]
    );
    assert_eq!(
        samples(&text, "webb_export_rotations"),
        ["webb_export_rotations_total 0"]
    );
}
