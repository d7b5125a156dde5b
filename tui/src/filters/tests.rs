use clap::{Args as _, Command, FromArgMatches as _};

use super::*;

fn parse(args: &[&str]) -> Result<FilterArgs, clap::Error> {
    let cmd = FilterArgs::augment_args(Command::new("observe"));
    let m = cmd.try_get_matches_from(std::iter::once("observe").chain(args.iter().copied()))?;
    FilterArgs::from_arg_matches(&m)
}

fn ok(args: &[&str]) -> FilterArgs {
    parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[test]
fn no_flags_no_filters() {
    assert!(ok(&[]).is_empty());
}

#[test]
fn plain_flags_make_one_filter_and_repeats_are_ored() {
    let f = ok(&[
        "--verdict",
        "DROPPED",
        "--verdict",
        "FORWARDED",
        "--protocol",
        "TCP",
    ]);
    assert_eq!(f.allowlist.len(), 1);
    assert_eq!(
        f.allowlist[0].verdict,
        vec![Verdict::Dropped as i32, Verdict::Forwarded as i32]
    );
    // As given, as Hubble sends it (the match ignores case).
    assert_eq!(f.allowlist[0].protocol, vec!["TCP"]);
    // Verdict names are Hubble's, in capitals.
    assert!(parse(&["--verdict", "forwarded"]).is_err());
    assert!(f.denylist.is_empty());
}

#[test]
fn bare_flag_means_either_side() {
    let f = ok(&["--ip", "10.0.0.1", "--verdict", "DROPPED"]);
    assert_eq!(f.allowlist.len(), 2);
    assert_eq!(f.allowlist[0].source_ip, vec!["10.0.0.1"]);
    assert!(f.allowlist[0].destination_ip.is_empty());
    assert_eq!(f.allowlist[1].destination_ip, vec!["10.0.0.1"]);
    // Flow-wide flags land in both halves.
    assert_eq!(f.allowlist[0].verdict, f.allowlist[1].verdict);
}

#[test]
fn from_and_to_constrain_every_filter() {
    let f = ok(&["--from-pod", "shop/frontend", "--to-port", "80"]);
    assert_eq!(f.allowlist.len(), 1);
    assert_eq!(f.allowlist[0].source_pod, vec!["shop/frontend"]);
    assert_eq!(f.allowlist[0].destination_port, vec!["80"]);
}

#[test]
fn namespace_and_bare_pod_combine() {
    let f = ok(&["-n", "shop", "--pod", "cart"]);
    assert_eq!(f.allowlist.len(), 2);
    assert_eq!(f.allowlist[0].source_pod, vec!["shop/cart"]);
    assert_eq!(f.allowlist[1].destination_pod, vec!["shop/cart"]);
    let f = ok(&["--to-namespace", "shop"]);
    assert_eq!(f.allowlist[0].destination_pod, vec!["shop/"]);
    let f = ok(&[
        "--from-namespace",
        "kube-system",
        "--from-pod",
        "kube-system/dns",
    ]);
    assert_eq!(f.allowlist[0].source_pod, vec!["kube-system/dns"]);
    // A pod named in another namespace than the one given, and flags
    // Hubble does not combine, are refused as Hubble refuses them.
    let err = parse(&["--from-namespace", "a", "--from-pod", "kube-system/dns"]).unwrap_err();
    assert!(err.to_string().contains("namespace conflict"), "{err}");
    let err = parse(&["-n", "shop", "--to-pod", "db"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("filters --to-pod and --namespace cannot be combined"),
        "{err}"
    );
}

#[test]
fn not_negates_only_the_next_flag() {
    let f = ok(&["--not", "--verdict", "FORWARDED", "--protocol", "udp"]);
    assert_eq!(f.denylist.len(), 1);
    assert_eq!(f.denylist[0].verdict, vec![Verdict::Forwarded as i32]);
    assert!(f.denylist[0].protocol.is_empty());
    assert_eq!(f.allowlist[0].protocol, vec!["udp"]);
}

#[test]
fn types_with_sub_types() {
    let f = ok(&["--type", "trace:to-endpoint", "-t", "drop", "--type", "l7"]);
    let t = &f.allowlist[0].event_type;
    assert_eq!(
        t[0],
        EventTypeFilter {
            r#type: 4,
            match_sub_type: true,
            sub_type: 0
        }
    );
    assert_eq!(
        t[1],
        EventTypeFilter {
            r#type: 1,
            match_sub_type: false,
            sub_type: 0
        }
    );
    assert_eq!(t[2].r#type, 129);
}

#[test]
fn tcp_flags_headers_workloads_ip_versions() {
    let f = ok(&[
        "--tcp-flags",
        "SYN,ACK",
        "--http-header",
        "X-Env: prod",
        "--to-workload",
        "Deployment/cart",
        "-4",
    ]);
    let a = &f.allowlist[0];
    assert!(a.tcp_flags[0].syn && a.tcp_flags[0].ack && !a.tcp_flags[0].fin);
    assert_eq!(a.http_header[0].key, "X-Env");
    // Split at the first colon and kept as given, as Hubble does.
    assert_eq!(a.http_header[0].value, " prod");
    assert_eq!(a.destination_workload[0].kind, "Deployment");
    assert_eq!(a.ip_version, vec![IpVersion::IPv4 as i32]);
}

#[test]
fn raw_lists_are_added_as_they_are() {
    let f = ok(&[
        "--allowlist",
        r#"{"source_pod":["shop/"]}"#,
        "--denylist",
        r#"{"verdict":["DROPPED"]}"#,
    ]);
    assert_eq!(f.allowlist[0].source_pod, vec!["shop/"]);
    assert_eq!(f.denylist[0].verdict, vec![Verdict::Dropped as i32]);
    let listing = raw_listing(&f);
    assert!(
        listing.starts_with("allowlist:\n    - '{\"source_pod\":[\"shop/\"]}'\n"),
        "{listing}"
    );
}

#[test]
fn bad_values_name_the_flag_the_value_and_the_choices() {
    for (args, want) in [
        (
            &["--verdict", "FOO"][..],
            "--verdict: \"FOO\" is not a verdict; valid: FORWARDED",
        ),
        (&["--tcp-flags", "SYN,XYZ"][..], "--tcp-flags"),
        (&["--traffic-direction", "up"][..], "valid: ingress, egress"),
        (&["--allowlist", "{"][..], "--allowlist"),
        (&["--ip-trace-id", "0"][..], "--ip-trace-id"),
        (&["--http-header", "nocolon"][..], "--http-header"),
    ] {
        let err = parse(args).expect_err(&format!("{args:?} must fail"));
        assert_eq!(err.kind(), ErrorKind::ValueValidation, "{args:?}");
        let msg = err.to_string();
        assert!(msg.contains(want), "{args:?}: {msg}");
        assert_eq!(err.exit_code(), 2);
    }
    // What Hubble's CLI takes as given and its filter engine refuses: the
    // flags parse (so --print-raw-filters prints them) and compiling fails.
    for (args, want) in [
        (
            &["--ip", "10.0.0.300"][..],
            "\"10.0.0.300\" is not an IP address or CIDR",
        ),
        (&["--ip", " 10.0.0.1"][..], "is not an IP address"),
        (
            &["--to-port", "70000"][..],
            "\"70000\" is not a port number",
        ),
        (&["--to-port", "+80"][..], "is not a port number"),
        (&["--http-status", "6xx"][..], "\"6xx\""),
        (&["--http-status", "0+"][..], "\"0+\""),
        (&["--protocol", "quic"][..], "\"quic\" is not one of"),
        (&["--http-path", "("][..], "http_path"),
        (&["-l", "app in ("][..], "source_label"),
        (&["--fqdn", "a,b"][..], "invalid rune"),
        (&["--pod", ""][..], "name must not be empty"),
        (&["--cluster", ""][..], "name must not be empty"),
        (&["--node-name", ""][..], "empty pattern"),
        (&["--http-method", "get", "-t", "trace"][..], "'l7' events"),
    ] {
        let f = parse(args).unwrap_or_else(|e| panic!("{args:?} must parse: {e}"));
        let err = f
            .compile()
            .expect_err(&format!("{args:?} must not compile"));
        assert!(err.to_string().contains(want), "{args:?}: {err}");
    }
}

#[test]
fn built_filters_match_what_they_say() {
    use webb_proto::flow::{EndpointData, Flow, Ip};
    let flow = Flow {
        verdict: Verdict::Dropped as i32,
        ip: Some(Ip {
            source: "10.0.0.1".into(),
            destination: "10.0.0.2".into(),
            ..Default::default()
        }),
        source: Some(
            EndpointData {
                namespace: "shop".into(),
                pod_name: "frontend-1".into(),
                ..Default::default()
            }
            .into(),
        ),
        destination: Some(
            EndpointData {
                namespace: "shop".into(),
                pod_name: "db-0".into(),
                ..Default::default()
            }
            .into(),
        ),
        ..Default::default()
    };
    let m = |args: &[&str]| ok(args).compile().unwrap().matches(&flow);
    assert!(m(&["--verdict", "DROPPED"]));
    assert!(!m(&["--not", "--verdict", "DROPPED"]));
    assert!(m(&["--pod", "shop/db"]));
    assert!(m(&["--ip", "10.0.0.2"]));
    assert!(!m(&["--from-ip", "10.0.0.2"]));
    assert!(m(&["--to-pod", "shop/db"]));
    assert!(m(&["--to-namespace", "shop"]));
    assert!(m(&["-A"]));
    assert!(!m(&["--from-namespace", "other"]));
    assert!(m(&["--ip", "10.0.0.0/24", "--verdict", "DROPPED"]));
}

#[test]
fn all_namespaces_selects_pods_of_any_namespace_and_refuses_a_namespace() {
    // As Hubble: a pod of any namespace on one side.
    let f = ok(&["-A"]);
    assert_eq!(f.allowlist[0].source_pod, vec!["/"]);
    assert_eq!(f.allowlist[1].destination_pod, vec!["/"]);
    let err = parse(&["-A", "-n", "shop"]).unwrap_err();
    assert!(err.to_string().contains("cannot be combined"), "{err}");
}

#[test]
fn not_applies_to_the_next_flag_each_time() {
    // `--not` is repeated; each one moves the next flag into the denylist.
    let f = ok(&[
        "--not",
        "--namespace",
        "kube-system",
        "--not",
        "--protocol",
        "dns",
    ]);
    assert!(f.allowlist.is_empty());
    assert_eq!(f.denylist.len(), 2);
    assert_eq!(f.denylist[0].source_pod, vec!["kube-system/"]);
    assert_eq!(f.denylist[0].protocol, vec!["dns"]);
    assert!(parse(&["--verdict", "DROPPED", "--not"]).is_err());
    assert!(parse(&["--not", "--not", "--verdict", "DROPPED"]).is_err());
}

#[test]
fn hubble_1_19_flags() {
    let a = &ok(&["--snat-ip", "172.18.0.3"]).allowlist[0];
    assert_eq!(a.source_ip_xlated, vec!["172.18.0.3"]);
    let a = &ok(&["--ip-version", "none"]).allowlist[0];
    assert_eq!(a.ip_version, vec![IpVersion::IpNotUsed as i32]);
    let a = &ok(&["--encrypted"]).allowlist[0];
    assert_eq!(a.encrypted, vec![true]);
    let a = &ok(&["--workload", "StatefulSet/"]).allowlist[0];
    assert_eq!(a.source_workload[0].kind, "StatefulSet");
    assert!(a.source_workload[0].name.is_empty());
    let a = &ok(&["--cel-expression", "_flow.verdict == Verdict.DROPPED"]).allowlist[0];
    assert_eq!(
        a.experimental.as_ref().unwrap().cel_expression,
        vec!["_flow.verdict == Verdict.DROPPED"]
    );
    let a = &ok(&["--from-identity", "world"]).allowlist[0];
    assert_eq!(a.source_identity, vec![2]);
    assert!(parse(&["--encrypted", "--unencrypted"]).is_err());
    // webb's TLS filters.
    let a = &ok(&["--tls-sni", "*.example.com", "--tls-version", "1.3"]).allowlist[0];
    assert_eq!(a.webb_tls_sni, vec!["*.example.com"]);
    assert_eq!(a.webb_tls_version, vec!["1.3"]);
    assert_eq!(raw_listing(&ok(&[])), "{}\n");
}
