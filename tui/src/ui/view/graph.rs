//! The service graph tab: the laid-out graph drawn with box characters on
//! the left (or top), and the selected workload's edges on the right.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::Style,
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState},
};
use webb_themes::{Role, Theme};

use super::super::{
    app::{App, Hit},
    graph::{
        Health,
        layout::{Placed, Segment},
    },
};
use super::panels::duration;

/// Graph area and side panel.
fn split(area: Rect) -> (Rect, Rect) {
    if area.width >= 120 {
        let [g, s] = Layout::horizontal([Constraint::Fill(1), Constraint::Length(52)]).areas(area);
        (g, s)
    } else {
        let [g, s] = Layout::vertical([Constraint::Fill(1), Constraint::Length(8)]).areas(area);
        (g, s)
    }
}

fn inner(area: Rect) -> Rect {
    Block::default().borders(Borders::ALL).inner(area)
}

/// The top-left graph cell shown: the selected node in the middle, as far
/// as the graph allows.
fn origin(app: &App, view: Rect) -> (u32, u32) {
    let (Some(d), Some(n)) = (app.graph.drawn(), app.graph.selected_index()) else {
        return (0, 0);
    };
    let p = d.layout.nodes[n];
    let centre = |pos: u32, size: u32, screen: u16, total: u32| {
        let screen = u32::from(screen);
        if total <= screen {
            0
        } else {
            (pos + size / 2)
                .saturating_sub(screen / 2)
                .min(total - screen)
        }
    };
    (
        centre(p.x, p.w, view.width, d.layout.width),
        centre(p.y, 3, view.height, d.layout.height),
    )
}

/// The first edge the side panel lists when `fit` rows fit: enough to keep
/// the selected edge in view.
fn edge_offset(app: &App, fit: usize) -> usize {
    app.graph
        .edge
        .map_or(0, |e| (e + 1).saturating_sub(fit.max(1)))
}

pub fn hit(app: &App, main: Rect, column: u16, row: u16) -> Option<Hit> {
    let (g, side) = split(main);
    let at = ratatui::layout::Position::new(column, row);
    let panel = inner(side);
    if panel.contains(at) {
        // A header row, then one row per edge of the selected workload.
        let first = panel.y + 1;
        if row < first {
            return None;
        }
        let fit = usize::from(panel.height.saturating_sub(1));
        let i = edge_offset(app, fit) + usize::from(row - first);
        return (i < app.graph.incident().len()).then_some(Hit::Edge(i));
    }
    let view = inner(g);
    if !view.contains(at) {
        return None;
    }
    let d = app.graph.drawn()?;
    let (ox, oy) = origin(app, view);
    let (x, y) = (
        u32::from(column - view.x) + ox,
        u32::from(row - view.y) + oy,
    );
    d.layout
        .nodes
        .iter()
        .position(|p| (p.x..p.x + p.w).contains(&x) && (p.y..p.y + 3).contains(&y))
        .map(|n| Hit::Node(d.view.nodes[n].clone()))
}

const N: u8 = 1;
const S: u8 = 2;
const E: u8 = 4;
const W: u8 = 8;

fn glyph(bits: u8) -> char {
    match bits {
        0 => ' ',
        b if b == N | S => '│',
        b if b & (N | S) == 0 => '─',
        b if b & (E | W) == 0 => '│',
        b if b == E | S => '┌',
        b if b == W | S => '┐',
        b if b == E | N => '└',
        b if b == W | N => '┘',
        b if b == E | W | S => '┬',
        b if b == E | W | N => '┴',
        b if b == N | S | E => '├',
        b if b == N | S | W => '┤',
        _ => '┼',
    }
}

/// Cells of the visible part of the graph: line directions and the worst
/// health (or the selection) of the edges through each.
struct Canvas {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
    bits: Vec<u8>,
    /// 0 healthy, 1 warning, 2 critical, 3 selected.
    level: Vec<u8>,
}

impl Canvas {
    fn mark(&mut self, x: u32, y: u32, bits: u8, level: u8) {
        if x < self.x || y < self.y || x >= self.x + self.w || y >= self.y + self.h {
            return;
        }
        let i = ((y - self.y) * self.w + (x - self.x)) as usize;
        self.bits[i] |= bits;
        self.level[i] = self.level[i].max(level);
    }

    fn segment(&mut self, s: Segment, level: u8) {
        match s {
            Segment::Horizontal { y, x0, x1 } => {
                if y < self.y || y >= self.y + self.h {
                    return;
                }
                let from = x0.max(self.x);
                let to = x1.min((self.x + self.w).saturating_sub(1));
                for x in from..=to {
                    let b = if x > x0 { W } else { 0 } | if x < x1 { E } else { 0 };
                    self.mark(x, y, if b == 0 { E | W } else { b }, level);
                }
            }
            Segment::Vertical { x, y0, y1 } => {
                if x < self.x || x >= self.x + self.w {
                    return;
                }
                let from = y0.max(self.y);
                let to = y1.min((self.y + self.h).saturating_sub(1));
                for y in from..=to {
                    let b = if y > y0 { N } else { 0 } | if y < y1 { S } else { 0 };
                    self.mark(x, y, b, level);
                }
            }
        }
    }
}

fn level_style(theme: &Theme, level: u8) -> Style {
    theme.style(match level {
        0 => Role::Healthy,
        1 => Role::Warning,
        2 => Role::Critical,
        _ => Role::Key,
    })
}

pub fn draw(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let (g, side) = split(area);
    let model = &app.graph.model;
    let collapsed = app.graph.collapse.all || !app.graph.collapse.toggled.is_empty();
    let cut = if app.what_if.is_some() {
        format!(", what-if: {} cut ✂", model.cut.len())
    } else {
        String::new()
    };
    let title = format!(
        " service graph: {} workloads, {} edges, {} namespaces{}{cut} ",
        model.node_count(),
        model.edge_count(),
        model.namespaces(),
        if collapsed { " (some collapsed)" } else { "" }
    );
    frame.render_widget(
        Block::default()
            .borders(Borders::ALL)
            .border_style(theme.style(Role::BorderFocus))
            .title(Span::styled(title, theme.style(Role::Title))),
        g,
    );
    let view = inner(g);
    let Some(d) = app.graph.drawn().filter(|d| !d.view.nodes.is_empty()) else {
        frame.render_widget(
            Paragraph::new(" no flows yet: workloads appear here as they talk")
                .style(theme.style(Role::Muted)),
            view,
        );
        edges_panel(frame, app, theme, side);
        return;
    };
    let (ox, oy) = origin(app, view);
    let mut canvas = Canvas {
        x: ox,
        y: oy,
        w: u32::from(view.width),
        h: u32::from(view.height),
        bits: vec![0; usize::from(view.width) * usize::from(view.height)],
        level: vec![0; usize::from(view.width) * usize::from(view.height)],
    };
    let selected_edge = app.graph.selected_edge();
    let levels: Vec<u8> = d
        .view
        .edges
        .iter()
        .enumerate()
        .map(|(i, e)| {
            if Some(i) == selected_edge {
                3
            } else if model.is_cut(e) {
                2
            } else {
                match model.summary(e, false).health() {
                    Health::Healthy => 0,
                    Health::Warning => 1,
                    Health::Critical => 2,
                }
            }
        })
        .collect();
    for (e, s) in &d.layout.segments {
        canvas.segment(*s, levels[*e]);
    }
    let buf = frame.buffer_mut();
    let mut put = |x: u32, y: u32, c: char, style: Style| {
        if x < ox || y < oy || x >= ox + canvas.w || y >= oy + canvas.h {
            return;
        }
        let (cx, cy) = (view.x + (x - ox) as u16, view.y + (y - oy) as u16);
        if let Some(cell) = buf.cell_mut((cx, cy)) {
            cell.set_char(c).set_style(style);
        }
    };
    for y in 0..canvas.h {
        for x in 0..canvas.w {
            let i = (y * canvas.w + x) as usize;
            if canvas.bits[i] != 0 {
                put(
                    ox + x,
                    oy + y,
                    glyph(canvas.bits[i]),
                    level_style(theme, canvas.level[i]),
                );
            }
        }
    }
    let selected = app.graph.selected_index();
    for (n, p) in d.layout.nodes.iter().enumerate() {
        if p.x + p.w < ox || p.x >= ox + canvas.w || p.y + 3 <= oy || p.y >= oy + canvas.h {
            continue;
        }
        let is_selected = selected == Some(n);
        let border = theme.style(if is_selected {
            Role::BorderFocus
        } else {
            Role::Border
        });
        let label = theme.style(if is_selected {
            Role::Selection
        } else {
            Role::Text
        });
        draw_box(
            &mut put,
            p,
            d.layout.attached[n],
            &d.view.nodes[n],
            border,
            label,
        );
    }
    for n in &d.layout.self_loops {
        let p = d.layout.nodes[*n];
        put(p.x + p.w - 1, p.y, '↺', theme.style(Role::Warning));
    }
    for a in &d.layout.arrows {
        let glyph = if model.is_cut(&d.view.edges[a.edge]) {
            '✂'
        } else if a.right {
            '▶'
        } else {
            '◀'
        };
        put(a.x, a.y, glyph, level_style(theme, levels[a.edge]));
    }
    edges_panel(frame, app, theme, side);
}

fn draw_box(
    put: &mut impl FnMut(u32, u32, char, Style),
    p: &Placed,
    (left, right_side): (bool, bool),
    name: &str,
    border: Style,
    label: Style,
) {
    let right = p.x + p.w - 1;
    for x in p.x..=right {
        let (top, bottom) = if x == p.x {
            ('┌', '└')
        } else if x == right {
            ('┐', '┘')
        } else {
            ('─', '─')
        };
        put(x, p.y, top, border);
        put(x, p.y + 2, bottom, border);
    }
    put(p.x, p.y + 1, if left { '┤' } else { '│' }, border);
    put(right, p.y + 1, if right_side { '├' } else { '│' }, border);
    let room = p.w.saturating_sub(4) as usize;
    let text: String = if name.chars().count() > room {
        name.chars()
            .take(room.saturating_sub(1))
            .chain(std::iter::once('…'))
            .collect()
    } else {
        name.to_owned()
    };
    put(p.x + 1, p.y + 1, ' ', label);
    for (i, c) in text.chars().enumerate() {
        put(p.x + 2 + i as u32, p.y + 1, c, label);
    }
    for x in p.x + 2 + text.chars().count() as u32..right {
        put(x, p.y + 1, ' ', label);
    }
}

/// The selected workload's edges with their flows/s, drops, HTTP errors
/// and p95 latency.
fn edges_panel(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let graph = &app.graph;
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme.style(Role::Border))
        .title(Span::styled(
            format!(" {} ", graph.selected.as_deref().unwrap_or("edges")),
            theme.style(Role::Title),
        ));
    let Some(d) = graph.drawn() else {
        frame.render_widget(block, area);
        return;
    };
    let n = graph.selected_index();
    let selected_edge = graph.edge;
    let rows: Vec<Row> = graph
        .incident()
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let edge = &d.view.edges[e];
            let s = graph.model.summary(edge, true);
            let (arrow, other) = if Some(edge.from) == n {
                ("->", &d.view.nodes[edge.to])
            } else {
                ("<-", &d.view.nodes[edge.from])
            };
            let health = match s.health() {
                Health::Healthy => Role::Healthy,
                Health::Warning => Role::Warning,
                Health::Critical => Role::Critical,
            };
            let errors = if s.http > 0 {
                format!("{:.1}%", 100.0 * s.http_errors as f64 / s.http as f64)
            } else {
                "-".into()
            };
            let arrow = if graph.model.is_cut(edge) {
                if arrow == "->" { "✂>" } else { "<✂" }
            } else {
                arrow
            };
            let row = Row::new(vec![
                Cell::from(arrow),
                Cell::from(other.clone()),
                Cell::from(format!("{:.1}", s.rate)),
                Cell::from(s.drops.to_string()).style(theme.style(health)),
                Cell::from(errors).style(theme.style(health)),
                Cell::from(s.p95_ns.map_or("-".into(), duration)),
            ]);
            if Some(i) == selected_edge {
                row.style(theme.style(Role::Selection))
            } else {
                row.style(theme.style(Role::Text))
            }
        })
        .collect();
    if rows.is_empty() {
        frame.render_widget(
            Paragraph::new(vec![
                Line::from(" arrows select a workload, e walks its edges,"),
                Line::from(" Enter shows the flows of either in the table"),
            ])
            .style(theme.style(Role::Muted))
            .block(block),
            area,
        );
        return;
    }
    let table = Table::new(
        rows,
        [
            Constraint::Length(2),
            Constraint::Fill(1),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(8),
        ],
    )
    .header(Row::new(["", "PEER", "FLOW/S", "DROPS", "5XX", "P95"]).style(theme.style(Role::Title)))
    .block(block);
    // Scrolled so the selected edge shows; `hit` maps rows the same way.
    let fit = usize::from(inner(area).height.saturating_sub(1));
    let mut state = TableState::default().with_offset(edge_offset(app, fit));
    frame.render_stateful_widget(table, area, &mut state);
}
