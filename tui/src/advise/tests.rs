use k8s_openapi::api::networking::v1::NetworkPolicy;
use webb_proto::{
    flow::{EndpointData, Ip, Layer4, Tcp, TcpFlags, Udp, Workload, layer4::Protocol},
    wkt::BoolValue,
};

use super::*;

fn pod(ns: &str, name: &str, workload: &str, labels: &[&str]) -> Endpoint {
    EndpointData {
        namespace: ns.into(),
        pod_name: name.into(),
        workloads: vec![Workload {
            name: workload.into(),
            kind: "Deployment".into(),
        }],
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        ..Default::default()
    }
    .into()
}

fn world() -> Endpoint {
    EndpointData {
        identity: 2,
        labels: vec!["reserved:world".into()],
        ..Default::default()
    }
    .into()
}

fn flow(src: (&Endpoint, &str, u16), dst: (&Endpoint, &str, u16), l4: &str) -> Flow {
    let protocol = match l4 {
        "tcp-syn" | "tcp-ack" => Protocol::Tcp(Tcp {
            source_port: src.2.into(),
            destination_port: dst.2.into(),
            flags: Some(TcpFlags {
                syn: true,
                ack: l4 == "tcp-ack",
                ..Default::default()
            }),
        }),
        _ => Protocol::Udp(Udp {
            source_port: src.2.into(),
            destination_port: dst.2.into(),
        }),
    };
    Flow {
        time: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        verdict: Verdict::Forwarded as i32,
        r#type: FlowType::L3L4 as i32,
        ip: Some(Ip {
            source: src.1.into(),
            destination: dst.1.into(),
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(protocol),
        }),
        source: Some(src.0.clone()),
        destination: Some(dst.0.clone()),
        is_reply: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

fn policies(yaml: &str) -> Vec<NetworkPolicy> {
    yaml.split("\n---\n")
        .skip(1)
        .filter(|doc| doc.contains("kind: NetworkPolicy"))
        .map(|doc| serde_yaml_ng::from_str(doc).unwrap_or_else(|e| panic!("{e}:\n{doc}")))
        .collect()
}

#[test]
fn each_workload_gets_ingress_and_egress_from_what_it_was_seen_doing() {
    let fe = pod(
        "shop",
        "frontend-5f-x",
        "frontend",
        &[
            "k8s:app=frontend",
            "k8s:pod-template-hash=5f",
            "k8s:io.kubernetes.pod.namespace=shop",
        ],
    );
    let db = pod("shop", "db-0", "db", &["k8s:app=db", "k8s:tier=data"]);
    let prom = pod(
        "monitoring",
        "prom-0",
        "prometheus",
        &["k8s:app=prometheus"],
    );
    let mut a = Advisor::new("shop", None);
    // frontend -> db:5432, twice on one tuple (two points): one connection.
    let c = flow((&fe, "10.0.0.1", 40000), (&db, "10.0.0.2", 5432), "tcp-syn");
    a.add(&c);
    a.add(&c);
    // A mid-connection packet of a Hubble flow starts nothing.
    a.add(&flow(
        (&fe, "10.0.0.1", 40001),
        (&db, "10.0.0.2", 5432),
        "tcp-ack",
    ));
    // prometheus (another namespace) scrapes db; frontend asks the world.
    a.add(&flow(
        (&prom, "10.0.9.9", 50000),
        (&db, "10.0.0.2", 9187),
        "tcp-syn",
    ));
    a.add(&flow(
        (&fe, "10.0.0.1", 50001),
        (&world(), "93.184.216.34", 443),
        "tcp-syn",
    ));
    a.add(&flow(
        (&fe, "10.0.0.1", 50002),
        (&world(), "93.184.216.34", 443),
        "tcp-syn",
    ));
    assert_eq!(a.connections, 4);
    let yaml = a.render("a window");
    let ps = policies(&yaml);
    assert_eq!(ps.len(), 2, "{yaml}");
    let by_name = |n: &str| {
        ps.iter()
            .find(|p| p.metadata.name.as_deref() == Some(n))
            .unwrap_or_else(|| panic!("{n} in {yaml}"))
    };
    let db_p = by_name("webb-advise-db").spec.as_ref().expect("spec");
    let sel = db_p.pod_selector.as_ref().expect("selector");
    assert_eq!(
        sel.match_labels
            .as_ref()
            .expect("labels")
            .iter()
            .collect::<Vec<_>>(),
        [
            (&"app".to_owned(), &"db".to_owned()),
            (&"tier".to_owned(), &"data".to_owned())
        ]
    );
    let ingress = db_p.ingress.as_ref().expect("ingress");
    assert_eq!(ingress.len(), 2, "{yaml}");
    // Same namespace: a pod selector alone, without the rollout's hash.
    let from_fe = &ingress[1].from.as_ref().expect("from")[0];
    assert!(from_fe.namespace_selector.is_none(), "{yaml}");
    assert_eq!(
        from_fe
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone()),
        Some([("app".to_owned(), "frontend".to_owned())].into())
    );
    let port = &ingress[1].ports.as_ref().expect("ports")[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    // Another namespace: by its name label.
    let from_prom = &ingress[0].from.as_ref().expect("from")[0];
    assert_eq!(
        from_prom
            .namespace_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone()),
        Some(
            [(
                "kubernetes.io/metadata.name".to_owned(),
                "monitoring".to_owned()
            )]
            .into()
        )
    );
    // db reached out to nothing: only DNS.
    assert_eq!(db_p.egress.as_ref().expect("egress").len(), 1, "{yaml}");
    assert_eq!(
        db_p.policy_types.as_deref(),
        Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
    );
    let fe_p = by_name("webb-advise-frontend").spec.as_ref().expect("spec");
    assert_eq!(fe_p.ingress.as_deref(), Some(&[][..]), "{yaml}");
    let egress = fe_p.egress.as_ref().expect("egress");
    assert_eq!(egress.len(), 3, "DNS, db, the world address: {yaml}");
    assert!(
        yaml.contains("\"93.184.216.34/32\"") && yaml.contains("2 connection(s)"),
        "{yaml}"
    );
    // The agent's parser reads it as well.
    assert!(
        yaml.contains("# from monitoring/prometheus: 1 connection(s)"),
        "{yaml}"
    );
}

#[test]
fn one_workload_only_and_nothing_seen_says_so() {
    let fe = pod("shop", "fe-1", "frontend", &["k8s:app=frontend"]);
    let db = pod("shop", "db-0", "db", &["k8s:app=db"]);
    let mut a = Advisor::new("shop", Some("db"));
    a.add(&flow(
        (&fe, "10.0.0.1", 40000),
        (&db, "10.0.0.2", 53),
        "udp",
    ));
    let yaml = a.render("w");
    assert_eq!(policies(&yaml).len(), 1, "{yaml}");
    assert!(yaml.contains("{protocol: UDP, port: 53}"), "{yaml}");
    let empty = Advisor::new("other", None).render("w");
    assert!(empty.contains("nothing to advise"), "{empty}");
    assert!(policies(&empty).is_empty());
}

#[test]
fn names_that_are_yaml_keywords_or_carry_control_characters_stay_strings() {
    let fe = pod(
        "shop",
        "fe-1",
        "fe",
        &["k8s:enabled=true", "k8s:version=1.10"],
    );
    let odd = pod("sh\u{1b}[2Jop", "x-1", "x\nname", &["k8s:app=x"]);
    let mut a = Advisor::new("shop", None);
    a.add(&flow(
        (&odd, "10.0.0.9", 1000),
        (&fe, "10.0.0.1", 80),
        "tcp-syn",
    ));
    let yaml = a.render("w");
    let ps = policies(&yaml);
    let sel = ps[0]
        .spec
        .as_ref()
        .and_then(|s| s.pod_selector.as_ref())
        .expect("sel");
    assert_eq!(
        sel.match_labels.clone(),
        Some(
            [
                ("enabled".to_owned(), "true".to_owned()),
                ("version".to_owned(), "1.10".to_owned())
            ]
            .into()
        )
    );
    assert!(!yaml.contains('\u{1b}'), "{yaml}");
}
