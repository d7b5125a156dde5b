use crossterm::event::{KeyCode, KeyEvent};
use ratatui::{Terminal, backend::TestBackend};
use webb_proto::{
    flow::Verdict,
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
};
use webb_themes::{BUILT_IN, Role, Theme};

use super::{
    app::{Action, App, Link, Mode},
    view,
};

const FIXTURE: &str = include_str!("../../tests/fixtures/flows.jsonl");

fn fixture() -> Vec<GetFlowsResponse> {
    webb_proto::json::read_lines(FIXTURE.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn app_with_fixture(capacity: usize) -> App {
    let mut app = App::new("localhost:4245".into(), capacity, Default::default()).unwrap();
    app.link = Link::Live;
    for r in fixture() {
        app.push(r);
    }
    app
}

fn key(c: char) -> KeyEvent {
    KeyCode::Char(c).into()
}

fn screen(app: &mut App, theme: &Theme, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    let page = view::table_rows(t.get_frame().area(), app.mode);
    app.prepare(page);
    t.draw(|f| view::draw(f, app, theme)).unwrap();
    t
}

fn flows_in_fixture() -> usize {
    fixture()
        .iter()
        .filter(|r| matches!(r.response_types, Some(ResponseTypes::Flow(_))))
        .count()
}

#[test]
fn buffer_is_bounded_and_counts_what_it_dropped() {
    let app = app_with_fixture(5);
    assert_eq!(app.flows.len(), 5);
    assert_eq!(app.evicted as usize, flows_in_fixture() - 5);
    assert_eq!(app.visible_len(), 5);
    // The newest flow is the last of the file.
    let newest = app.visible_flow(0).unwrap();
    let last_flow = fixture()
        .into_iter()
        .filter_map(|r| match r.response_types {
            Some(ResponseTypes::Flow(f)) => Some(f),
            _ => None,
        })
        .last()
        .unwrap();
    assert_eq!(newest.uuid, last_flow.uuid);
    // The fixture's lost_events record is counted.
    assert!(app.lost_events > 0);
}

#[test]
fn verdict_keys_toggle_and_filters_apply_to_the_buffer() {
    let mut app = app_with_fixture(1000);
    let all = app.visible_len();
    assert_eq!(app.on_key(key('1'), 10), Action::None);
    assert!(app.hidden_verdicts.contains(&Verdict::Forwarded));
    let without_forwarded = app.visible_len();
    assert!(without_forwarded < all);
    for n in 0..without_forwarded {
        assert_ne!(
            app.visible_flow(n).unwrap().verdict,
            Verdict::Forwarded as i32
        );
    }
    app.on_key(key('1'), 10);
    assert_eq!(app.visible_len(), all);

    // The filter bar takes observe's flags; the server is asked again.
    app.on_key(key('/'), 10);
    assert_eq!(app.mode, Mode::Filter);
    for c in "--verdict DROPPED".chars() {
        app.on_key(key(c), 10);
    }
    let action = app.on_key(KeyCode::Enter.into(), 10);
    assert!(
        matches!(action, Action::Resubscribe(ref f) if !f.allowlist.is_empty()),
        "{action:?}"
    );
    assert_eq!(app.mode, Mode::Table);
    assert!(app.visible_len() >= 1);
    for n in 0..app.visible_len() {
        assert_eq!(
            app.visible_flow(n).unwrap().verdict,
            Verdict::Dropped as i32
        );
    }

    // A bad flag is an inline error; the old filter stays.
    app.on_key(key('/'), 10);
    for c in " --http-status abc".chars() {
        app.on_key(key(c), 10);
    }
    assert_eq!(app.on_key(KeyCode::Enter.into(), 10), Action::None);
    assert_eq!(app.mode, Mode::Filter);
    assert!(app.filter_error.is_some());
    assert_eq!(app.filter_text, "--verdict DROPPED");
}

#[test]
fn pause_keeps_the_selection_on_its_flow() {
    let mut app = app_with_fixture(1000);
    app.on_key(key('k'), 10);
    app.on_key(key(' '), 10);
    assert!(app.paused);
    let selected = app.selected_flow().unwrap().uuid.clone();
    for r in fixture() {
        app.push(r);
    }
    assert_eq!(app.selected_flow().unwrap().uuid, selected);
    // G: back to the newest, following.
    app.on_key(key('G'), 10);
    assert!(!app.paused);
    assert_eq!(app.selected, 0);
    assert_eq!(app.on_key(key('q'), 10), Action::Quit);
}

#[test]
fn views() {
    let theme = Theme::built_in("dark").unwrap();
    let mut app = app_with_fixture(1000);
    insta::assert_snapshot!("ui_table", screen(&mut app, &theme, 140, 24).backend());

    app.on_key(key('k'), 10);
    app.on_key(KeyCode::Enter.into(), 10);
    assert_eq!(app.mode, Mode::Detail);
    insta::assert_snapshot!("ui_detail", screen(&mut app, &theme, 140, 40).backend());
    app.on_key(KeyCode::Esc.into(), 10);

    app.on_key(key('/'), 10);
    for c in "--to-namespace shop --http-status nope".chars() {
        app.on_key(key(c), 10);
    }
    app.on_key(KeyCode::Enter.into(), 10);
    insta::assert_snapshot!(
        "ui_filter_error",
        screen(&mut app, &theme, 140, 24).backend()
    );
    app.on_key(KeyCode::Esc.into(), 10);

    app.on_key(key('?'), 10);
    insta::assert_snapshot!("ui_help", screen(&mut app, &theme, 100, 24).backend());
}

#[test]
fn fits_80x24() {
    let theme = Theme::built_in("dark").unwrap();
    let mut app = app_with_fixture(1000);
    insta::assert_snapshot!("ui_80x24", screen(&mut app, &theme, 80, 24).backend());
}

#[test]
fn every_theme_styles_drops_its_own_way() {
    for (name, _) in BUILT_IN {
        let theme = Theme::built_in(name).unwrap();
        let mut app = app_with_fixture(1000);
        let t = screen(&mut app, &theme, 140, 24);
        let buf = t.backend().buffer();
        // Find a DROPPED cell in the table and check its style is the
        // theme's verdict style.
        let found = (0..buf.area.height).any(|y| {
            (0..buf.area.width.saturating_sub(7)).any(|x| {
                let word: String = (x..x + 7).map(|i| buf[(i, y)].symbol()).collect();
                word == "DROPPED"
                    && y > 2
                    && buf[(x, y)].fg == theme.style(Role::Dropped).fg.unwrap_or_default()
            })
        });
        assert!(found, "{name}: no DROPPED cell in the theme's style");
    }
}

#[test]
fn each_theme_once() {
    // The buffer's Debug form lists every style run, so these snapshots
    // pin each theme's colours, not just the text.
    for (name, _) in BUILT_IN {
        let theme = Theme::built_in(name).unwrap();
        let mut app = app_with_fixture(1000);
        let t = screen(&mut app, &theme, 100, 16);
        insta::assert_debug_snapshot!(format!("theme_{name}"), t.backend().buffer());
    }
}

/// A small cluster's traffic over ten seconds, built the way the agent
/// reports it: a client outside the cluster calls shop/frontend, which calls
/// cart over HTTP (some 503s), resolves names at kube-system/coredns (some
/// NXDOMAIN), is denied by a policy on its way to the database, and the
/// host drops a probe for a closed port.
fn lab() -> Vec<GetFlowsResponse> {
    use serde_json::json;
    fn ep(ns: &str, app: &str, id: u32) -> serde_json::Value {
        json!({"ID": id, "identity": 1000 + id, "namespace": ns,
            "labels": [format!("k8s:app={app}")], "pod_name": format!("{app}-{id}"),
            "workloads": [{"name": app, "kind": "Deployment"}]})
    }
    let world = json!({"identity": 2, "labels": ["reserved:world"]});
    let host = json!({"identity": 1, "labels": ["reserved:host"]});
    let (frontend, cart, db) = (
        ep("shop", "frontend", 1),
        ep("shop", "cart", 2),
        ep("shop", "db", 3),
    );
    let (dns, prom) = (
        ep("kube-system", "coredns", 4),
        ep("monitoring", "prometheus", 5),
    );
    let mut out = Vec::new();
    let mut n = 0;
    let mut push = |ms: i64, mut flow: serde_json::Value| {
        n += 1;
        let t = chrono::DateTime::from_timestamp_millis(1_704_164_640_000 + ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        flow["time"] = json!(t);
        flow["uuid"] = json!(format!("00000000-0000-4000-8000-{n:012}"));
        flow["node_name"] = json!("lab-node-1");
        let line = json!({"flow": flow, "node_name": "lab-node-1", "time": t}).to_string();
        out.extend(webb_proto::json::read_lines(line.as_bytes()).map(Result::unwrap));
    };
    let tcp = |src: &serde_json::Value, dst: &serde_json::Value, port: u32, verdict: &str| {
        json!({"verdict": verdict, "Type": "L3_L4", "source": src, "destination": dst,
            "IP": {"source": "10.42.0.9", "destination": "10.42.0.10", "ipVersion": "IPv4"},
            "l4": {"TCP": {"source_port": 40000, "destination_port": port, "flags": {"SYN": true}}},
            "is_reply": false})
    };
    for s in 0..10i64 {
        let ms = s * 1000;
        push(ms, tcp(&world, &frontend, 8080, "FORWARDED"));
        push(
            ms + 1,
            json!({"verdict": "FORWARDED", "Type": "L7", "source": frontend, "destination": dns,
            "l7": {"type": "REQUEST", "dns": {"query": "cart.shop.svc.cluster.local.", "qtypes": ["A"]}}, "is_reply": false}),
        );
        push(
            ms + 2,
            json!({"verdict": "FORWARDED", "Type": "L7", "source": dns, "destination": frontend,
            "l7": {"type": "RESPONSE", "latency_ns": "1000000", "dns": {"query": "cart.shop.svc.cluster.local.", "qtypes": ["A"], "rcode": 0}}, "is_reply": true}),
        );
        if s % 3 == 0 {
            push(
                ms + 3,
                json!({"verdict": "FORWARDED", "Type": "L7", "source": dns, "destination": frontend,
                "l7": {"type": "RESPONSE", "latency_ns": "2500000", "dns": {"query": "carts.shop.lab.", "qtypes": ["AAAA"], "rcode": 3}}, "is_reply": true}),
            );
        }
        let code = if s % 5 == 0 { 503 } else { 200 };
        push(
            ms + 5,
            json!({"verdict": "FORWARDED", "Type": "L7", "source": frontend, "destination": cart,
            "l7": {"type": "REQUEST", "http": {"method": "GET", "url": format!("http://cart.shop:8080/cart/{s}?session=HUBBLE_REDACTED"), "protocol": "HTTP/1.1"}}, "is_reply": false}),
        );
        push(
            ms + 25,
            json!({"verdict": "FORWARDED", "Type": "L7", "source": cart, "destination": frontend,
            "l7": {"type": "RESPONSE", "latency_ns": format!("{}", 20_000_000 + s * 1_000_000), "http": {"code": code, "method": "GET", "url": format!("http://cart.shop:8080/cart/{s}"), "protocol": "HTTP/1.1"}}, "is_reply": true}),
        );
        push(ms + 30, tcp(&cart, &db, 5432, "FORWARDED"));
        push(ms + 40, tcp(&prom, &frontend, 9090, "FORWARDED"));
        if s % 2 == 0 {
            let mut denied = tcp(&frontend, &db, 5432, "DROPPED");
            denied["drop_reason_desc"] = json!("POLICY_DENIED");
            denied["egress_denied_by"] = json!([{"name": "db-only-from-cart", "namespace": "shop", "kind": "NetworkPolicy"}]);
            push(ms + 50, denied);
        }
        let mut probe = tcp(&world, &host, 23, "DROPPED");
        probe["drop_reason_desc"] = json!("SOCKET_LOOKUP_FAILED");
        probe["webb_kernel_drop_reason"] = json!("NO_SOCKET");
        push(ms + 60, probe);
    }
    out
}

fn lab_app() -> App {
    let mut app = App::new("localhost:4245".into(), 1000, Default::default()).unwrap();
    app.link = Link::Live;
    for r in lab() {
        app.push(r);
    }
    app
}

fn text(t: &Terminal<TestBackend>) -> String {
    let buf = t.backend().buffer();
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_graph_counts_clients_and_servers() {
    let mut app = lab_app();
    app.graph.prepare();
    let g = &app.graph;
    // world, frontend, cart, db, coredns, prometheus, host.
    assert_eq!(g.model.node_count(), 7);
    let d = g.drawn().unwrap();
    let edge = |a: &str, b: &str| {
        let (a, b) = (d.view.index[a], d.view.index[b]);
        d.view
            .edges
            .iter()
            .find(|e| e.from == a && e.to == b)
            .map(|e| g.model.summary(e, true))
    };
    // DNS answers count against frontend -> coredns, not the other way.
    let dns = edge("shop/frontend", "kube-system/coredns").unwrap();
    assert_eq!(dns.flows, 24);
    assert!(edge("kube-system/coredns", "shop/frontend").is_none());
    let http = edge("shop/frontend", "shop/cart").unwrap();
    assert_eq!((http.http, http.http_errors), (10, 2));
    let p95 = http.p95_ns.unwrap();
    assert!((25_000_000..=33_000_000).contains(&p95), "{p95}");
    let denied = edge("shop/frontend", "shop/db").unwrap();
    assert_eq!((denied.flows, denied.drops), (5, 5));
    assert_eq!(denied.health(), super::graph::Health::Critical);
    // Flows/s over the last five seconds of flow time.
    assert_eq!(edge("world", "shop/frontend").unwrap().rate, 1.0);

    // Callers are drawn left of what they call.
    let x = |n: &str| d.layout.nodes[d.view.index[n]].x;
    assert!(x("world") < x("shop/frontend"));
    assert!(x("shop/frontend") < x("shop/cart"));
    assert!(x("shop/cart") < x("shop/db"));
}

#[test]
fn selecting_in_the_graph_focuses_the_table() {
    let mut app = lab_app();
    let all = app.visible_len();
    app.on_key(KeyCode::F(2).into(), 10);
    assert_eq!(app.tab, super::app::Tab::Graph);
    app.prepare(10);
    app.graph.selected = Some("shop/cart".into());
    // e walks cart's edges: cart -> db first, then frontend -> cart.
    app.on_key(key('e'), 10);
    app.on_key(key('e'), 10);
    assert_eq!(
        app.graph.focus(),
        Some(super::graph::Focus::Edge(
            "shop/frontend".into(),
            "shop/cart".into()
        ))
    );
    app.on_key(KeyCode::Enter.into(), 10);
    assert_eq!(app.tab, super::app::Tab::Flows);
    // Requests and responses of frontend <-> cart: 10 of each.
    assert_eq!(app.visible_len(), 20);
    app.on_key(key('x'), 10);
    assert_eq!(app.visible_len(), all);

    // Collapsing shop makes one node of it; the selection follows.
    app.on_key(KeyCode::Tab.into(), 10);
    app.prepare(10);
    app.on_key(key('c'), 10);
    app.prepare(10);
    assert_eq!(app.graph.selected.as_deref(), Some("shop/*"));
    let d = app.graph.drawn().unwrap();
    assert!(d.view.index.contains_key("shop/*") && !d.view.index.contains_key("shop/cart"));
    app.on_key(key('c'), 10);
    app.prepare(10);
    assert!(
        app.graph
            .drawn()
            .unwrap()
            .view
            .index
            .contains_key("shop/cart")
    );
}

#[test]
fn panels_count_drops_dns_and_http() {
    let app = lab_app();
    let s = &app.stats;
    assert_eq!(s.drops.total, 15);
    let reasons = s.drops.top_reasons();
    assert_eq!(reasons[0].0, "NO_SOCKET");
    assert_eq!(reasons[0].1.count, 10);
    assert_eq!(reasons[1].0, "POLICY_DENIED");
    let pairs = s.drops.top_pairs(5);
    let denied = pairs
        .iter()
        .find(|(k, _)| k.reason == "POLICY_DENIED")
        .unwrap();
    assert_eq!(denied.0.port, 5432);
    assert_eq!(denied.1.policy, "shop/db-only-from-cart");

    assert_eq!((s.dns.queries, s.dns.responses), (10, 14));
    assert_eq!(s.dns.rcodes.get(&3), Some(&4));
    assert_eq!(s.dns.names["carts.shop.lab. AAAA"].nxdomain, 4);

    let cart = &s.http.services["shop/cart"];
    assert_eq!(
        (cart.requests, cart.classes[2], cart.classes[5]),
        (10, 8, 2)
    );
    // /cart/0 ... /cart/9 fold into one route.
    assert_eq!(cart.routes.len(), 1);
    assert_eq!(cart.routes["GET /cart/:id"].errors, 2);

    // A new filter counts the buffer again.
    let mut app = lab_app();
    app.apply_filter("--namespace monitoring");
    assert!(app.recount_progress().is_some());
    app.recount_step(10);
    assert!(app.recount_progress().unwrap() > 0.0);
    app.prepare(10);
    assert_eq!(app.recount_progress(), None);
    assert_eq!(app.stats.drops.total, 0);
    assert_eq!(app.graph.model.node_count(), 2);
}

#[test]
fn mouse_clicks_select_tabs_rows_and_nodes() {
    let theme = Theme::built_in("dark").unwrap();
    let mut app = lab_app();
    let area = ratatui::layout::Rect::new(0, 0, 120, 30);
    // The tab line is the second row: " F1 Flows  F2 Graph ...".
    let graph_tab = view::hit(area, &app, 13, 1);
    assert_eq!(
        graph_tab,
        Some(super::app::Hit::Tab(super::app::Tab::Graph))
    );
    app.on_click(graph_tab.unwrap());
    let t = screen(&mut app, &theme, 120, 30);
    let screen_text = text(&t);
    // Click the middle of the cart box.
    let (row, line) = screen_text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("shop/cart "))
        .unwrap();
    let column = line.chars().position(|_| true).unwrap()
        + line.split("shop/cart ").next().unwrap().chars().count();
    let hit = view::hit(area, &app, column as u16, row as u16);
    assert_eq!(hit, Some(super::app::Hit::Node("shop/cart".into())));
    app.on_click(hit.unwrap());
    assert_eq!(app.graph.selected.as_deref(), Some("shop/cart"));

    // The side panel lists cart's edges under a header; click the second.
    let t = screen(&mut app, &theme, 120, 30);
    let screen_text = text(&t);
    let edges = app.graph.incident().len();
    assert!(edges >= 2, "cart has {edges} edges in the lab");
    let (header, line) = screen_text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("PEER"))
        .unwrap();
    let column = line.split("PEER").next().unwrap().chars().count() as u16;
    let hit = view::hit(area, &app, column, header as u16 + 2);
    assert_eq!(hit, Some(super::app::Hit::Edge(1)));
    app.on_click(hit.unwrap());
    assert_eq!(app.graph.edge, Some(1));
    assert_eq!(app.graph.selected_edge(), Some(app.graph.incident()[1]));
    // The clicked row is drawn selected.
    let t = screen(&mut app, &theme, 120, 30);
    let buf = t.backend().buffer();
    assert_eq!(
        buf[(column, header as u16 + 2)].bg,
        theme.style(Role::Selection).bg.unwrap_or_default()
    );
    // Below the last edge there is nothing to click.
    assert_eq!(
        view::hit(area, &app, column, header as u16 + 1 + edges as u16 + 1),
        None
    );
}

#[test]
fn panel_views() {
    let theme = Theme::built_in("dark").unwrap();
    let mut app = lab_app();
    app.show_tab(super::app::Tab::Graph);
    insta::assert_snapshot!("ui_graph", screen(&mut app, &theme, 140, 32).backend());
    insta::assert_snapshot!("ui_graph_80x24", screen(&mut app, &theme, 80, 24).backend());
    app.show_tab(super::app::Tab::Drops);
    insta::assert_snapshot!("ui_drops", screen(&mut app, &theme, 120, 36).backend());
    app.show_tab(super::app::Tab::Dns);
    insta::assert_snapshot!("ui_dns", screen(&mut app, &theme, 120, 20).backend());
    app.show_tab(super::app::Tab::Http);
    insta::assert_snapshot!("ui_http", screen(&mut app, &theme, 120, 24).backend());
    app.show_tab(super::app::Tab::Nodes);
    app.nodes = (2, 1);
    app.node_list = Some(vec![
        webb_proto::observer::Node {
            name: "lab-node-1".into(),
            version: "0.1.0".into(),
            address: "10.99.0.1:4244".into(),
            state: webb_proto::relay::NodeState::NodeConnected as i32,
            uptime_ns: 3_723_000_000_000,
            num_flows: 4095,
            max_flows: 4095,
            seen_flows: 120_000,
            ..Default::default()
        },
        webb_proto::observer::Node {
            name: "lab-node-2".into(),
            address: "10.99.0.2:4244".into(),
            state: webb_proto::relay::NodeState::NodeUnavailable as i32,
            ..Default::default()
        },
    ]);
    insta::assert_snapshot!("ui_nodes", screen(&mut app, &theme, 120, 16).backend());
}

#[test]
fn buffered_flows_share_their_endpoints() {
    // Each line parses into its own copies; the buffer keeps one of each.
    let app = lab_app();
    let flows: Vec<_> = app.flows.iter().collect();
    let first = flows[0].source.clone().unwrap();
    let same: Vec<_> = flows
        .iter()
        .flat_map(|f| [f.source.as_ref(), f.destination.as_ref()])
        .flatten()
        .filter(|e| **e == first)
        .collect();
    assert!(same.len() > 1, "the lab repeats its endpoints");
    assert!(same.iter().all(|e| e.ptr_eq(&first)));
}

#[test]
fn the_top_tab_sums_pairs_sorts_by_column_and_narrows_the_table() {
    let theme = Theme::built_in("dark").unwrap();
    let mut app = lab_app();
    let all = app.visible_len();
    app.on_key(KeyCode::F(7).into(), 10);
    assert_eq!(app.tab, super::app::Tab::Top);
    app.prepare(10);
    let rows = &app.top_view.rows;
    // No byte counts in these flows: ties go to the most flows. DNS
    // answers count against frontend -> coredns, as `webb top` counts them.
    assert_eq!(
        (rows[0].source.as_str(), rows[0].destination.as_str()),
        ("shop/frontend", "kube-system/coredns")
    );
    assert_eq!(rows[0].figures.flows, 24);
    assert_eq!(rows[0].figures.errors, 4);
    let cart = rows
        .iter()
        .find(|r| r.destination == "shop/cart")
        .expect("frontend -> cart");
    assert_eq!((cart.figures.flows, cart.figures.errors), (20, 2));
    insta::assert_snapshot!("ui_top", screen(&mut app, &theme, 120, 20).backend());
    // o: bytes -> packets -> drops; the most dropped pair comes first.
    app.on_key(key('o'), 10);
    app.on_key(key('o'), 10);
    assert_eq!(app.top_sort, crate::top::SortBy::Drops);
    let first = app.top_view.rows[0].clone();
    assert_eq!(first.figures.drops, 10);
    app.on_key(key('O'), 10);
    assert_eq!(app.top_sort, crate::top::SortBy::Packets);
    app.on_key(key('o'), 10);
    // Enter shows the pair's flows in the table; x shows all again.
    app.on_key(KeyCode::Enter.into(), 10);
    assert_eq!(app.tab, super::app::Tab::Flows);
    assert_eq!(app.visible_len(), 10);
    app.on_key(key('x'), 10);
    assert_eq!(app.visible_len(), all);
    // A filter counts it again, as the other panels.
    app.apply_filter("--namespace monitoring");
    app.show_tab(super::app::Tab::Top);
    app.prepare(10);
    assert_eq!(app.top_view.rows.len(), 1);
}

/// The lab's flows and, after them, TLS ClientHellos from frontend to an
/// outside API (two names) and to cart, which also serves HTTP.
fn lab_with_tls() -> App {
    use webb_proto::flow::{
        EndpointData, Flow, FlowType, L7FlowType, Layer7, WebbTlsClientHello, Workload,
    };
    let mut app = lab_app();
    let pod = |app: &str, id: u32| {
        EndpointData {
            id,
            identity: 1000 + id,
            namespace: "shop".into(),
            labels: vec![format!("k8s:app={app}")],
            pod_name: format!("{app}-{id}"),
            workloads: vec![Workload {
                name: app.into(),
                kind: "Deployment".into(),
            }],
            ..Default::default()
        }
        .into()
    };
    let world = EndpointData {
        identity: 2,
        labels: vec!["reserved:world".into()],
        ..Default::default()
    }
    .into();
    let hellos = [
        ("api.example.com", &world, "TLS 1.3"),
        ("api.example.com", &world, "TLS 1.3"),
        ("cdn.example.com", &world, "TLS 1.2"),
        ("cart.shop.svc", &pod("cart", 2), "TLS 1.3"),
    ];
    for (i, (sni, dst, version)) in hellos.into_iter().enumerate() {
        let flow = Flow {
            time: Some(webb_proto::wkt::Timestamp {
                seconds: 1_704_164_650 + i as i64,
                nanos: 0,
            }),
            verdict: Verdict::Forwarded as i32,
            r#type: FlowType::L7 as i32,
            source: Some(pod("frontend", 1)),
            destination: Some(dst.clone()),
            l7: Some(Box::new(Layer7 {
                r#type: L7FlowType::Request as i32,
                webb_tls: Some(WebbTlsClientHello {
                    server_name: sni.into(),
                    alpn: vec!["h2".into(), "http/1.1".into()],
                    version: version.into(),
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        app.push(GetFlowsResponse {
            response_types: Some(ResponseTypes::Flow(Box::new(flow))),
            ..Default::default()
        });
    }
    app
}

#[test]
fn the_l7_tab_counts_tls_hellos_by_server_name_beside_http() {
    let theme = Theme::built_in("dark").unwrap();
    let mut app = lab_with_tls();
    let world = &app.stats.http.services["world"];
    assert_eq!(world.tls, 3);
    assert_eq!(world.tls_names["api.example.com"].hellos, 2);
    assert_eq!(world.tls_names["cdn.example.com"].version, "TLS 1.2");
    let cart = &app.stats.http.services["shop/cart"];
    assert_eq!((cart.requests, cart.tls), (10, 1));
    app.show_tab(super::app::Tab::Http);
    let t = screen(&mut app, &theme, 140, 24);
    let shown = text(&t);
    assert!(shown.contains("F5 L7"), "{shown}");
    assert!(
        shown.contains("3 api.example.com TLS 1.3 (+1 names)"),
        "{shown}"
    );
    // A TLS-only service lists its server names below.
    app.panel_row = 1;
    insta::assert_snapshot!("ui_l7_tls", screen(&mut app, &theme, 140, 24).backend());
}

#[test]
fn what_if_marks_the_edges_and_flows_candidates_would_cut() {
    use webb_proto::analysis::{WhatIfChange, WhatIfPair, WhatIfResponse};
    let theme = Theme::built_in("dark").unwrap();
    let mut app = lab_app();
    // W opens the file prompt; Enter hands the files to the event loop.
    app.on_key(key('W'), 10);
    assert_eq!(app.mode, Mode::WhatIfFiles);
    for c in "db-policy.yaml 'other file.yaml'".chars() {
        app.on_key(key(c), 10);
    }
    assert_eq!(
        app.on_key(KeyCode::Enter.into(), 10),
        Action::WhatIf(vec!["db-policy.yaml".into(), "other file.yaml".into()])
    );
    app.start_what_if(
        vec!["db-policy.yaml".into()],
        vec!["kind: NetworkPolicy".into()],
    );
    let t = screen(&mut app, &theme, 120, 24);
    assert!(
        text(&t).contains("what-if db-policy.yaml: asking..."),
        "{}",
        text(&t)
    );
    app.what_if_answer(Ok(WhatIfResponse {
        pairs: vec![WhatIfPair {
            change: WhatIfChange::WhatIfWouldDrop as i32,
            source: "shop/cart".into(),
            destination: "shop/db".into(),
            port: "5432/TCP".into(),
            connections: 10,
            policies: vec!["shop/db-allow-nobody".into()],
            direction: "INGRESS".into(),
            ..Default::default()
        }],
        connections_decided: 40,
        ..Default::default()
    }));
    assert_eq!(app.graph.model.cut.len(), 1);
    let w = app.what_if.as_ref().unwrap();
    let cut: Vec<_> = app
        .flows
        .iter()
        .filter(|f| w.change(f) == Some(WhatIfChange::WhatIfWouldDrop))
        .collect();
    assert_eq!(cut.len(), 10, "cart -> db's flows, and only them");
    assert!(
        cut.iter()
            .all(|f| f.destination.as_ref().unwrap().pod_name == "db-3")
    );
    let t = screen(&mut app, &theme, 140, 30);
    let shown = text(&t);
    assert!(
        shown.contains("10 connections would drop, 0 allow, of 40"),
        "{shown}"
    );
    assert!(shown.contains("✂ WOULD DROP"), "{shown}");
    app.show_tab(super::app::Tab::Graph);
    app.graph.selected = Some("shop/cart".into());
    insta::assert_snapshot!(
        "ui_graph_what_if",
        screen(&mut app, &theme, 140, 32).backend()
    );
    // An error is shown, and the last answer's marks stay.
    app.what_if_answer(Err("no what-if answer within 10s".into()));
    let shown = text(&screen(&mut app, &theme, 140, 30));
    assert!(shown.contains("no what-if answer within 10s"), "{shown}");
    // No files: what-if stops.
    app.start_what_if(Vec::new(), Vec::new());
    assert!(app.what_if.is_none() && app.graph.model.cut.is_empty());
}

#[test]
fn the_time_cursor_moves_narrows_and_widens_the_window_and_l_goes_live() {
    use super::app::Window;
    use chrono::{TimeZone as _, Utc};
    let theme = Theme::built_in("dark").unwrap();
    let at = |h: u32, m: u32| Utc.with_ymd_and_hms(2026, 12, 7, h, m, 0).unwrap();
    let w = Window {
        since: at(20, 0),
        until: at(21, 0),
    };
    // Never past now.
    assert_eq!(
        w.moved(1, at(21, 30)),
        Window {
            since: at(20, 30),
            until: at(21, 30)
        }
    );
    assert_eq!(
        w.moved(-1, at(22, 0)),
        Window {
            since: at(19, 0),
            until: at(20, 0)
        }
    );
    assert_eq!(
        w.scaled(0.5),
        Window {
            since: at(20, 30),
            until: at(21, 0)
        }
    );
    assert_eq!(
        w.scaled(2.0),
        Window {
            since: at(19, 0),
            until: at(21, 0)
        }
    );

    let mut app = lab_app();
    // Without a window the keys do nothing.
    assert_eq!(app.on_key(key('['), 10), Action::None);
    app.window = Some(w);
    app.link = Link::Window;
    let t = screen(&mut app, &theme, 140, 24);
    assert!(
        text(&t).contains(
            "WINDOW  0 flows/s  buffered 89/1000  2026-12-07 20:00:00 .. 21:00:00 UTC (1h"
        ),
        "{}",
        text(&t)
    );
    assert!(text(&t).contains("[ ] earlier/later"), "{}", text(&t));
    let earlier = Window {
        since: at(19, 0),
        until: at(20, 0),
    };
    assert_eq!(app.on_key(key('['), 10), Action::Window(Some(earlier)));
    // The buffer and the counts start again for the new window.
    assert_eq!((app.flows.len(), app.visible_len()), (0, 0));
    assert_eq!(app.stats.drops.total, 0);
    assert_eq!(app.graph.model.node_count(), 0);
    assert_eq!(app.window, Some(earlier));
    assert_eq!(
        app.on_key(key('{'), 10),
        Action::Window(Some(Window {
            since: at(19, 30),
            until: at(20, 0)
        }))
    );
    assert_eq!(app.on_key(key('L'), 10), Action::Window(None));
    assert_eq!(app.window, None);
}
