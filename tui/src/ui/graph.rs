//! The service dependency graph: workloads as nodes, and for each
//! client -> server pair an edge that aggregates its flows, drops, HTTP
//! errors and latency. Updated once per flow in constant time; what is drawn
//! is a `View` of it (namespaces collapsed or not) laid out by `layout.rs`,
//! both rebuilt only when the graph's shape or the collapsing changes.

pub mod layout;

use std::collections::BTreeSet;

use petgraph::{
    graph::{DiGraph, EdgeIndex, NodeIndex},
    visit::EdgeRef as _,
};
use rustc_hash::FxHashMap;
use webb_proto::flow::{Flow, L7FlowType, Verdict, layer7::Record};

use super::stats::{Histogram, Series, client_server, flow_second, namespace_of, peer};
use layout::Layout;

/// One client -> server pair's traffic.
#[derive(Default)]
pub struct EdgeStats {
    pub flows: u64,
    pub drops: u64,
    /// HTTP responses, and those with a 5xx status.
    pub http: u64,
    pub http_errors: u64,
    /// Request -> response latency (HTTP and DNS), allocated on first use.
    pub latency: Option<Box<Histogram>>,
    pub recent: Series<8>,
}

/// Seconds the flows/s figure averages over.
pub const RATE_SECONDS: i64 = 5;

/// Above this many workloads, namespaces start collapsed.
pub const AUTO_COLLAPSE: usize = 40;

#[derive(Default)]
pub struct ServiceGraph {
    graph: DiGraph<Box<str>, EdgeStats>,
    nodes: FxHashMap<Box<str>, NodeIndex>,
    edges: FxHashMap<(NodeIndex, NodeIndex), EdgeIndex>,
    /// The newest flow second seen.
    pub now: i64,
    /// Changes whenever a node or an edge is added.
    pub generation: u64,
    /// Edges with connections candidate policies would drop (what-if).
    pub cut: rustc_hash::FxHashSet<EdgeIndex>,
    client: String,
    server: String,
}

impl ServiceGraph {
    fn node(&mut self, name: &str) -> NodeIndex {
        if let Some(n) = self.nodes.get(name) {
            return *n;
        }
        let n = self.graph.add_node(name.into());
        self.nodes.insert(name.into(), n);
        self.generation += 1;
        n
    }

    /// Counts one flow against its client -> server edge.
    pub fn add(&mut self, f: &Flow) {
        let (client, server) = client_server(f);
        let (mut c, mut s) = (
            std::mem::take(&mut self.client),
            std::mem::take(&mut self.server),
        );
        peer(client, &mut c);
        peer(server, &mut s);
        let (a, b) = (self.node(&c), self.node(&s));
        (self.client, self.server) = (c, s);
        let e = match self.edges.get(&(a, b)) {
            Some(e) => *e,
            None => {
                let e = self.graph.add_edge(a, b, EdgeStats::default());
                self.edges.insert((a, b), e);
                self.generation += 1;
                e
            }
        };
        let stats = &mut self.graph[e];
        stats.flows += 1;
        if let Some(sec) = flow_second(f) {
            stats.recent.add(sec);
            self.now = self.now.max(sec);
        }
        if f.verdict == Verdict::Dropped as i32 {
            stats.drops += 1;
        }
        if let Some(l7) = &f.l7
            && l7.r#type == L7FlowType::Response as i32
        {
            if let Some(Record::Http(h)) = &l7.record {
                stats.http += 1;
                stats.http_errors += u64::from(h.code >= 500);
            }
            if l7.latency_ns > 0 {
                stats
                    .latency
                    .get_or_insert_with(Default::default)
                    .add(l7.latency_ns);
            }
        }
    }

    /// Marks the edges of these flows as cut (and no others).
    pub fn mark_cut<'a>(&mut self, flows: impl Iterator<Item = &'a std::sync::Arc<Flow>>) {
        self.cut.clear();
        let (mut c, mut s) = (String::new(), String::new());
        for f in flows {
            let (client, server) = client_server(f);
            peer(client, &mut c);
            peer(server, &mut s);
            if let (Some(a), Some(b)) = (self.nodes.get(c.as_str()), self.nodes.get(s.as_str()))
                && let Some(e) = self.edges.get(&(*a, *b))
            {
                self.cut.insert(*e);
            }
        }
    }

    /// Whether candidate policies would cut a drawn edge.
    pub fn is_cut(&self, e: &ViewEdge) -> bool {
        !self.cut.is_empty() && e.members.iter().any(|m| self.cut.contains(m))
    }

    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }

    /// The graph as drawn: each node under its display name (`ns/*` for a
    /// collapsed namespace), and the edges between display nodes with the
    /// model edges they stand for.
    pub fn view(&self, collapse: &Collapse) -> View {
        let mut view = View::default();
        let mut of_model = Vec::with_capacity(self.graph.node_count());
        for n in self.graph.node_indices() {
            let name = &*self.graph[n];
            let shown = match namespace_of(name) {
                Some(ns) if collapse.is_collapsed(ns) => format!("{ns}/*"),
                _ => name.to_owned(),
            };
            let next = view.nodes.len();
            let i = *view.index.entry(shown.clone()).or_insert(next);
            if i == next {
                view.nodes.push(shown);
            }
            of_model.push(i);
        }
        let mut edge_of: FxHashMap<(usize, usize), usize> = FxHashMap::default();
        for e in self.graph.edge_references() {
            let (a, b) = (of_model[e.source().index()], of_model[e.target().index()]);
            let next = view.edges.len();
            let i = *edge_of.entry((a, b)).or_insert(next);
            if i == next {
                view.edges.push(ViewEdge {
                    from: a,
                    to: b,
                    members: Vec::new(),
                });
            }
            view.edges[i].members.push(e.id());
        }
        view
    }

    /// What a drawn edge adds up to.
    pub fn summary(&self, e: &ViewEdge, with_latency: bool) -> EdgeSummary {
        let mut s = EdgeSummary::default();
        let mut latency = Histogram::default();
        for m in &e.members {
            let st = &self.graph[*m];
            s.flows += st.flows;
            s.drops += st.drops;
            s.http += st.http;
            s.http_errors += st.http_errors;
            s.rate += st.recent.rate(self.now, RATE_SECONDS);
            if with_latency && let Some(h) = &st.latency {
                latency.merge(h);
            }
        }
        if with_latency {
            s.p95_ns = latency.quantile(0.95);
        }
        s
    }

    pub fn namespaces(&self) -> usize {
        self.graph
            .node_weights()
            .filter_map(|n| namespace_of(n))
            .collect::<BTreeSet<_>>()
            .len()
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct EdgeSummary {
    pub flows: u64,
    pub drops: u64,
    pub http: u64,
    pub http_errors: u64,
    /// Flows/s over the last `RATE_SECONDS`.
    pub rate: f64,
    pub p95_ns: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Healthy,
    /// Some drops or server errors.
    Warning,
    /// At least 10 % of flows dropped or 5 % of responses 5xx.
    Critical,
}

impl EdgeSummary {
    pub fn health(&self) -> Health {
        let drop_share = self.drops as f64 / self.flows.max(1) as f64;
        let error_share = self.http_errors as f64 / self.http.max(1) as f64;
        if (self.drops > 0 && drop_share >= 0.10) || (self.http_errors > 0 && error_share >= 0.05) {
            Health::Critical
        } else if self.drops > 0 || self.http_errors > 0 {
            Health::Warning
        } else {
            Health::Healthy
        }
    }
}

#[derive(Default)]
pub struct View {
    pub nodes: Vec<String>,
    pub index: FxHashMap<String, usize>,
    pub edges: Vec<ViewEdge>,
}

pub struct ViewEdge {
    pub from: usize,
    pub to: usize,
    pub members: Vec<EdgeIndex>,
}

/// Which namespaces are drawn as one node.
#[derive(Debug, Default, Clone)]
pub struct Collapse {
    /// Every namespace collapsed, except those toggled.
    pub all: bool,
    pub toggled: BTreeSet<String>,
    /// Set once the graph grew past `AUTO_COLLAPSE` workloads, or the user
    /// chose: from then on the user decides.
    pub decided: bool,
}

impl Collapse {
    pub fn is_collapsed(&self, ns: &str) -> bool {
        self.all != self.toggled.contains(ns)
    }

    pub fn toggle(&mut self, ns: &str) {
        self.decided = true;
        if !self.toggled.remove(ns) {
            self.toggled.insert(ns.to_owned());
        }
    }

    pub fn toggle_all(&mut self) {
        self.decided = true;
        self.all = !self.all;
        self.toggled.clear();
    }
}

/// Moves the selection in the drawn graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Up,
    Down,
    Left,
    Right,
}

/// The graph tab's state: the model, how it is drawn, what is selected.
#[derive(Default)]
pub struct Graph {
    pub model: ServiceGraph,
    pub collapse: Collapse,
    /// The selected node's display name.
    pub selected: Option<String>,
    /// The selected edge, as an index into `incident()`.
    pub edge: Option<usize>,
    drawn: Option<Drawn>,
}

pub struct Drawn {
    generation: u64,
    collapse: (bool, BTreeSet<String>),
    pub view: View,
    pub layout: Layout,
}

impl Graph {
    pub fn add(&mut self, f: &Flow) {
        self.model.add(f);
        if !self.collapse.decided && self.model.node_count() > AUTO_COLLAPSE {
            self.collapse.decided = true;
            self.collapse.all = true;
        }
    }

    /// Forgets every count (and the layout made from them), keeping what
    /// the user chose: the collapsing and the selection.
    pub fn clear_counts(&mut self) {
        self.model = ServiceGraph::default();
        self.drawn = None;
        self.edge = None;
    }

    /// Whether `prepare` would lay the graph out again.
    pub fn is_stale(&self) -> bool {
        self.drawn.as_ref().is_none_or(|d| {
            d.generation != self.model.generation
                || d.collapse.0 != self.collapse.all
                || d.collapse.1 != self.collapse.toggled
        })
    }

    /// Rebuilds the view and its layout if the graph's shape changed.
    pub fn prepare(&mut self) {
        if !self.is_stale() {
            return;
        }
        let view = self.model.view(&self.collapse);
        let widths: Vec<u32> = view
            .nodes
            .iter()
            .map(|n| n.chars().count() as u32)
            .collect();
        let edges: Vec<(usize, usize)> = view.edges.iter().map(|e| (e.from, e.to)).collect();
        let layout = layout::layout(&widths, &edges);
        if self
            .selected
            .as_ref()
            .is_none_or(|s| !view.index.contains_key(s))
        {
            // Keep the selection on the namespace a collapsed node went into.
            let fallback = self
                .selected
                .as_deref()
                .and_then(namespace_of)
                .map(|ns| format!("{ns}/*"));
            self.selected = fallback
                .filter(|s| view.index.contains_key(s))
                .or_else(|| layout.first_node().map(|n| view.nodes[n].clone()));
            self.edge = None;
        }
        self.drawn = Some(Drawn {
            generation: self.model.generation,
            collapse: (self.collapse.all, self.collapse.toggled.clone()),
            view,
            layout,
        });
    }

    pub fn drawn(&self) -> Option<&Drawn> {
        self.drawn.as_ref()
    }

    pub fn selected_index(&self) -> Option<usize> {
        let d = self.drawn.as_ref()?;
        d.view.index.get(self.selected.as_ref()?).copied()
    }

    /// The drawn edges touching the selected node: outgoing first, then
    /// incoming, each by the other end's name.
    pub fn incident(&self) -> Vec<usize> {
        let (Some(d), Some(n)) = (&self.drawn, self.selected_index()) else {
            return Vec::new();
        };
        let mut out: Vec<usize> = (0..d.view.edges.len())
            .filter(|i| d.view.edges[*i].from == n)
            .collect();
        out.sort_by_key(|i| &d.view.nodes[d.view.edges[*i].to]);
        let mut inc: Vec<usize> = (0..d.view.edges.len())
            .filter(|i| d.view.edges[*i].to == n && d.view.edges[*i].from != n)
            .collect();
        inc.sort_by_key(|i| &d.view.nodes[d.view.edges[*i].from]);
        out.extend(inc);
        out
    }

    pub fn selected_edge(&self) -> Option<usize> {
        self.incident().get(self.edge?).copied()
    }

    pub fn step(&mut self, step: Step) {
        let (Some(d), Some(n)) = (&self.drawn, self.selected_index()) else {
            return;
        };
        if let Some(next) = d.layout.neighbour(n, step) {
            self.selected = Some(d.view.nodes[next].clone());
            self.edge = None;
        }
    }

    /// Cycles through the selected node's edges (then back to none).
    pub fn next_edge(&mut self, back: bool) {
        let n = self.incident().len();
        if n == 0 {
            self.edge = None;
            return;
        }
        self.edge = match (self.edge, back) {
            (None, false) => Some(0),
            (None, true) => Some(n - 1),
            (Some(i), false) if i + 1 < n => Some(i + 1),
            (Some(i), true) if i > 0 => Some(i - 1),
            _ => None,
        };
    }

    /// What the flow table should narrow to: the selected edge's two ends,
    /// or the selected node.
    pub fn focus(&self) -> Option<Focus> {
        let d = self.drawn.as_ref()?;
        if let Some(e) = self.selected_edge() {
            let e = &d.view.edges[e];
            return Some(Focus::Edge(
                d.view.nodes[e.from].clone(),
                d.view.nodes[e.to].clone(),
            ));
        }
        self.selected.clone().map(Focus::Node)
    }
}

/// A narrowing of the flow table to part of the graph, in both directions
/// (requests and their replies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Focus {
    Node(String),
    Edge(String, String),
    /// A Top row: initiator and responder as `webb top` names them (either
    /// direction: replies too).
    Pair(String, String),
}

impl Focus {
    pub fn matches(&self, f: &Flow, scratch: &mut String) -> bool {
        use super::stats::peer_matches;
        let (src, dst) = (f.source.as_ref(), f.destination.as_ref());
        match self {
            Focus::Node(n) => peer_matches(n, src, scratch) || peer_matches(n, dst, scratch),
            Focus::Edge(a, b) => {
                (peer_matches(a, src, scratch) && peer_matches(b, dst, scratch))
                    || (peer_matches(b, src, scratch) && peer_matches(a, dst, scratch))
            }
            Focus::Pair(a, b) => {
                use webb_proto::top::workload_name;
                let (s, d) = (workload_name(f, true), workload_name(f, false));
                (&s == a && &d == b) || (&s == b && &d == a)
            }
        }
    }

    pub fn text(&self) -> String {
        match self {
            Focus::Node(n) => n.clone(),
            Focus::Edge(a, b) | Focus::Pair(a, b) => format!("{a} <-> {b}"),
        }
    }
}
