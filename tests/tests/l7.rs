//! End-to-end tests of L7 flows: a real dnsmasq and a real HTTP server
//! (Python's http.server) in lab pods, real `dig` and `curl` clients, the
//! real agent reading DNS and HTTP from the packets, and real gRPC queries
//! with the filters users type (`--protocol dns`, `--http-status 5+`,
//! `--to-fqdn`).

use std::time::Duration;

use webb_proto::flow::{Flow, FlowFilter, FlowType, L7FlowType, layer4::Protocol, layer7};
use webb_tests::{
    agent::{AgentProcess, binary},
    block_on, client,
    lab::{Lab, PodSpec},
    privileged,
    traffic::{Resolver, dns_server, http_server},
};

/// The test's own patience: every latency must be below it.
const TIMEOUT: Duration = Duration::from_secs(10);

fn dns(f: &Flow) -> Option<&webb_proto::flow::Dns> {
    match f.l7.as_ref()?.record.as_ref()? {
        layer7::Record::Dns(d) => Some(d),
        _ => None,
    }
}

fn http(f: &Flow) -> Option<&webb_proto::flow::Http> {
    match f.l7.as_ref()?.record.as_ref()? {
        layer7::Record::Http(h) => Some(h),
        _ => None,
    }
}

fn is_response(f: &Flow) -> bool {
    f.l7.as_ref()
        .is_some_and(|l| l.r#type == L7FlowType::Response as i32)
}

fn latency(f: &Flow) -> Duration {
    Duration::from_nanos(f.l7.as_ref().map_or(0, |l| l.latency_ns))
}

fn filter(f: impl FnOnce(&mut FlowFilter)) -> Vec<FlowFilter> {
    let mut x = FlowFilter::default();
    f(&mut x);
    vec![x]
}

#[test]
fn dns_and_http_from_real_servers_become_l7_flows() {
    let Some(_g) = privileged() else { return };
    let lab = Lab::new(&[
        PodSpec::new("shop", "client", "client"),
        PodSpec::new("shop", "web", "web"),
        PodSpec::new("kube-system", "coredns", "coredns"),
    ]);
    let (c, web, dnsp) = (lab.pod("client"), lab.pod("web"), lab.pod("coredns"));
    let _dns = dns_server(
        dnsp,
        "shop.lab",
        &[
            format!("--host-record=web.shop.lab,{},fd00::80", web.ip),
            "--cname=www.shop.lab,web.shop.lab".to_owned(),
        ],
    );
    let _http = http_server(web, 8080, 20);
    let _resolver = Resolver::new(c, &dnsp.ip.to_string(), "shop.lab");
    let agent = AgentProcess::start(&lab, "lab-node-1", &[]);
    let dns_ip = dnsp.ip.to_string();

    for (name, qtype, tcp) in [
        ("web.shop.lab", "A", false),
        ("web.shop.lab", "AAAA", false),
        ("www.shop.lab", "A", false),
        ("nope.shop.lab", "A", false),
        ("web.shop.lab", "A", true),
    ] {
        let mut args = vec![
            format!("@{dns_ip}"),
            name.to_owned(),
            qtype.to_owned(),
            "+tries=1".to_owned(),
            "+time=3".to_owned(),
        ];
        if tcp {
            args.push("+tcp".to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = c.run("dig", &args);
        assert!(out.status.success(), "dig {args:?}: {out:?}");
    }
    // curl resolves the name through the lab's dnsmasq, then makes three
    // requests on one connection, with secrets to redact.
    let out = c.run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            "-H",
            "Authorization: Bearer s3cret",
            "-H",
            "Cookie: sid=abc",
            "-o",
            "/dev/null",
            "http://web.shop.lab:8080/ok?token=abc&page=2",
            "-o",
            "/dev/null",
            "http://web.shop.lab:8080/missing",
            "-o",
            "/dev/null",
            "http://web.shop.lab:8080/fail",
        ],
    );
    assert!(out.status.success(), "curl: {out:?}");

    block_on(async {
        // --protocol dns
        let dns_flows = client::wait_for(
            &agent.addr,
            filter(|f| f.protocol = vec!["dns".into()]),
            TIMEOUT,
            |fl| {
                fl.iter().filter(|f| is_response(f)).count() >= 5
                    && fl.iter().any(|f| dns(f).is_some_and(|d| d.rcode == 3))
            },
        )
        .await;
        for f in &dns_flows {
            assert_eq!(f.r#type, FlowType::L7 as i32);
            assert_eq!(f.event_type.unwrap().r#type, 129);
            assert!(dns(f).is_some());
        }
        let a = dns_flows
            .iter()
            .find(|f| {
                is_response(f)
                    && dns(f).is_some_and(|d| d.query == "web.shop.lab." && d.qtypes == ["A"])
            })
            .expect("answer for web.shop.lab A");
        let d = dns(a).unwrap();
        assert_eq!(d.ips, [web.ip.to_string()]);
        assert_eq!((d.rcode, d.ttl), (0, 30));
        assert_eq!(a.source.as_ref().unwrap().pod_name, "coredns");
        assert_eq!(a.destination.as_ref().unwrap().pod_name, "client");
        assert_eq!(a.is_reply.map(|r| r.value), Some(true));
        assert!(latency(a) > Duration::ZERO && latency(a) < TIMEOUT);
        #[allow(deprecated)]
        let summary = a.summary.clone();
        assert_eq!(
            summary,
            format!(r#"DNS Answer "{}" TTL: 30 (Proxy web.shop.lab. A)"#, web.ip)
        );
        let query = dns_flows
            .iter()
            .find(|f| !is_response(f) && dns(f).is_some_and(|d| d.query == "web.shop.lab."))
            .expect("the query");
        assert_eq!(query.is_reply.map(|r| r.value), Some(false));

        let aaaa = dns_flows
            .iter()
            .find(|f| is_response(f) && dns(f).is_some_and(|d| d.qtypes == ["AAAA"]))
            .expect("AAAA answer");
        assert_eq!(dns(aaaa).unwrap().ips, ["fd00::80"]);
        let cname = dns_flows
            .iter()
            .find(|f| is_response(f) && dns(f).is_some_and(|d| d.query == "www.shop.lab."))
            .expect("CNAME answer");
        assert_eq!(dns(cname).unwrap().cnames, ["web.shop.lab."]);
        assert!(dns(cname).unwrap().rrtypes.contains(&"CNAME".to_owned()));
        let nx = dns_flows
            .iter()
            .find(|f| is_response(f) && dns(f).is_some_and(|d| d.query == "nope.shop.lab."))
            .expect("NXDOMAIN answer");
        assert_eq!(dns(nx).unwrap().rcode, 3);
        let over_tcp = dns_flows.iter().find(|f| {
            is_response(f)
                && matches!(
                    f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
                    Some(Protocol::Tcp(_))
                )
        });
        assert!(over_tcp.is_some(), "DNS over TCP answered");

        // --dns-query
        let only_www = client::flows(
            &agent.addr,
            filter(|f| f.dns_query = vec!["www\\.shop".into()]),
        )
        .await;
        assert!(!only_www.is_empty());
        assert!(
            only_www
                .iter()
                .all(|f| dns(f).unwrap().query == "www.shop.lab.")
        );

        // --protocol http: the three requests and their responses.
        let http_flows = client::wait_for(
            &agent.addr,
            filter(|f| f.protocol = vec!["http".into()]),
            TIMEOUT,
            |fl| {
                [200, 404, 500]
                    .iter()
                    .all(|code| fl.iter().any(|f| http(f).is_some_and(|h| h.code == *code)))
            },
        )
        .await;
        let get = http_flows
            .iter()
            .find(|f| !is_response(f) && http(f).is_some_and(|h| h.url.contains("/ok")))
            .expect("GET /ok");
        let h = http(get).unwrap();
        assert_eq!(h.method, "GET");
        assert_eq!(h.protocol, "HTTP/1.1");
        assert_eq!(
            h.url,
            "http://web.shop.lab:8080/ok?token=HUBBLE_REDACTED&page=HUBBLE_REDACTED"
        );
        let header = |f: &Flow, k: &str| {
            http(f)
                .unwrap()
                .headers
                .iter()
                .find(|x| x.key.eq_ignore_ascii_case(k))
                .map(|x| x.value.clone())
        };
        assert_eq!(
            header(get, "authorization").as_deref(),
            Some("HUBBLE_REDACTED")
        );
        assert_eq!(header(get, "cookie").as_deref(), Some("HUBBLE_REDACTED"));
        assert!(header(get, "user-agent").is_some_and(|v| v.starts_with("curl/")));
        assert_eq!(get.source.as_ref().unwrap().pod_name, "client");
        assert_eq!(get.destination.as_ref().unwrap().pod_name, "web");

        let ok = http_flows
            .iter()
            .find(|f| http(f).is_some_and(|h| h.code == 200))
            .unwrap();
        let okh = http(ok).unwrap();
        assert_eq!(
            (okh.method.as_str(), okh.url.contains("/ok")),
            ("GET", true)
        );
        assert_eq!(header(ok, "set-cookie").as_deref(), Some("HUBBLE_REDACTED"));
        // The server waits 20 ms before answering /ok.
        assert!(
            latency(ok) >= Duration::from_millis(20) && latency(ok) < TIMEOUT,
            "latency {:?}",
            latency(ok)
        );
        #[allow(deprecated)]
        let summary = ok.summary.clone();
        assert!(
            summary.starts_with("HTTP/1.1 200 ")
                && summary.contains("ms (GET http://web.shop.lab:8080/ok?"),
            "{summary}"
        );
        for f in http_flows.iter().filter(|f| is_response(f)) {
            assert!(latency(f) > Duration::ZERO && latency(f) < TIMEOUT);
        }
        let missing = http_flows
            .iter()
            .find(|f| http(f).is_some_and(|h| h.code == 404))
            .unwrap();
        assert!(http(missing).unwrap().url.ends_with("/missing"));

        // --http-status 5+, --http-method, --http-path
        let errors = client::flows(
            &agent.addr,
            filter(|f| f.http_status_code = vec!["5+".into()]),
        )
        .await;
        assert!(!errors.is_empty());
        assert!(errors.iter().all(|f| http(f).unwrap().code == 500));
        let paths = client::flows(
            &agent.addr,
            filter(|f| {
                f.http_method = vec!["get".into()];
                f.http_path = vec!["^/miss".into()];
            }),
        )
        .await;
        assert!(!paths.is_empty());
        assert!(
            paths
                .iter()
                .all(|f| http(f).unwrap().url.ends_with("/missing"))
        );

        // --http-url, --http-header
        let by_url = client::flows(
            &agent.addr,
            filter(|f| f.http_url = vec!["^http://web\\.shop\\.lab:8080/fail$".into()]),
        )
        .await;
        assert!(!by_url.is_empty());
        assert!(
            by_url
                .iter()
                .all(|f| http(f).unwrap().url.ends_with("/fail"))
        );
        let by_header = client::flows(
            &agent.addr,
            filter(|f| {
                f.http_header = vec![webb_proto::flow::HttpHeader {
                    key: "Accept".into(),
                    value: "*/*".into(),
                }]
            }),
        )
        .await;
        assert!(
            by_header.len() >= 3,
            "the three curl requests: {by_header:?}"
        );
        assert!(by_header.iter().all(|f| !is_response(f)));

        // --to-fqdn '*.shop.lab': the TCP connection curl made after its
        // lookup is named by the answer.
        let named = client::flows(
            &agent.addr,
            filter(|f| f.destination_fqdn = vec!["*.shop.lab".into()]),
        )
        .await;
        let syn = named
            .iter()
            .find(|f| {
                f.r#type == FlowType::L3L4 as i32
                    && matches!(f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
                        Some(Protocol::Tcp(t)) if t.destination_port == 8080
                            && t.flags.as_ref().is_some_and(|x| x.syn && !x.ack))
            })
            .unwrap_or_else(|| panic!("no TCP SYN to web named by DNS among {named:#?}"));
        // The client also resolved www.shop.lab, a CNAME to the same address.
        assert!(
            syn.destination_names.contains(&"web.shop.lab".to_owned()),
            "{syn:?}"
        );
        assert_eq!(syn.source.as_ref().unwrap().pod_name, "client");

        let st = client::status(&agent.addr).await;
        assert!(st.webb_l7_flows >= 10, "{st:?}");
    });

    // The command line shows them as Hubble does, with webb's latency.
    let out = std::process::Command::new(binary("webb"))
        .args([
            "observe",
            "--server",
            &agent.addr,
            "--protocol",
            "http",
            "--last",
            "100",
        ])
        .output()
        .expect("webb observe");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.lines().any(|l| l.contains("-> shop/web:8080")
            && l.contains("http-request FORWARDED (HTTP/1.1 GET http://web.shop.lab:8080/ok?token=HUBBLE_REDACTED")),
        "{text}"
    );
    assert!(
        // The latency is in Hubble's own summary (`500 3ms (GET ...)`).
        text.lines()
            .any(|l| l.contains("http-response FORWARDED (HTTP/1.1 500 ")
                && l.contains("ms (GET http://web.shop.lab:8080/")),
        "{text}"
    );
    drop(agent);
}

#[test]
fn a_head_longer_than_the_capture_length_is_shown_truncated() {
    let Some(_g) = privileged() else { return };
    let lab = Lab::new(&[
        PodSpec::new("shop", "client", "client"),
        PodSpec::new("shop", "web", "web"),
    ]);
    let (c, web) = (lab.pod("client"), lab.pod("web"));
    let _http = http_server(web, 8080, 0);
    let agent = AgentProcess::start(&lab, "lab-node-1", &["--l7-capture-bytes", "64"]);
    let url = format!("http://{}:8080/ok/with/a/long/path", web.ip);
    let out = c.run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-H",
            "X-Padding: 0123456789abcdef",
            &url,
        ],
    );
    assert!(out.status.success(), "curl: {out:?}");
    block_on(async {
        let fl = client::wait_for(
            &agent.addr,
            filter(|f| f.protocol = vec!["http".into()]),
            TIMEOUT,
            |fl| fl.iter().any(|f| !is_response(f)) && fl.iter().any(is_response),
        )
        .await;
        let req = fl.iter().find(|f| !is_response(f)).unwrap();
        let l7 = req.l7.as_ref().unwrap();
        assert!(l7.webb_truncated, "{req:?}");
        let h = http(req).unwrap();
        // The request line fits in 64 bytes; the headers after it do not.
        assert_eq!(h.method, "GET");
        assert_eq!(h.url, url);
        assert!(h.headers.iter().all(|x| x.key != "X-Padding"));
        let st = client::status(&agent.addr).await;
        assert!(
            st.webb_l7_counts.get("truncated").is_some_and(|n| *n >= 1),
            "{st:?}"
        );
    });
}

/// A real TLS server (openssl s_server) and a real client (curl): the
/// ClientHello's server name, ALPN and version become a flow, without
/// decrypting anything, and `--tls-sni` / `--tls-version` select it.
#[test]
fn tls_client_hellos_name_the_server_asked_for() {
    let Some(_g) = privileged() else { return };
    let lab = Lab::new(&[
        PodSpec::new("shop", "client", "client"),
        PodSpec::new("shop", "web", "web"),
    ]);
    let (c, web) = (lab.pod("client"), lab.pod("web"));
    let dir = std::env::temp_dir().join(format!("webb-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=shop.example"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl req");
    assert!(made.status.success(), "openssl req: {made:?}");
    let mut server = web
        .cmd(
            "openssl",
            &["s_server", "-quiet", "-www", "-accept", "8443"],
        )
        .arg("-key")
        .arg(&key)
        .arg("-cert")
        .arg(&cert)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let agent = AgentProcess::start(&lab, "lab-node-1", &[]);
    // Wait for the server, then connect as shop.example (SNI), offering
    // http/1.1 by ALPN.
    let resolve = format!("shop.example:8443:{}", web.ip);
    let mut ok = false;
    for _ in 0..50 {
        let out = c.run(
            "curl",
            &[
                "-sk",
                "--http1.1",
                "--max-time",
                "3",
                "--resolve",
                &resolve,
                "-o",
                "/dev/null",
                "https://shop.example:8443/",
            ],
        );
        if out.status.success() {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "curl never reached the TLS server");
    block_on(async {
        let tls = |f: &Flow| f.l7.as_ref().and_then(|l| l.webb_tls.clone());
        let flows = client::wait_for(
            &agent.addr,
            filter(|f| f.webb_tls_sni = vec!["shop.example".into()]),
            TIMEOUT,
            |fl| !fl.is_empty(),
        )
        .await;
        let f = &flows[0];
        let hello = tls(f).expect("a TLS flow");
        assert_eq!(hello.server_name, "shop.example");
        assert_eq!(hello.alpn, vec!["http/1.1"]);
        assert_eq!(hello.version, "TLS 1.3");
        assert_eq!(f.source.as_ref().unwrap().pod_name, c.name);
        assert_eq!(f.destination.as_ref().unwrap().pod_name, web.name);
        #[allow(deprecated)] // Summary is what users read.
        let summary = &f.summary;
        assert!(summary.contains("SNI shop.example"), "{summary}");
        // The version filter in the spellings users type; another name or
        // version selects nothing.
        let by_version = client::flows(
            &agent.addr,
            filter(|f| f.webb_tls_version = vec!["1.3".into()]),
        )
        .await;
        assert!(
            by_version.iter().any(|f| tls(f).is_some()),
            "{by_version:?}"
        );
        let none = client::flows(
            &agent.addr,
            filter(|f| f.webb_tls_sni = vec!["other.example".into()]),
        )
        .await;
        assert!(none.is_empty(), "{none:?}");
        let none = client::flows(
            &agent.addr,
            filter(|f| f.webb_tls_version = vec!["TLS 1.2".into()]),
        )
        .await;
        assert!(none.is_empty(), "{none:?}");
    });
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
