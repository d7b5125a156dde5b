//! The dashboard's state and what keys do to it, without any rendering, so
//! that it can be tested directly.

use std::{collections::VecDeque, sync::Arc};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use rustc_hash::FxHashMap;
use webb_proto::{
    analysis::{TopKey, WhatIfChange, WhatIfResponse},
    endpoint::Interner,
    filter::FlowFilters,
    flow::{Flow, Verdict},
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
    top::{Aggregator, Figures, port_name, workload_name},
};

use super::{
    graph::{Focus, Graph, Step},
    stats::Stats,
};
use crate::{filters::FilterArgs, top::SortBy};

/// Buffered flows counted again per frame after a filter change (about
/// 10 ms of work).
pub const RECOUNT_PER_FRAME: usize = 15_000;

/// Distinct endpoints the buffer shares before its table starts over (a
/// cluster with more pods than this shares less, and stays correct).
const ENDPOINT_INTERN_CAPACITY: usize = 65_536;

/// The verdicts with a toggle key, in chip order.
pub const VERDICT_KEYS: [(char, Verdict); 5] = [
    ('1', Verdict::Forwarded),
    ('2', Verdict::Dropped),
    ('3', Verdict::Audit),
    ('4', Verdict::Error),
    ('5', Verdict::Redirected),
];

/// The dashboard's screens, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Flows,
    Graph,
    Drops,
    Dns,
    Http,
    Nodes,
    Top,
}

impl Tab {
    pub const ALL: [Tab; 7] = [
        Tab::Flows,
        Tab::Graph,
        Tab::Drops,
        Tab::Dns,
        Tab::Http,
        Tab::Nodes,
        Tab::Top,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Flows => "Flows",
            Tab::Graph => "Graph",
            Tab::Drops => "Drops",
            Tab::Dns => "DNS",
            Tab::Http => "L7",
            Tab::Nodes => "Nodes",
            Tab::Top => "Top",
        }
    }

    fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    fn cycle(self, back: bool) -> Tab {
        let n = Tab::ALL.len();
        Tab::ALL[(self.index() + if back { n - 1 } else { 1 }) % n]
    }
}

/// A node as the Nodes tab shows it (from a relay's GetNodes).
pub type NodeInfo = webb_proto::observer::Node;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Table,
    /// The selected flow's fields and JSON.
    Detail,
    Help,
    /// Typing into the filter bar.
    Filter,
    /// Typing candidate policy files for what-if (W).
    WhatIfFiles,
}

/// What the event loop must do after a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    None,
    Quit,
    /// Subscribe again with these filters.
    Resubscribe(FilterArgs),
    /// Write these flows to a JSON file.
    Save {
        all: bool,
    },
    /// Decide the buffered connections with these candidate policy files
    /// (none: stop showing what-if).
    WhatIf(Vec<String>),
    /// Show this window of history (the buffer was cleared for it), or
    /// follow live again (None).
    Window(Option<Window>),
}

/// What a mouse click landed on (worked out by the view, which knows where
/// things are drawn).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hit {
    Tab(Tab),
    /// A flow table row, counted from the newest visible flow.
    Row(usize),
    Node(String),
    /// A row of the graph's side panel: the selected workload's n-th edge.
    Edge(usize),
    PanelRow(usize),
}

/// Connection state shown in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Live,
    /// Reading a file.
    Replay,
    /// The file has been read to its end.
    Done,
    /// Lost; retrying after the message.
    Down(String),
    /// Reading a window of history from the server.
    Loading,
    /// The window is read (history: nothing more comes).
    Window,
}

/// A window of history shown instead of the live stream (`--since`, and
/// the time cursor's keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since: chrono::DateTime<chrono::Utc>,
    pub until: chrono::DateTime<chrono::Utc>,
}

impl Window {
    pub fn width(&self) -> chrono::Duration {
        self.until - self.since
    }

    /// The window moved by `steps` of its width (negative: earlier), never
    /// past `now`.
    pub fn moved(&self, steps: i32, now: chrono::DateTime<chrono::Utc>) -> Window {
        let w = self.width();
        let mut until = self.until + w * steps;
        if until > now {
            until = now;
        }
        Window {
            since: until - w,
            until,
        }
    }

    /// The window `factor` times as wide (at least a second), ending where
    /// it ends.
    pub fn scaled(&self, factor: f64) -> Window {
        let ms = ((self.width().num_milliseconds() as f64 * factor) as i64).max(1000);
        Window {
            since: self.until - chrono::Duration::milliseconds(ms),
            until: self.until,
        }
    }
}

pub struct App {
    pub source: String,
    pub link: Link,
    pub mode: Mode,
    pub tab: Tab,
    /// The service graph and the panels' counts, over every buffered flow
    /// that passes the filter (verdict toggles and focus narrow the table
    /// only).
    pub graph: Graph,
    pub stats: Stats,
    /// The Top tab: the same flows summed per workload pair, as `webb top`
    /// sums them, and its view (taken when the tab is drawn), largest first
    /// by `top_sort`.
    pub top: Aggregator,
    pub top_sort: SortBy,
    pub top_view: TopView,
    /// When `top_view` was taken: it is taken again twice a second (a
    /// snapshot of thousands of pairs each frame would cost more than the
    /// other tabs' whole frame), and at once after a change of filter or tab.
    top_taken: Option<std::time::Instant>,
    /// The part of the graph the table is narrowed to.
    pub focus: Option<Focus>,
    /// The node list, when the server is a relay (None: it has none).
    pub node_list: Option<Vec<NodeInfo>>,
    /// Selected row of the Drops, DNS, HTTP or Nodes panel.
    pub panel_row: usize,
    /// A recount under way: the next and the end absolute buffer index.
    recounting: Option<(u64, u64)>,
    scratch: std::cell::RefCell<String>,
    /// Every buffered flow, oldest first.
    pub flows: VecDeque<Arc<Flow>>,
    /// Gives the buffered flows of one endpoint one shared copy of it.
    interner: Interner,
    pub capacity: usize,
    /// Flows dropped from the front of a full buffer.
    pub evicted: u64,
    /// Index into `flows` of the first flow `visible` refers to (`flows`
    /// positions shift as old flows go).
    base: u64,
    /// Absolute indexes (`base` + position) of the flows that pass the
    /// filters and verdict toggles.
    visible: VecDeque<u64>,
    pub hidden_verdicts: Vec<Verdict>,
    pub filter_text: String,
    pub filter_args: FilterArgs,
    filters: FlowFilters,
    pub filter_error: Option<String>,
    /// Input of the filter bar while typing.
    pub input: String,
    pub paused: bool,
    /// Selected row, counted from the newest visible flow (0 = newest).
    pub selected: usize,
    /// The first table row shown, counted the same way.
    pub offset: usize,
    pub lost_events: u64,
    pub nodes: (u32, u32),
    /// Flows/s over the last second, for the header.
    pub rate: f64,
    pub message: Option<String>,
    /// Candidate policies being tried, and what the server decided.
    pub what_if: Option<WhatIf>,
    /// The window of history shown, instead of the live stream.
    pub window: Option<Window>,
}

/// What-if in the dashboard: candidate policy files, and the server's
/// answer (webb.analysis.Analysis/WhatIf over the buffered window) turned
/// into the connections it would change, which the graph and the flow
/// table mark.
#[derive(Debug, Default)]
pub struct WhatIf {
    /// The files as given, and their text.
    pub files: Vec<String>,
    pub texts: Vec<String>,
    pub answer: Option<WhatIfResponse>,
    pub error: Option<String>,
    /// (initiator, responder, port) as `webb top` names them.
    changes: FxHashMap<(String, String, String), WhatIfChange>,
}

impl WhatIf {
    /// What the candidates would do to the connection a flow belongs to.
    pub fn change(&self, f: &Flow) -> Option<WhatIfChange> {
        if self.changes.is_empty() {
            return None;
        }
        let reply = super::stats::is_reply(f);
        let key = (
            workload_name(f, !reply),
            workload_name(f, reply),
            port_name(f, reply),
        );
        self.changes.get(&key).copied()
    }

    fn take(&mut self, answer: Result<WhatIfResponse, String>) {
        match answer {
            Ok(a) => {
                self.changes = a
                    .pairs
                    .iter()
                    .filter_map(|p| {
                        let change = WhatIfChange::try_from(p.change).ok()?;
                        Some((
                            (p.source.clone(), p.destination.clone(), p.port.clone()),
                            change,
                        ))
                    })
                    .collect();
                self.answer = Some(a);
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
    }
}

impl App {
    pub fn new(source: String, capacity: usize, filter_args: FilterArgs) -> anyhow::Result<Self> {
        let filters = filter_args.compile()?;
        Ok(Self {
            source,
            link: Link::Connecting,
            mode: Mode::Table,
            tab: Tab::Flows,
            graph: Graph::default(),
            stats: Stats::default(),
            top: Aggregator::new(vec![TopKey::Workload]),
            top_sort: SortBy::Bytes,
            top_view: TopView::default(),
            top_taken: None,
            focus: None,
            node_list: None,
            panel_row: 0,
            recounting: None,
            scratch: Default::default(),
            flows: VecDeque::new(),
            interner: Interner::new(ENDPOINT_INTERN_CAPACITY),
            capacity: capacity.max(1),
            evicted: 0,
            base: 0,
            visible: VecDeque::new(),
            hidden_verdicts: Vec::new(),
            filter_text: String::new(),
            filter_args,
            filters,
            filter_error: None,
            input: String::new(),
            paused: false,
            selected: 0,
            offset: 0,
            lost_events: 0,
            nodes: (0, 0),
            rate: 0.0,
            message: None,
            what_if: None,
            window: None,
        })
    }

    fn shows(&self, f: &Flow) -> bool {
        self.filters.matches(f) && self.shows_passing(f)
    }

    /// Whether a flow that passes the filter shows in the table.
    fn shows_passing(&self, f: &Flow) -> bool {
        let v = Verdict::try_from(f.verdict).unwrap_or_default();
        !self.hidden_verdicts.contains(&v)
            && self
                .focus
                .as_ref()
                .is_none_or(|focus| focus.matches(f, &mut self.scratch.borrow_mut()))
    }

    /// Counts a flow in the graph and the panels.
    fn count(&mut self, f: &Flow) {
        self.graph.add(f);
        self.stats.add(f);
        self.top.add(f);
    }

    /// Starts counting the buffer again after the filter changed. The
    /// table is filtered at once; the graph and the panels are counted a
    /// slice per frame (`recount_step`), so that a key is answered in one
    /// frame even with 100,000 flows buffered. Flows that arrive meanwhile
    /// are counted as they come.
    fn recount(&mut self) {
        self.graph.clear_counts();
        self.stats = Stats::default();
        self.top = Aggregator::new(vec![TopKey::Workload]);
        self.top_taken = None;
        self.recounting = Some((self.base, self.base + self.flows.len() as u64));
    }

    /// Counts up to `budget` more buffered flows of a recount.
    pub fn recount_step(&mut self, budget: usize) {
        let Some((next, end)) = self.recounting else {
            return;
        };
        let from = next.max(self.base);
        let to = end.min(from + budget as u64);
        for abs in from..to {
            if let Some(f) = usize::try_from(abs - self.base)
                .ok()
                .and_then(|i| self.flows.get(i))
                .cloned()
                && self.filters.matches(&f)
            {
                self.count(&f);
            }
        }
        self.recounting = (to < end).then_some((to, end));
    }

    /// How far a recount is, 0.0..1.0 (None when there is none).
    pub fn recount_progress(&self) -> Option<f64> {
        let (next, end) = self.recounting?;
        let total = self.flows.len().max(1) as f64;
        Some(1.0 - (end.saturating_sub(next.max(self.base))) as f64 / total)
    }

    /// Takes in one response from the source.
    pub fn push(&mut self, resp: GetFlowsResponse) {
        match resp.response_types {
            Some(ResponseTypes::Flow(mut f)) => {
                // Each response decodes its own copy of both endpoints;
                // shared, they cost the buffer a pointer per flow.
                self.interner.intern_flow(&mut f);
                let f: Arc<Flow> = Arc::from(f);
                if self.flows.len() == self.capacity {
                    self.flows.pop_front();
                    self.evicted += 1;
                    self.base += 1;
                    while self.visible.front().is_some_and(|i| *i < self.base) {
                        self.visible.pop_front();
                    }
                }
                let index = self.base + self.flows.len() as u64;
                let passes = self.filters.matches(&f);
                if passes {
                    self.count(&f);
                }
                let shown = passes && self.shows_passing(&f);
                self.flows.push_back(f);
                if shown {
                    self.visible.push_back(index);
                    // Paused, or scrolled into history: the selection stays
                    // on its flow.
                    if self.paused || self.selected > 0 {
                        self.selected += 1;
                        self.offset += 1;
                    }
                }
            }
            Some(ResponseTypes::LostEvents(l)) => self.lost_events += l.num_events_lost,
            _ => {}
        }
        let last = self.visible_len().saturating_sub(1);
        self.selected = self.selected.min(last);
    }

    /// Keeps the selection on screen for a table of `page` rows.
    pub fn fit(&mut self, page: usize) {
        let page = page.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        }
        if self.selected >= self.offset + page {
            self.offset = self.selected + 1 - page;
        }
        let max = self.visible_len().saturating_sub(page);
        self.offset = self.offset.min(max);
    }

    /// Gets the state ready to draw on a screen whose table shows `page`
    /// rows: the selection on screen, the graph laid out if it is shown.
    pub fn prepare(&mut self, page: usize) {
        self.fit(page);
        self.recount_step(RECOUNT_PER_FRAME);
        if self.tab == Tab::Graph {
            self.graph.prepare();
        }
        if self.tab == Tab::Top
            && self
                .top_taken
                .is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(500))
        {
            self.top_view = TopView::of(&self.top, self.top_sort);
            self.top_taken = Some(std::time::Instant::now());
        }
        let rows = match self.tab {
            Tab::Top => self.top_view.rows.len(),
            Tab::Drops => self.stats.drops.reasons.len(),
            Tab::Dns => self.stats.dns.names.len(),
            Tab::Http => self.stats.http.services.len(),
            Tab::Nodes => self.node_list.as_ref().map_or(0, Vec::len),
            _ => 0,
        };
        self.panel_row = self.panel_row.min(rows.saturating_sub(1));
    }

    pub fn visible_len(&self) -> usize {
        self.visible.len()
    }

    /// The `n`-th newest visible flow.
    pub fn visible_flow(&self, n: usize) -> Option<&Arc<Flow>> {
        let i = *self.visible.get(self.visible.len().checked_sub(n + 1)?)?;
        self.flows
            .get(usize::try_from(i.checked_sub(self.base)?).ok()?)
    }

    pub fn selected_flow(&self) -> Option<&Arc<Flow>> {
        self.visible_flow(self.selected)
    }

    fn refilter(&mut self) {
        self.visible = self
            .flows
            .iter()
            .enumerate()
            .filter(|(_, f)| self.shows(f))
            .map(|(i, _)| self.base + i as u64)
            .collect();
        self.selected = self.selected.min(self.visible.len().saturating_sub(1));
    }

    /// Applies filter-bar text: the same flags as `webb observe`. An error
    /// is kept for the bar to show; the previous filters stay.
    pub fn apply_filter(&mut self, text: &str) -> Action {
        match parse_filter(text) {
            Ok(args) => match args.compile() {
                Ok(filters) => {
                    self.filters = filters;
                    self.filter_args = args.clone();
                    self.filter_text = text.trim().to_owned();
                    self.filter_error = None;
                    self.refilter();
                    self.recount();
                    Action::Resubscribe(args)
                }
                Err(e) => {
                    self.filter_error = Some(e.to_string());
                    Action::None
                }
            },
            Err(e) => {
                self.filter_error = Some(e);
                Action::None
            }
        }
    }

    pub fn toggle_verdict(&mut self, v: Verdict) {
        if let Some(i) = self.hidden_verdicts.iter().position(|h| *h == v) {
            self.hidden_verdicts.remove(i);
        } else {
            self.hidden_verdicts.push(v);
        }
        self.refilter();
    }

    fn scroll(&mut self, delta: isize) {
        let last = self.visible_len().saturating_sub(1) as isize;
        self.selected = (self.selected as isize + delta).clamp(0, last.max(0)) as usize;
    }

    /// Narrows the table to a part of the graph (None: everything).
    pub fn set_focus(&mut self, focus: Option<Focus>) {
        self.focus = focus;
        self.selected = 0;
        self.offset = 0;
        self.refilter();
    }

    /// What a key does. `page` is the number of table rows on screen.
    pub fn on_key(&mut self, key: KeyEvent, page: usize) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        match self.mode {
            Mode::Filter => return self.on_filter_key(key),
            Mode::WhatIfFiles => return self.on_what_if_key(key),
            Mode::Help => {
                self.mode = Mode::Table;
                return Action::None;
            }
            Mode::Detail if matches!(key.code, KeyCode::Esc | KeyCode::Enter) => {
                self.mode = Mode::Table;
                return Action::None;
            }
            _ => {}
        }
        self.message = None;
        // Keys every tab shares.
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('?') => {
                self.mode = Mode::Help;
                return Action::None;
            }
            KeyCode::Tab | KeyCode::BackTab => {
                self.show_tab(self.tab.cycle(key.code == KeyCode::BackTab));
                return Action::None;
            }
            KeyCode::F(n) if (1..=Tab::ALL.len() as u8).contains(&n) => {
                self.show_tab(Tab::ALL[usize::from(n - 1)]);
                return Action::None;
            }
            KeyCode::Char(' ') => {
                self.paused = !self.paused;
                return Action::None;
            }
            KeyCode::Char('/') => {
                self.input = self.filter_text.clone();
                self.mode = Mode::Filter;
                return Action::None;
            }
            // The time cursor: the window earlier / later by its width,
            // narrower / wider; L goes back to live.
            KeyCode::Char(c @ ('[' | ']' | '{' | '}')) if let Some(w) = self.window => {
                let next = match c {
                    '[' => w.moved(-1, chrono::Utc::now()),
                    ']' => w.moved(1, chrono::Utc::now()),
                    '{' => w.scaled(0.5),
                    _ => w.scaled(2.0),
                };
                if next == w {
                    return Action::None;
                }
                self.show_window(Some(next));
                return Action::Window(Some(next));
            }
            KeyCode::Char('L') if self.window.is_some() => {
                self.show_window(None);
                return Action::Window(None);
            }
            KeyCode::Char('W') => {
                self.input = self
                    .what_if
                    .as_ref()
                    .map(|w| w.files.join(" "))
                    .unwrap_or_default();
                self.mode = Mode::WhatIfFiles;
                return Action::None;
            }
            KeyCode::Char('x') if self.focus.is_some() => {
                self.set_focus(None);
                return Action::None;
            }
            KeyCode::Char('s') if self.tab == Tab::Flows => return Action::Save { all: false },
            KeyCode::Char('S') => return Action::Save { all: true },
            KeyCode::Char(c) => {
                if let Some((_, v)) = VERDICT_KEYS.iter().find(|(k, _)| *k == c) {
                    self.toggle_verdict(*v);
                    return Action::None;
                }
            }
            _ => {}
        }
        match self.tab {
            Tab::Flows => self.on_table_key(key, page),
            Tab::Graph => self.on_graph_key(key),
            Tab::Top => self.on_top_key(key, page),
            _ => self.on_panel_key(key, page),
        }
        Action::None
    }

    pub fn show_tab(&mut self, tab: Tab) {
        if tab != self.tab {
            self.tab = tab;
            self.panel_row = 0;
            self.top_taken = None;
            if self.mode == Mode::Detail {
                self.mode = Mode::Table;
            }
        }
    }

    fn on_table_key(&mut self, key: KeyEvent, page: usize) {
        let page = page.max(1) as isize;
        match key.code {
            KeyCode::Esc => self.mode = Mode::Table,
            KeyCode::Char('j') | KeyCode::Down => self.scroll(-1),
            KeyCode::Char('k') | KeyCode::Up => self.scroll(1),
            KeyCode::PageDown => self.scroll(-page),
            KeyCode::PageUp => self.scroll(page),
            // g: the oldest; G: back to the newest (and following).
            KeyCode::Char('g') | KeyCode::Home => self.scroll(isize::MAX / 2),
            KeyCode::Char('G') | KeyCode::End => {
                self.selected = 0;
                self.offset = 0;
                self.paused = false;
            }
            KeyCode::Enter if self.selected_flow().is_some() => self.mode = Mode::Detail,
            _ => {}
        }
    }

    fn on_graph_key(&mut self, key: KeyEvent) {
        self.graph.prepare();
        match key.code {
            KeyCode::Char('k') | KeyCode::Up => self.graph.step(Step::Up),
            KeyCode::Char('j') | KeyCode::Down => self.graph.step(Step::Down),
            KeyCode::Char('h') | KeyCode::Left => self.graph.step(Step::Left),
            KeyCode::Char('l') | KeyCode::Right => self.graph.step(Step::Right),
            KeyCode::Char('e') => self.graph.next_edge(false),
            KeyCode::Char('E') => self.graph.next_edge(true),
            KeyCode::Esc => self.graph.edge = None,
            KeyCode::Char('c') => {
                let ns = self.graph.selected.as_deref().and_then(|s| {
                    s.strip_suffix("/*")
                        .or_else(|| super::stats::namespace_of(s))
                        .map(str::to_owned)
                });
                if let Some(ns) = ns {
                    self.graph.collapse.toggle(&ns);
                    // Select the namespace's node, or its first workload.
                    self.graph.prepare();
                }
            }
            KeyCode::Char('C') => {
                self.graph.collapse.toggle_all();
                self.graph.prepare();
            }
            KeyCode::Enter => {
                if let Some(f) = self.graph.focus() {
                    self.set_focus(Some(f));
                    self.tab = Tab::Flows;
                }
            }
            _ => {}
        }
    }

    fn on_top_key(&mut self, key: KeyEvent, page: usize) {
        match key.code {
            // The sort column: o to the right, O to the left.
            KeyCode::Char('o') | KeyCode::Char('O') => {
                let all = SortBy::ALL;
                let i = all.iter().position(|s| *s == self.top_sort).unwrap_or(0);
                let n = all.len();
                let next = if key.code == KeyCode::Char('o') {
                    i + 1
                } else {
                    i + n - 1
                };
                self.top_sort = all[next % n];
                self.top_view = TopView::of(&self.top, self.top_sort);
            }
            KeyCode::Enter => {
                if let Some(row) = self.top_view.rows.get(self.panel_row) {
                    let focus = Focus::Pair(row.source.clone(), row.destination.clone());
                    self.set_focus(Some(focus));
                    self.tab = Tab::Flows;
                }
            }
            _ => self.on_panel_key(key, page),
        }
    }

    fn on_panel_key(&mut self, key: KeyEvent, page: usize) {
        match key.code {
            KeyCode::Char('j') | KeyCode::Down => self.panel_row += 1,
            KeyCode::Char('k') | KeyCode::Up => self.panel_row = self.panel_row.saturating_sub(1),
            KeyCode::PageDown => self.panel_row += page.max(1),
            KeyCode::PageUp => self.panel_row = self.panel_row.saturating_sub(page.max(1)),
            KeyCode::Char('g') | KeyCode::Home => self.panel_row = 0,
            _ => {}
        }
    }

    /// Selects what a mouse click landed on.
    pub fn on_click(&mut self, hit: Hit) {
        match hit {
            Hit::Tab(t) => self.show_tab(t),
            Hit::Row(n) => {
                if n < self.visible_len() {
                    self.selected = n;
                }
            }
            Hit::Node(name) => {
                self.graph.selected = Some(name);
                self.graph.edge = None;
            }
            Hit::Edge(i) => {
                if i < self.graph.incident().len() {
                    self.graph.edge = Some(i);
                }
            }
            Hit::PanelRow(r) => self.panel_row = r,
        }
    }

    fn on_what_if_key(&mut self, key: KeyEvent) -> Action {
        match key.code {
            KeyCode::Esc => {
                self.mode = Mode::Table;
                Action::None
            }
            KeyCode::Enter => {
                self.mode = Mode::Table;
                match shell_words::split(&self.input) {
                    Ok(files) => Action::WhatIf(files),
                    Err(e) => {
                        self.message = Some(format!("what-if files: {e}"));
                        Action::None
                    }
                }
            }
            _ => self.type_into_input(key),
        }
    }

    /// A key typed into the input bar (the filter's or what-if's).
    fn type_into_input(&mut self, key: KeyEvent) -> Action {
        match key.code {
            KeyCode::Backspace => {
                self.input.pop();
            }
            KeyCode::Char(c) => self.input.push(c),
            _ => {}
        }
        Action::None
    }

    /// Shows a window of history (or live flows again): the buffer and
    /// every count start empty; the filters, focus and what-if stay.
    pub fn show_window(&mut self, window: Option<Window>) {
        self.window = window;
        self.flows.clear();
        self.base = 0;
        self.visible.clear();
        self.evicted = 0;
        self.lost_events = 0;
        self.selected = 0;
        self.offset = 0;
        self.paused = false;
        self.recounting = None;
        self.graph.clear_counts();
        self.graph.model.cut.clear();
        self.stats = Stats::default();
        self.top = Aggregator::new(vec![TopKey::Workload]);
        self.top_taken = None;
        self.link = Link::Connecting;
    }

    /// Starts trying candidate policies (their files' text), or stops (none).
    pub fn start_what_if(&mut self, files: Vec<String>, texts: Vec<String>) {
        self.graph.model.cut.clear();
        self.what_if = (!files.is_empty()).then(|| WhatIf {
            files,
            texts,
            ..WhatIf::default()
        });
    }

    /// Takes the server's what-if answer: the graph marks the edges whose
    /// connections would be dropped.
    pub fn what_if_answer(&mut self, answer: Result<WhatIfResponse, String>) {
        let Some(w) = self.what_if.as_mut() else {
            return;
        };
        w.take(answer);
        let w = &*w;
        let cut = self
            .flows
            .iter()
            .filter(|f| w.change(f) == Some(WhatIfChange::WhatIfWouldDrop));
        self.graph.model.mark_cut(cut);
    }

    fn on_filter_key(&mut self, key: KeyEvent) -> Action {
        match key.code {
            KeyCode::Esc => {
                self.mode = Mode::Table;
                self.filter_error = None;
                Action::None
            }
            KeyCode::Enter => {
                let text = self.input.clone();
                let action = self.apply_filter(&text);
                if self.filter_error.is_none() {
                    self.mode = Mode::Table;
                }
                action
            }
            _ => self.type_into_input(key),
        }
    }
}

/// One row of the Top tab.
#[derive(Debug, Clone, PartialEq)]
pub struct TopRow {
    pub source: String,
    pub destination: String,
    pub figures: Figures,
}

/// What the Top tab shows: the pairs, largest first, and the span their
/// rates are over (the counted flows' first to last time).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopView {
    pub rows: Vec<TopRow>,
    pub seconds: f64,
    pub counted: u64,
    pub left_out: u64,
}

impl TopView {
    pub fn of(top: &Aggregator, sort: SortBy) -> Self {
        let answer = top.snapshot();
        let seconds = match (answer.first, answer.last) {
            (Some(f), Some(l)) => {
                let ns = (l.seconds - f.seconds) as f64 * 1e9 + f64::from(l.nanos - f.nanos);
                (ns / 1e9).max(1.0)
            }
            _ => 1.0,
        };
        let rows = crate::top::ranked(&answer, sort)
            .into_iter()
            .map(|(figures, i)| {
                let keys = &answer.pairs[i].keys;
                let end = |source: bool| {
                    keys.first().map_or_else(String::new, |k| {
                        if source {
                            k.source.clone()
                        } else {
                            k.destination.clone()
                        }
                    })
                };
                TopRow {
                    source: end(true),
                    destination: end(false),
                    figures,
                }
            })
            .collect();
        Self {
            rows,
            seconds,
            counted: answer.flows_counted,
            left_out: answer.flows_left_out,
        }
    }
}

/// Parses filter-bar text with `webb observe`'s filter flags.
pub fn parse_filter(text: &str) -> Result<FilterArgs, String> {
    use clap::{Args as _, FromArgMatches as _};
    let words = shell_words::split(text).map_err(|e| format!("{e}"))?;
    let cmd = FilterArgs::augment_args(
        clap::Command::new("filter")
            .no_binary_name(true)
            .disable_help_flag(true),
    );
    let m = cmd
        .try_get_matches_from(words)
        .map_err(|e| first_line(&e.to_string()))?;
    FilterArgs::from_arg_matches(&m).map_err(|e| first_line(&e.to_string()))
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim_start_matches("error: ")
        .to_owned()
}
