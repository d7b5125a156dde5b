//! End-to-end test of the agent's Prometheus metrics: a real Prometheus
//! (Debian package) scrapes a lab agent every second while real traffic runs
//! (a policy-denied connection, HTTP 500s from a real server, NXDOMAIN from
//! a real dnsmasq); PromQL through its HTTP API must show it, and the flows
//! it counted by verdict must be the flows GetFlows returns.

use std::{collections::HashMap, time::Duration};

use webb_proto::flow::Verdict;
use webb_tests::{
    agent::{AgentProcess, free_port},
    block_on, client,
    lab::{Lab, PodSpec},
    privileged,
    prometheus::Prometheus,
    traffic::{Resolver, dns_server, http_server, listen_tcp, tcp_send},
};

const DENY_TO_DB: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web-only, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
    - from:
        - podSelector: {matchLabels: {app: web}}
";

const TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn prometheus_sees_drops_http_errors_nxdomain_and_the_flows_getflows_returns() {
    let Some(_g) = privileged() else { return };
    let lab = Lab::new(&[
        PodSpec::new("shop", "client", "client"),
        PodSpec::new("shop", "web", "web"),
        PodSpec::new("shop", "db", "db"),
        PodSpec::new("kube-system", "coredns", "coredns"),
    ]);
    let (c, web, db, dnsp) = (
        lab.pod("client"),
        lab.pod("web"),
        lab.pod("db"),
        lab.pod("coredns"),
    );
    let _dns = dns_server(
        dnsp,
        "shop.lab",
        &[format!("--host-record=web.shop.lab,{}", web.ip)],
    );
    let _http = http_server(web, 8080, 0);
    let _db = listen_tcp(db, 5432);
    let _resolver = Resolver::new(c, &dnsp.ip.to_string(), "shop.lab");

    // The kernel's per-program accounting, on for this test and restored.
    let _stats = BpfStats::enable();
    let policy = lab.write_policy(DENY_TO_DB);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let agent = AgentProcess::start(
        &lab,
        "lab-node-1",
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--ring-capacity",
            "65535",
            "--metrics",
            "flow drop tcp icmp port-distribution dns:query http",
            "--metrics",
            "flow:sourceContext=namespace;destinationContext=pod-name",
            "--metrics-listen",
            &metrics_addr,
        ],
    );
    let prom = Prometheus::start(&lab.dir, std::slice::from_ref(&metrics_addr));
    // Traffic starts once Prometheus has scraped the agent, so that rate()
    // sees the counters rise.
    prom.wait_for(r#"up{job="webb"}"#, TIMEOUT, |r| {
        r.iter().any(|(_, v)| *v == 1.0)
    });

    // A few rounds of traffic, a second apart, so rate() has samples.
    for _ in 0..4 {
        assert!(
            !tcp_send(c, &db.ip.to_string(), 5432, 1),
            "policy denies db"
        );
        let out = c.run(
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                "5",
                "http://web.shop.lab:8080/fail",
            ],
        );
        assert!(out.status.success(), "{out:?}");
        let out = c.run(
            "dig",
            &[
                &format!("@{}", dnsp.ip),
                "nope.shop.lab",
                "+tries=1",
                "+time=2",
            ],
        );
        assert!(out.status.success(), "{out:?}");
        std::thread::sleep(Duration::from_millis(1000));
    }

    prom.wait_for(
        r#"rate(hubble_drop_total{reason="POLICY_DENIED",protocol="TCP"}[1m])"#,
        TIMEOUT,
        |r| r.iter().any(|(_, v)| *v > 0.0),
    );
    prom.wait_for(
        r#"sum(hubble_http_responses_total{status="500",method="GET"})"#,
        TIMEOUT,
        |r| r.iter().any(|(_, v)| *v >= 4.0),
    );
    prom.wait_for(
        r#"sum(hubble_dns_responses_total{rcode="Non-Existent Domain",query="nope.shop.lab."})"#,
        TIMEOUT,
        |r| r.iter().any(|(_, v)| *v >= 4.0),
    );
    let latency = prom.wait_for(
        r#"histogram_quantile(0.5, sum by (le) (rate(webb_dns_query_duration_seconds_bucket[1m])))"#,
        TIMEOUT,
        |r| r.iter().any(|(_, v)| v.is_finite() && *v > 0.0),
    );
    assert!(latency[0].1 < 2.0, "{latency:?}");
    let contexts = prom
        .query(r#"hubble_flows_processed_total{source="shop",destination="db",verdict="DROPPED"}"#);
    assert!(
        !contexts.is_empty(),
        "context labels from endpoint metadata"
    );

    // Traffic has stopped: the unlabelled flow family, by verdict, must
    // equal what GetFlows returns once Prometheus has scraped the last batch.
    let want_by_verdict = || {
        block_on(async {
            let mut by: HashMap<String, f64> = HashMap::new();
            for f in client::flows(&agent.addr, vec![]).await {
                let v = Verdict::try_from(f.verdict).unwrap_or_default();
                *by.entry(v.as_str_name().to_owned()).or_default() += 1.0;
            }
            by
        })
    };
    let start = std::time::Instant::now();
    loop {
        let want = want_by_verdict();
        let got: HashMap<String, f64> = prom
            .query(r#"sum by (verdict) (hubble_flows_processed_total{source=""})"#)
            .into_iter()
            .map(|(l, v)| (l["verdict"].as_str().unwrap_or_default().to_owned(), v))
            .collect();
        if got == want && want.contains_key("DROPPED") {
            break;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "Prometheus {got:?} != GetFlows {want:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Turns `kernel.bpf_stats_enabled` on, and back to what it was on drop.
struct BpfStats(String);

impl BpfStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    fn enable() -> Self {
        let before = std::fs::read_to_string(Self::PATH).unwrap_or_else(|_| "0".into());
        std::fs::write(Self::PATH, "1").expect("enable bpf_stats");
        Self(before.trim().to_owned())
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}
