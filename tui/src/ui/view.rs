//! Drawing the dashboard. Every style comes from the theme by role. The
//! graph and the panels are drawn in `view/`.

mod graph;
mod panels;

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::Style,
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, Wrap},
};
use webb_proto::{
    analysis::WhatIfChange,
    flow::{Flow, Verdict},
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
};
use webb_themes::{Role, Theme};

use super::app::{App, Hit, Link, Mode, Tab, VERDICT_KEYS};
use crate::{
    printer::{self, Format, Printer},
    status::printable,
};

/// Rows of the flow table (or of a panel's list) the current terminal
/// shows, for PgUp/PgDn.
pub fn table_rows(area: Rect, mode: Mode) -> usize {
    let [_, _, _, table, _] = layout(area);
    let h = if mode == Mode::Detail {
        table.height / 2
    } else {
        table.height
    };
    usize::from(h.saturating_sub(3))
}

fn layout(area: Rect) -> [Rect; 5] {
    Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area)
}

fn table_area(main: Rect, mode: Mode) -> Rect {
    if mode == Mode::Detail {
        let [top, _] =
            Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(main);
        top
    } else {
        main
    }
}

pub fn draw(frame: &mut Frame, app: &App, theme: &Theme) {
    let area = frame.area();
    let [header, tabs, chips, main, footer] = layout(area);
    frame.render_widget(header_line(app, theme), header);
    frame.render_widget(tab_line(app, theme), tabs);
    frame.render_widget(chip_line(app, theme), chips);
    match app.tab {
        Tab::Flows => {
            flow_table(frame, app, theme, table_area(main, app.mode));
            if app.mode == Mode::Detail {
                let [_, bottom] =
                    Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)])
                        .areas(main);
                detail(frame, app, theme, bottom);
            }
        }
        Tab::Graph => graph::draw(frame, app, theme, main),
        Tab::Drops => panels::drops(frame, app, theme, main),
        Tab::Dns => panels::dns(frame, app, theme, main),
        Tab::Http => panels::http(frame, app, theme, main),
        Tab::Nodes => panels::nodes(frame, app, theme, main),
        Tab::Top => panels::top(frame, app, theme, main),
    }
    frame.render_widget(footer_line(app, theme, footer.width), footer);
    if app.mode == Mode::Help {
        help(frame, theme, area);
    }
}

/// Where each tab's title is on the tab line.
fn tab_spans() -> Vec<(Tab, u16, u16)> {
    let mut x = 1u16;
    Tab::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let w = format!(" F{} {} ", i + 1, t.title()).chars().count() as u16;
            let span = (*t, x, x + w);
            x += w + 1;
            span
        })
        .collect()
}

fn tab_line<'a>(app: &'a App, theme: &Theme) -> Paragraph<'a> {
    let mut spans = vec![Span::raw(" ")];
    for (i, t) in Tab::ALL.iter().enumerate() {
        let style = if *t == app.tab {
            theme.style(Role::ChipOn)
        } else {
            theme.style(Role::ChipOff)
        };
        spans.push(Span::styled(format!(" F{} {} ", i + 1, t.title()), style));
        spans.push(Span::raw(" "));
    }
    if let Some(p) = app.recount_progress() {
        spans.push(Span::styled(
            format!(" counting the buffer for the new filter: {:.0}%", p * 100.0),
            theme.style(Role::Warning),
        ));
    }
    Paragraph::new(Line::from(spans))
}

/// What is drawn at a screen cell, for mouse clicks.
pub fn hit(area: Rect, app: &App, column: u16, row: u16) -> Option<Hit> {
    let [_, tabs, _, main, _] = layout(area);
    if row == tabs.y {
        return tab_spans()
            .into_iter()
            .find(|(_, x0, x1)| (x0..x1).contains(&&column))
            .map(|(t, _, _)| Hit::Tab(t));
    }
    if !main.contains(ratatui::layout::Position::new(column, row)) {
        return None;
    }
    match app.tab {
        Tab::Flows => {
            let table = table_area(main, app.mode);
            // Border and header rows come first.
            let first = table.y + 2;
            if row < first || row + 1 >= table.y + table.height {
                return None;
            }
            let rows_fit = usize::from(table.height.saturating_sub(3));
            let offset = app
                .offset
                .min(app.visible_len().saturating_sub(rows_fit.max(1)));
            Some(Hit::Row(offset + usize::from(row - first)))
        }
        Tab::Graph => graph::hit(app, main, column, row),
        _ => panels::hit(app, main, row),
    }
}

fn header_line<'a>(app: &'a App, theme: &Theme) -> Paragraph<'a> {
    let t = |r| theme.style(r);
    let (state, state_style) = match (&app.link, app.paused) {
        (_, true) => ("PAUSED".to_owned(), t(Role::Warning)),
        (Link::Live, _) => ("LIVE".to_owned(), t(Role::Healthy)),
        (Link::Replay, _) => ("REPLAY".to_owned(), t(Role::Healthy)),
        (Link::Done, _) => ("END OF FILE".to_owned(), t(Role::Muted)),
        (Link::Connecting, _) => ("CONNECTING".to_owned(), t(Role::Warning)),
        (Link::Down(why), _) => (format!("DISCONNECTED: {why}"), t(Role::Critical)),
        (Link::Loading, _) => ("LOADING WINDOW".to_owned(), t(Role::Warning)),
        (Link::Window, _) => ("WINDOW".to_owned(), t(Role::Key)),
    };
    let mut spans = vec![
        Span::styled(" webb ", t(Role::Title)),
        Span::styled(app.source.clone(), t(Role::Text)),
        Span::raw("  "),
        Span::styled(state, state_style),
        Span::styled(format!("  {:.0} flows/s", app.rate), t(Role::Text)),
        Span::styled(
            format!("  buffered {}/{}", app.flows.len(), app.capacity),
            t(Role::Muted),
        ),
    ];
    if app.nodes != (0, 0) {
        let (up, down) = app.nodes;
        let style = if down > 0 {
            t(Role::Warning)
        } else {
            t(Role::Muted)
        };
        spans.push(Span::styled(
            format!("  nodes {up} up, {down} unavailable"),
            style,
        ));
    }
    if app.evicted > 0 {
        spans.push(Span::styled(
            format!("  {} old flows dropped", app.evicted),
            t(Role::Muted),
        ));
    }
    if let Some(w) = &app.window {
        let format = "%Y-%m-%d %H:%M:%S";
        spans.push(Span::styled(
            format!(
                "  {} .. {} UTC ({})",
                w.since.format(format),
                w.until.format("%H:%M:%S"),
                crate::time::age(w.width().to_std().unwrap_or_default()),
            ),
            t(Role::Key),
        ));
        if app.lost_events > 0 {
            spans.push(Span::styled(
                format!("  {} flows of it no longer held", app.lost_events),
                t(Role::Warning),
            ));
        }
    } else if app.lost_events > 0 {
        spans.push(Span::styled(
            format!("  LOST {}", app.lost_events),
            t(Role::Critical),
        ));
    }
    Paragraph::new(Line::from(spans)).style(t(Role::Header))
}

fn chip_line<'a>(app: &'a App, theme: &Theme) -> Paragraph<'a> {
    let mut spans = vec![Span::styled(" verdicts ", theme.style(Role::Muted))];
    for (key, v) in VERDICT_KEYS {
        let on = !app.hidden_verdicts.contains(&v);
        let style = if on {
            theme.style(Role::ChipOn)
        } else {
            theme.style(Role::ChipOff)
        };
        spans.push(Span::styled(format!(" {key} {} ", v.as_str_name()), style));
        spans.push(Span::raw(" "));
    }
    if !app.filter_text.is_empty() {
        spans.push(Span::styled(" filter: ", theme.style(Role::Muted)));
        spans.push(Span::styled(
            app.filter_text.clone(),
            theme.style(Role::Key),
        ));
    }
    if let Some(f) = &app.focus {
        spans.push(Span::styled(" focus: ", theme.style(Role::Muted)));
        spans.push(Span::styled(f.text(), theme.style(Role::Key)));
        spans.push(Span::styled(" (x clears)", theme.style(Role::Muted)));
    }
    if let Some(w) = &app.what_if {
        spans.push(Span::styled(" what-if ", theme.style(Role::Muted)));
        spans.push(Span::styled(
            printable(&w.files.join(" ")),
            theme.style(Role::Key),
        ));
        let (text, role) = match (&w.error, &w.answer) {
            (Some(e), _) => (format!(": {}", printable(e)), Role::Critical),
            (None, None) => (": asking...".to_owned(), Role::Muted),
            (None, Some(a)) => {
                let count = |c: WhatIfChange| {
                    a.pairs
                        .iter()
                        .filter(|p| p.change == c as i32)
                        .map(|p| p.connections)
                        .sum::<u64>()
                };
                let (drop, allow) = (
                    count(WhatIfChange::WhatIfWouldDrop),
                    count(WhatIfChange::WhatIfWouldAllow),
                );
                (
                    format!(
                        ": {drop} connections would drop, {allow} allow, of {} (W changes)",
                        a.connections_decided
                    ),
                    if drop > 0 {
                        Role::Critical
                    } else {
                        Role::Healthy
                    },
                )
            }
        };
        spans.push(Span::styled(text, theme.style(role)));
    }
    Paragraph::new(Line::from(spans))
}

fn time_text(f: &Flow, short: bool) -> String {
    let format = if short {
        "%H:%M:%S%.3f"
    } else {
        "%b %d %H:%M:%S%.3f"
    };
    f.time
        .as_ref()
        .and_then(|t| t.to_datetime())
        .map(|t| t.format(format).to_string())
        .unwrap_or_default()
}

fn verdict_style(theme: &Theme, f: &Flow) -> Style {
    theme.verdict(
        Verdict::try_from(f.verdict)
            .unwrap_or_default()
            .as_str_name(),
    )
}

fn flow_table(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let rows_fit = usize::from(area.height.saturating_sub(3));
    let offset = app
        .offset
        .min(app.visible_len().saturating_sub(rows_fit.max(1)));
    // Below 110 columns the date and the TYPE column make room for the
    // summary.
    let narrow = area.width < 110;
    let rows: Vec<Row> = (offset..offset + rows_fit)
        .filter_map(|n| app.visible_flow(n).map(|f| (n, f)))
        .map(|(n, f)| {
            let (src, dst) = printer::host_names(f, true);
            let mut cells = vec![
                Cell::from(time_text(f, narrow)),
                Cell::from(src),
                Cell::from(dst),
            ];
            if !narrow {
                cells.push(Cell::from(printer::flow_type_short(f)));
            }
            cells.push(Cell::from(printer::verdict_text(f)).style(verdict_style(theme, f)));
            let change = app.what_if.as_ref().and_then(|w| w.change(f));
            cells.push(match change {
                Some(c) => Cell::from(Line::from(vec![
                    Span::styled(
                        match c {
                            WhatIfChange::WhatIfWouldDrop => "✂ WOULD DROP ",
                            _ => "✓ WOULD ALLOW ",
                        },
                        theme.style(match c {
                            WhatIfChange::WhatIfWouldDrop => Role::Critical,
                            _ => Role::Healthy,
                        }),
                    ),
                    Span::raw(printer::summary(f)),
                ])),
                None => Cell::from(printer::summary(f)),
            });
            let row = Row::new(cells);
            if n == app.selected {
                row.style(theme.style(Role::Selection))
            } else {
                row.style(theme.style(Role::Text))
            }
        })
        .collect();
    let title = format!(" flows {} of {} ", app.visible_len(), app.flows.len());
    let border = if app.mode == Mode::Table {
        Role::BorderFocus
    } else {
        Role::Border
    };
    let (widths, header): (Vec<Constraint>, Vec<&str>) = if narrow {
        (
            vec![
                Constraint::Length(12),
                Constraint::Percentage(24),
                Constraint::Percentage(24),
                Constraint::Length(9),
                Constraint::Fill(1),
            ],
            vec!["TIME", "SOURCE", "DESTINATION", "VERDICT", "SUMMARY"],
        )
    } else {
        (
            vec![
                Constraint::Length(19),
                Constraint::Percentage(22),
                Constraint::Percentage(22),
                Constraint::Length(15),
                Constraint::Length(10),
                Constraint::Fill(1),
            ],
            vec![
                "TIME",
                "SOURCE",
                "DESTINATION",
                "TYPE",
                "VERDICT",
                "SUMMARY",
            ],
        )
    };
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.style(Role::Title)))
        .block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(theme.style(border))
                .title(Span::styled(title, theme.style(Role::Title))),
        );
    frame.render_widget(table, area);
}

/// The selected flow as `webb observe -o dict` prints it, then its JSON.
pub fn detail_text(f: &Flow) -> String {
    let resp = GetFlowsResponse {
        node_name: f.node_name.clone(),
        time: f.time,
        response_types: Some(ResponseTypes::Flow(Box::new(f.clone()))),
    };
    let mut p = Printer::<Vec<u8>, Vec<u8>>::for_chunk(printer::Options {
        format: Format::Dict,
        ..Default::default()
    });
    let _ = p.write(&resp);
    let (out, _) = p.into_buffers();
    let mut text = String::from_utf8_lossy(&out)
        .trim_end_matches(['\n', '-'])
        .trim_end()
        .to_owned();
    text.push_str("\n\nJSON:\n");
    text.push_str(&webb_proto::json::to_line(&resp));
    text
}

fn detail(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let text = app
        .selected_flow()
        .map(|f| detail_text(f))
        .unwrap_or_default();
    let p = Paragraph::new(text)
        .style(theme.style(Role::Text))
        .wrap(Wrap { trim: false })
        .block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(theme.style(Role::BorderFocus))
                .title(Span::styled(
                    " flow (Enter/Esc closes) ",
                    theme.style(Role::Title),
                )),
        );
    frame.render_widget(p, area);
}

/// The key hints of the current view, as many as fit in `width`: the last
/// one (`? help`, which lists them all) is always shown.
fn footer_line<'a>(app: &'a App, theme: &Theme, width: u16) -> Paragraph<'a> {
    if app.mode == Mode::Filter {
        let mut spans = vec![
            Span::styled(" / ", theme.style(Role::Key)),
            Span::styled(app.input.clone(), theme.style(Role::Text)),
            Span::styled("_", theme.style(Role::Key)),
        ];
        if let Some(e) = &app.filter_error {
            spans.push(Span::styled(format!("   {e}"), theme.style(Role::Critical)));
        }
        return Paragraph::new(Line::from(spans));
    }
    if app.mode == Mode::WhatIfFiles {
        return Paragraph::new(Line::from(vec![
            Span::styled(" what-if policy files: ", theme.style(Role::Key)),
            Span::styled(app.input.clone(), theme.style(Role::Text)),
            Span::styled("_", theme.style(Role::Key)),
            Span::styled(
                "   (Enter tries them; empty stops; Esc cancels)",
                theme.style(Role::Muted),
            ),
        ]));
    }
    if let Some(m) = &app.message {
        return Paragraph::new(Span::styled(format!(" {m}"), theme.style(Role::Muted)));
    }
    if app.window.is_some() && app.tab == Tab::Flows {
        let keys = [
            ("q", "quit"),
            ("[ ]", "earlier/later"),
            ("{ }", "narrower/wider"),
            ("L", "live"),
            ("Tab", "next view"),
            ("j/k", "move"),
            ("Enter", "details"),
            ("/", "filter"),
            ("?", "help"),
        ];
        return hints(&keys, theme, width);
    }
    let keys: &[(&str, &str)] = match app.tab {
        Tab::Flows => &[
            ("q", "quit"),
            ("Tab", "next view"),
            ("space", "pause"),
            ("j/k", "move"),
            ("Enter", "details"),
            ("/", "filter"),
            ("1-5", "verdicts"),
            ("s/S", "save"),
            ("?", "help"),
        ],
        Tab::Graph => &[
            ("q", "quit"),
            ("Tab", "next view"),
            ("arrows/hjkl", "select"),
            ("e/E", "edges"),
            ("Enter", "show its flows"),
            ("c/C", "collapse ns/all"),
            ("?", "help"),
        ],
        Tab::Top => &[
            ("q", "quit"),
            ("Tab", "next view"),
            ("j/k", "select"),
            ("o/O", "sort column"),
            ("Enter", "show its flows"),
            ("/", "filter"),
            ("?", "help"),
        ],
        _ => &[
            ("q", "quit"),
            ("Tab", "next view"),
            ("j/k", "select"),
            ("/", "filter"),
            ("?", "help"),
        ],
    };
    hints(keys, theme, width)
}

/// Key hints, as many as fit in `width`, the last always.
fn hints<'a>(keys: &[(&str, &str)], theme: &Theme, width: u16) -> Paragraph<'a> {
    let hint_width = |(k, what): &(&str, &str)| k.chars().count() + what.chars().count() + 3;
    let Some((help, rest)) = keys.split_last() else {
        return Paragraph::new("");
    };
    let mut room = usize::from(width).saturating_sub(hint_width(help));
    let mut shown: Vec<&(&str, &str)> = rest
        .iter()
        .take_while(|h| {
            let w = hint_width(h);
            let fits = w <= room;
            room = room.saturating_sub(w);
            fits
        })
        .collect();
    shown.push(help);
    let mut spans = Vec::new();
    for (k, what) in shown {
        spans.push(Span::styled(format!(" {k}"), theme.style(Role::Key)));
        spans.push(Span::styled(format!(" {what} "), theme.style(Role::Muted)));
    }
    Paragraph::new(Line::from(spans))
}

const HELP: &[(&str, &str)] = &[
    ("q, Ctrl-C", "quit (the terminal is restored)"),
    (
        "Tab, F1-F7",
        "views: flows, graph, drops, DNS, L7 (HTTP, TLS), nodes, top (or click)",
    ),
    ("space", "pause / resume following"),
    ("j k, Down Up", "select the next older / newer flow"),
    ("PgDn PgUp", "a page older / newer"),
    ("g / G", "the oldest flow / the newest, following again"),
    ("Enter", "every field of the selected flow, and its JSON"),
    (
        "/",
        "filter with webb observe's flags, e.g. --to-namespace shop --http-status 5+",
    ),
    (
        "1 2 3 4 5",
        "show / hide FORWARDED, DROPPED, AUDIT, ERROR, REDIRECTED",
    ),
    (
        "s / S",
        "save the selected flow / the whole buffer as JSON lines",
    ),
    (
        "graph: arrows",
        "select a workload; e/E walk its edges; Enter shows their flows",
    ),
    (
        "graph: click",
        "a box selects its workload, a side-panel row that edge",
    ),
    (
        "graph: c / C",
        "collapse or expand the selected namespace / every namespace",
    ),
    (
        "top: o / O",
        "sort by the next / previous column; Enter shows the pair's flows",
    ),
    (
        "W",
        "what-if: NetworkPolicy files to try; the graph and table mark cuts",
    ),
    (
        "[ ] { } L",
        "with --since: window earlier / later, narrower / wider; L: live",
    ),
    ("x", "clear the graph or top focus of the flow table"),
    ("?", "this help; any key closes it"),
];

fn help(frame: &mut Frame, theme: &Theme, area: Rect) {
    let w = area.width.min(90);
    let h = (HELP.len() as u16 + 4).min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!(" {k:<15}"), theme.style(Role::Key)),
                Span::styled((*what).to_owned(), theme.style(Role::Text)),
            ])
        })
        .collect();
    frame.render_widget(Clear, r);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(theme.style(Role::BorderFocus))
                .title(Span::styled(" keys ", theme.style(Role::Title))),
        ),
        r,
    );
}
