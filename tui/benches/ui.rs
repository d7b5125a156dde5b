//! `cargo bench -p webb-tui --bench ui`: the dashboard's costs, as issue 6
//! asks for them.
//!
//! 1. Frames: 100,000 flows buffered and 50,000 flows/s arriving (1,667 per
//!    33 ms frame); the time to build and render each frame (state
//!    preparation plus `Terminal::draw` on a 200x50 `TestBackend`, which
//!    renders every widget and diffs the buffer; the bytes a real terminal
//!    is sent are not included) per tab, p50 and p99, and the time to take
//!    in each frame's flows.
//! 2. Keys: with 100,000 flows buffered, key -> updated screen (the key's
//!    work plus one frame) for the keys that touch the whole buffer.
//! 3. Memory: the process's resident set with the full buffer and every
//!    panel's counts.
//! 4. Graph: 1,000 workloads and 10,000 edges: the cost of counting one
//!    flow, and of laying out and drawing the graph, collapsed (the default
//!    past 40 workloads) and expanded.
//!
//! Flows are made in memory (as the agent would send them) so that the
//! figures are the dashboard's own; `WEBB_BENCH_FRAMES` sets the frames per
//! tab (default 300).

use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::{Terminal, backend::TestBackend};
use webb_proto::{
    flow::{
        Endpoint, EndpointData, Flow, FlowType, Http, Ip, L7FlowType, Layer4, Layer7, Tcp, Verdict,
        Workload, layer4::Protocol, layer7::Record,
    },
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
    wkt::Timestamp,
};
use webb_themes::Theme;
use webb_tui::ui::{
    app::{App, Tab},
    graph::Graph,
    view,
};

/// The allocator the `webb` binary uses, so that memory and time are its.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A small, fast, deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn endpoint(i: usize, namespaces: usize) -> Endpoint {
    let ns = format!("ns-{:02}", i % namespaces);
    let app = format!("svc-{i:04}");
    EndpointData {
        id: i as u32,
        identity: 10_000 + i as u32,
        namespace: ns.clone(),
        labels: vec![
            format!("k8s:app={app}"),
            format!("k8s:io.kubernetes.pod.namespace={ns}"),
        ],
        pod_name: format!("{app}-5f6b7c-x{i}"),
        workloads: vec![Workload {
            name: app,
            kind: "Deployment".into(),
        }],
        ..Default::default()
    }
    .into()
}

/// A flow from `a` to `b` at `t` ns; every tenth is an HTTP response, one
/// in fifty a drop.
fn flow(rng: &mut Rng, a: &Endpoint, b: &Endpoint, t: i64, n: u64) -> GetFlowsResponse {
    let dropped = n % 50 == 7;
    let l7 = (n % 10 == 3).then(|| {
        Box::new(Layer7 {
            r#type: L7FlowType::Response as i32,
            latency_ns: 1_000_000 + rng.below(50_000_000),
            record: Some(Record::Http(Http {
                code: if n % 30 == 3 { 503 } else { 200 },
                method: "GET".into(),
                url: format!("http://{}/api/items/{}", b.pod_name, rng.below(1000)),
                protocol: "HTTP/1.1".into(),
                headers: Vec::new(),
            })),
            ..Default::default()
        })
    });
    let (src, dst) = if l7.is_some() { (b, a) } else { (a, b) };
    let f = Flow {
        time: Some(Timestamp {
            seconds: t / 1_000_000_000,
            nanos: (t % 1_000_000_000) as i32,
        }),
        uuid: format!("00000000-0000-4000-8000-{n:012}"),
        verdict: if dropped {
            Verdict::Dropped
        } else {
            Verdict::Forwarded
        } as i32,
        drop_reason_desc: if dropped { 133 } else { 0 },
        ip: Some(Ip {
            source: format!("10.42.{}.{}", src.id / 250, src.id % 250),
            destination: format!("10.42.{}.{}", dst.id / 250, dst.id % 250),
            ip_version: 1,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(Protocol::Tcp(Tcp {
                source_port: 30_000 + rng.below(30_000) as u32,
                destination_port: 8080,
                flags: None,
            })),
        }),
        // A copy of each endpoint's fields, as decoding a response gives:
        // sharing them is the dashboard's work, not the generator's.
        source: Some(Endpoint::from(EndpointData::clone(src))),
        destination: Some(Endpoint::from(EndpointData::clone(dst))),
        r#type: if l7.is_some() {
            FlowType::L7
        } else {
            FlowType::L3L4
        } as i32,
        is_reply: Some(webb_proto::wkt::BoolValue {
            value: l7.is_some(),
        }),
        l7,
        node_name: "bench-node".into(),
        ..Default::default()
    };
    GetFlowsResponse {
        node_name: f.node_name.clone(),
        time: f.time,
        response_types: Some(ResponseTypes::Flow(Box::new(f))),
    }
}

/// `count` flows over the edges of a cluster of `workloads` workloads in
/// five tiers, each caller calling `fanout` workloads of the next tier.
struct Cluster {
    endpoints: Vec<Endpoint>,
    edges: Vec<(usize, usize)>,
}

impl Cluster {
    fn new(rng: &mut Rng, workloads: usize, namespaces: usize, edges: usize) -> Self {
        let endpoints: Vec<Endpoint> = (0..workloads).map(|i| endpoint(i, namespaces)).collect();
        let tier = |i: usize| i % 5;
        let mut set = std::collections::HashSet::new();
        while set.len() < edges {
            let a = rng.below(workloads as u64) as usize;
            if tier(a) == 4 {
                continue;
            }
            let b = rng.below(workloads as u64) as usize;
            if tier(b) == tier(a) + 1 {
                set.insert((a, b));
            }
        }
        let mut edges: Vec<_> = set.into_iter().collect();
        edges.sort_unstable();
        Self { endpoints, edges }
    }

    fn flows(
        &self,
        rng: &mut Rng,
        count: usize,
        start_ns: i64,
        per_sec: u64,
    ) -> Vec<GetFlowsResponse> {
        let step = 1_000_000_000 / per_sec as i64;
        (0..count)
            .map(|n| {
                let (a, b) = self.edges[rng.below(self.edges.len() as u64) as usize];
                flow(
                    rng,
                    &self.endpoints[a],
                    &self.endpoints[b],
                    start_ns + n as i64 * step,
                    n as u64,
                )
            })
            .collect()
    }
}

fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn draw(t: &mut Terminal<TestBackend>, app: &mut App, theme: &Theme) -> Duration {
    let start = Instant::now();
    let page = view::table_rows(t.get_frame().area(), app.mode);
    app.prepare(page);
    t.draw(|f| view::draw(f, app, theme))
        .expect("TestBackend draws");
    start.elapsed()
}

fn main() {
    let frames: usize = std::env::var("WEBB_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let theme = Theme::built_in("dark").expect("the dark theme is built in");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let rss_start = rss_mib();

    // A cluster the size of a busy namespace-per-team setup: 200 workloads
    // in 20 namespaces, 800 caller -> callee pairs.
    let cluster = Cluster::new(&mut rng, 200, 20, 800);
    let t0 = 1_790_000_000_000_000_000i64;
    let history = cluster.flows(&mut rng, 100_000, t0, 50_000);
    let per_frame = 50_000 / 30;

    let mut app = App::new("bench".into(), 100_000, Default::default()).expect("no filters");
    let start = Instant::now();
    for r in history {
        app.push(r);
    }
    let fill = start.elapsed();
    println!(
        "buffer: 100000 flows taken in in {} ({:.0} ns/flow)",
        ms(fill),
        fill.as_nanos() as f64 / 1e5
    );

    let mut term = Terminal::new(TestBackend::new(200, 50)).expect("TestBackend");
    let mut next_t = t0 + 2_000_000_000;
    println!(
        "frames: {frames} per tab, {per_frame} flows arriving per frame (50,000/s at 30 fps), 200x50"
    );
    for tab in [
        Tab::Flows,
        Tab::Graph,
        Tab::Drops,
        Tab::Dns,
        Tab::Http,
        Tab::Top,
    ] {
        app.show_tab(tab);
        let mut renders = Vec::with_capacity(frames);
        let mut ingest = Vec::with_capacity(frames);
        for _ in 0..frames {
            // Made before the clock starts: the agent's work, not ours.
            let batch = cluster.flows(&mut rng, per_frame, next_t, 50_000);
            next_t += 1_000_000_000 / 30;
            let start = Instant::now();
            for r in batch {
                app.push(r);
            }
            ingest.push(start.elapsed());
            renders.push(draw(&mut term, &mut app, &theme));
        }
        let busy: Duration = renders.iter().chain(&ingest).sum();
        println!(
            "  {:<6} render p50 {}  p99 {}  max {}   ingest per frame p50 {}  p99 {}   busy {:.0}% of 33 ms",
            tab.title(),
            ms(quantile(&mut renders, 0.5)),
            ms(quantile(&mut renders, 0.99)),
            ms(quantile(&mut renders, 1.0)),
            ms(quantile(&mut ingest, 0.5)),
            ms(quantile(&mut ingest, 0.99)),
            100.0 * busy.as_secs_f64() / (frames as f64 * 0.0333),
        );
    }
    println!(
        "memory: VmRSS {:.1} MiB with 100000 flows buffered and every panel counted (at start {:.1} MiB)",
        rss_mib(),
        rss_start
    );

    // Keys that touch the whole buffer, 20 times each.
    app.show_tab(Tab::Flows);
    let filter = |text: &str| -> Vec<KeyEvent> {
        std::iter::once(KeyCode::Char('/'))
            .chain(text.chars().map(KeyCode::Char))
            .chain(std::iter::once(KeyCode::Enter))
            .map(Into::into)
            .collect()
    };
    let keys: [(&str, Vec<KeyEvent>); 5] = [
        ("j (move)", vec![KeyCode::Char('j').into()]),
        (
            "2 (hide DROPPED: refilter 100k)",
            vec![KeyCode::Char('2').into()],
        ),
        ("Tab (flows -> graph)", vec![KeyCode::Tab.into()]),
        (
            "/ --namespace ns-03 Enter (refilter 100k, count 5%)",
            filter("--namespace ns-03"),
        ),
        (
            "/ --verdict FORWARDED Enter (refilter 100k, count 98%)",
            filter("--verdict FORWARDED"),
        ),
    ];
    println!("keys: key -> updated screen with 100000 flows buffered (20 presses each)");
    for (name, seq) in keys {
        let mut times = Vec::new();
        for _ in 0..20 {
            // The filter is typed, then applied by Enter: only Enter is
            // timed. Each key is undone (untimed) before the next press.
            let (typed, last) = seq.split_at(seq.len() - 1);
            for k in typed {
                app.on_key(*k, 40);
            }
            let start = Instant::now();
            app.on_key(last[0], 40);
            draw(&mut term, &mut app, &theme);
            times.push(start.elapsed());
            match name.chars().next() {
                Some('/') => {
                    app.apply_filter("");
                }
                Some('T') => app.show_tab(Tab::Flows),
                Some('2') => app.toggle_verdict(Verdict::Dropped),
                _ => {}
            }
        }
        app.apply_filter("");
        app.hidden_verdicts.clear();
        println!(
            "  {name:<56} p50 {}  p99 {}",
            ms(quantile(&mut times, 0.5)),
            ms(quantile(&mut times, 0.99))
        );
    }

    // The graph at 1,000 workloads and 10,000 edges.
    let big = Cluster::new(&mut rng, 1000, 50, 10_000);
    let warm = big.flows(&mut rng, 200_000, t0, 50_000);
    let mut graph = Graph::default();
    for r in &warm {
        if let Some(ResponseTypes::Flow(f)) = &r.response_types {
            graph.add(f);
        }
    }
    let flows: Vec<Flow> = big
        .flows(&mut rng, 1_000_000, t0 + 5_000_000_000, 50_000)
        .into_iter()
        .filter_map(|r| match r.response_types {
            Some(ResponseTypes::Flow(f)) => Some(*f),
            _ => None,
        })
        .collect();
    let start = Instant::now();
    for f in &flows {
        graph.add(f);
    }
    let per_flow = start.elapsed().as_nanos() as f64 / flows.len() as f64;
    println!(
        "graph: {} workloads, {} edges; counting a flow: {per_flow:.0} ns",
        graph.model.node_count(),
        graph.model.edge_count()
    );
    let mut term = Terminal::new(TestBackend::new(200, 50)).expect("TestBackend");
    for (label, collapse_all) in [
        ("collapsed by namespace (the default)", true),
        ("expanded", false),
    ] {
        graph.collapse.all = collapse_all;
        graph.collapse.toggled.clear();
        let mut layouts = Vec::new();
        for _ in 0..10 {
            // Forget the layout so that it is made again.
            graph.model.generation += 1;
            let start = Instant::now();
            graph.prepare();
            layouts.push(start.elapsed());
        }
        let d = graph.drawn().expect("prepared");
        let (nodes, edges, w, h) = (
            d.view.nodes.len(),
            d.view.edges.len(),
            d.layout.width,
            d.layout.height,
        );
        let mut g_app = App::new("bench".into(), 10, Default::default()).expect("no filters");
        g_app.graph = std::mem::take(&mut graph);
        g_app.show_tab(Tab::Graph);
        let mut renders = Vec::new();
        for _ in 0..20 {
            renders.push(draw(&mut term, &mut g_app, &theme));
        }
        graph = std::mem::take(&mut g_app.graph);
        println!(
            "  {label}: {nodes} nodes, {edges} edges, canvas {w}x{h}: layout p50 {}  max {}; drawing the visible part p50 {}  p99 {}",
            ms(quantile(&mut layouts, 0.5)),
            ms(quantile(&mut layouts, 1.0)),
            ms(quantile(&mut renders, 0.5)),
            ms(quantile(&mut renders, 0.99)),
        );
    }
}
