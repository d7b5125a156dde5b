//! The Drops, DNS, HTTP, Nodes and Top tabs.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, TableState, Wrap},
};
use webb_themes::{Role, Theme};

use super::super::{
    app::{App, Hit, Tab},
    explain::explain,
    stats::{Histogram, ServiceStats, rcode_name, top_n},
};
use crate::status::printable;

/// A latency for people: `850µs`, `12.5ms`, `1.20s`.
pub fn duration(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.0}µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

fn quantile(h: &Histogram, q: f64) -> String {
    h.quantile(q).map_or("-".into(), duration)
}

fn block<'a>(title: String, theme: &Theme) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(theme.style(Role::Border))
        .title(Span::styled(title, theme.style(Role::Title)))
}

const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A one-line sparkline of `values` scaled to `max`.
fn spark_text(values: &[u64], max: u64) -> String {
    values
        .iter()
        .map(|v| {
            if *v == 0 {
                ' '
            } else {
                SPARKS[((v * 7).div_ceil(max.max(1)) as usize).min(7)]
            }
        })
        .collect()
}

/// Where each panel draws its selectable list (the mouse needs it too).
fn list_area(tab: Tab, main: Rect) -> Rect {
    match tab {
        Tab::Drops => drops_layout(main).1,
        Tab::Dns | Tab::Nodes | Tab::Top => {
            let [_, list] =
                Layout::vertical([Constraint::Length(4), Constraint::Fill(1)]).areas(main);
            list
        }
        Tab::Http => {
            let [list, _] =
                Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)])
                    .areas(main);
            list
        }
        _ => main,
    }
}

/// The first list row shown when row `selected` must be visible.
fn list_offset(area: Rect, selected: usize) -> usize {
    let rows = usize::from(area.height.saturating_sub(3)).max(1);
    (selected + 1).saturating_sub(rows)
}

pub fn hit(app: &App, main: Rect, row: u16) -> Option<Hit> {
    let list = list_area(app.tab, main);
    let first = list.y + 2;
    if row < first || row + 1 >= list.y + list.height {
        return None;
    }
    Some(Hit::PanelRow(
        list_offset(list, app.panel_row) + usize::from(row - first),
    ))
}

fn stateful(selected: usize) -> TableState {
    TableState::default().with_selected(Some(selected))
}

/// The sparkline, the reasons list, the explanation, and the pairs.
fn drops_layout(area: Rect) -> (Rect, Rect, Rect, Rect) {
    let [spark, rest] = Layout::vertical([Constraint::Length(5), Constraint::Fill(1)]).areas(area);
    if area.width >= 140 {
        let [left, pairs] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(rest);
        let [reasons, why] =
            Layout::vertical([Constraint::Fill(1), Constraint::Length(6)]).areas(left);
        (spark, reasons, why, pairs)
    } else {
        let [reasons, why, pairs] = Layout::vertical([
            Constraint::Fill(1),
            Constraint::Length(5),
            Constraint::Fill(1),
        ])
        .areas(rest);
        (spark, reasons, why, pairs)
    }
}

pub fn drops(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let d = &app.stats.drops;
    let now = app.stats.now;
    let (spark_area, reasons_area, why_area, pairs_area) = drops_layout(area);
    let width = usize::from(spark_area.width.saturating_sub(2));
    let series = d.series.recent(now, width.min(64));
    let last = series.last().copied().unwrap_or(0);
    frame.render_widget(
        Sparkline::default()
            .data(&series)
            .style(theme.style(Role::Dropped))
            .block(block(
                format!(
                    " drops/s, last {} s: {} now, {} in all{} ",
                    series.len(),
                    last,
                    d.total,
                    if app.lost_events > 0 {
                        format!(", {} events lost", app.lost_events)
                    } else {
                        String::new()
                    }
                ),
                theme,
            )),
        spark_area,
    );
    let reasons = d.top_reasons();
    let top = reasons.first().map_or(1, |r| r.1.count);
    let bar_width = 12u64;
    let rows: Vec<Row> = reasons
        .iter()
        .map(|(name, r)| {
            let bar = "█".repeat(((r.count * bar_width).div_ceil(top.max(1))) as usize);
            let recent = r.series.recent(now, 30);
            let peak = recent.iter().copied().max().unwrap_or(0);
            Row::new(vec![
                Cell::from((*name).to_owned()),
                Cell::from(r.count.to_string()),
                Cell::from(bar).style(theme.style(Role::Dropped)),
                Cell::from(spark_text(&recent, peak)).style(theme.style(Role::Warning)),
            ])
            .style(theme.style(Role::Text))
        })
        .collect();
    let selected = app.panel_row.min(reasons.len().saturating_sub(1));
    if rows.is_empty() {
        frame.render_widget(
            Paragraph::new(" no drops among the flows that pass the filter")
                .style(theme.style(Role::Muted))
                .block(block(" drops by reason ".into(), theme)),
            reasons_area,
        );
    } else {
        frame.render_stateful_widget(
            Table::new(
                rows,
                [
                    Constraint::Fill(1),
                    Constraint::Length(8),
                    Constraint::Length(bar_width as u16),
                    Constraint::Length(30),
                ],
            )
            .header(
                Row::new(["REASON", "DROPS", "SHARE", "LAST 30 S"]).style(theme.style(Role::Title)),
            )
            .row_highlight_style(theme.style(Role::Selection))
            .block(block(" drops by reason (j/k selects) ".into(), theme)),
            reasons_area,
            &mut stateful(selected),
        );
    }
    let why: Vec<Line> = match reasons.get(selected) {
        Some((name, _)) => match explain(name) {
            Some(x) => vec![
                Line::from(vec![
                    Span::styled(format!("{name}: "), theme.style(Role::Key)),
                    Span::styled(x.meaning, theme.style(Role::Text)),
                ]),
                Line::from(vec![
                    Span::styled("check: ", theme.style(Role::Key)),
                    Span::styled(x.check, theme.style(Role::Text)),
                ]),
            ],
            None => vec![Line::from(Span::styled(
                format!(
                    "{name}: no explanation yet; the kernel's source names it in include/net/dropreason-core.h"
                ),
                theme.style(Role::Muted),
            ))],
        },
        None => Vec::new(),
    };
    frame.render_widget(
        Paragraph::new(why)
            .wrap(Wrap { trim: true })
            .block(block(" what it means ".into(), theme)),
        why_area,
    );
    let n = usize::from(pairs_area.height.saturating_sub(3));
    let pairs: Vec<Row> = d
        .top_pairs(n)
        .into_iter()
        .map(|(k, v)| {
            let port = if k.port > 0 {
                format!(":{}/{}", k.port, k.protocol)
            } else if !k.protocol.is_empty() {
                format!(" {}", k.protocol)
            } else {
                String::new()
            };
            Row::new(vec![
                Cell::from(format!("{} -> {}{port}", k.source, k.destination)),
                Cell::from(k.reason.clone()),
                Cell::from(if v.policy.is_empty() {
                    "-".to_owned()
                } else {
                    v.policy.clone()
                }),
                Cell::from(v.count.to_string()),
            ])
            .style(theme.style(Role::Text))
        })
        .collect();
    let title = if d.pairs_not_kept > 0 {
        format!(
            " top dropped pairs ({} drops of pairs past the first {} not itemized) ",
            d.pairs_not_kept,
            super::super::stats::MAX_KEYS
        )
    } else {
        " top dropped pairs ".into()
    };
    frame.render_widget(
        Table::new(
            pairs,
            [
                Constraint::Fill(3),
                Constraint::Fill(1),
                Constraint::Fill(1),
                Constraint::Length(8),
            ],
        )
        .header(
            Row::new(["SOURCE -> DESTINATION", "REASON", "POLICY", "DROPS"])
                .style(theme.style(Role::Title)),
        )
        .block(block(title, theme)),
        pairs_area,
    );
}

pub fn dns(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let dns = &app.stats.dns;
    let [top, _] = Layout::vertical([Constraint::Length(4), Constraint::Fill(1)]).areas(area);
    let list = list_area(Tab::Dns, area);
    let rcodes: Vec<String> = dns
        .rcodes
        .iter()
        .map(|(r, n)| format!("{} {n}", rcode_name(*r)))
        .collect();
    let summary = vec![
        Line::from(vec![
            Span::styled(format!(" queries {}", dns.queries), theme.style(Role::Text)),
            Span::styled(
                format!("   answers {}", dns.responses),
                theme.style(Role::Text),
            ),
            Span::styled(
                format!(
                    "   NXDOMAIN {}   SERVFAIL {}",
                    dns.rcodes.get(&3).copied().unwrap_or(0),
                    dns.rcodes.get(&2).copied().unwrap_or(0)
                ),
                theme.style(Role::Warning),
            ),
        ]),
        Line::from(vec![
            Span::styled(
                format!(
                    " latency p50 {}  p95 {}  p99 {}",
                    quantile(&dns.latency, 0.5),
                    quantile(&dns.latency, 0.95),
                    quantile(&dns.latency, 0.99)
                ),
                theme.style(Role::Text),
            ),
            Span::styled(
                format!("   rcodes: {}", rcodes.join(", ")),
                theme.style(Role::Muted),
            ),
        ]),
    ];
    frame.render_widget(
        Paragraph::new(summary).block(block(" DNS ".into(), theme)),
        top,
    );
    let names = top_n(dns.names.iter(), dns.names.len(), |(k, v)| {
        (v.queries + v.responses, std::cmp::Reverse(k.as_str()))
    });
    let rows: Vec<Row> = names
        .iter()
        .map(|(k, v)| {
            let errors = v.nxdomain + v.servfail;
            Row::new(vec![
                Cell::from(k.as_str()),
                Cell::from(v.queries.to_string()),
                Cell::from(v.responses.to_string()),
                Cell::from(v.nxdomain.to_string()).style(theme.style(if errors > 0 {
                    Role::Warning
                } else {
                    Role::Text
                })),
                Cell::from(v.servfail.to_string()),
                Cell::from(quantile(&v.latency, 0.5)),
                Cell::from(quantile(&v.latency, 0.95)),
            ])
            .style(theme.style(Role::Text))
        })
        .collect();
    let title = if dns.names_not_kept > 0 {
        format!(" top queries ({} more not itemized) ", dns.names_not_kept)
    } else {
        " top queries ".into()
    };
    frame.render_stateful_widget(
        Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(8),
                Constraint::Length(8),
            ],
        )
        .header(
            Row::new([
                "QUERY", "QUERIES", "ANSWERS", "NXDOMAIN", "SERVFAIL", "P50", "P95",
            ])
            .style(theme.style(Role::Title)),
        )
        .row_highlight_style(theme.style(Role::Selection))
        .block(block(title, theme)),
        list,
        &mut stateful(app.panel_row.min(names.len().saturating_sub(1))),
    );
}

pub fn http(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let http = &app.stats.http;
    let list = list_area(Tab::Http, area);
    let [_, routes_area] =
        Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(area);
    let services = top_n(http.services.iter(), http.services.len(), |(k, v)| {
        (
            v.responses() + v.requests + v.tls,
            std::cmp::Reverse(k.as_str()),
        )
    });
    let rows: Vec<Row> = services
        .iter()
        .map(|(k, v)| {
            let responses = v.responses();
            let error_share = v.classes[5] as f64 / responses.max(1) as f64;
            let mut cells = vec![Cell::from(k.as_str()), Cell::from(v.requests.to_string())];
            for class in 1..=5 {
                cells.push(Cell::from(v.classes[class].to_string()));
            }
            cells.push(
                Cell::from(format!("{:.1}%", 100.0 * error_share)).style(theme.style(
                    if error_share >= 0.05 {
                        Role::Critical
                    } else if v.classes[5] > 0 {
                        Role::Warning
                    } else {
                        Role::Healthy
                    },
                )),
            );
            cells.push(Cell::from(tls_text(v)));
            Row::new(cells).style(theme.style(Role::Text))
        })
        .collect();
    let selected = app.panel_row.min(services.len().saturating_sub(1));
    frame.render_stateful_widget(
        Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Length(9),
                Constraint::Length(6),
                Constraint::Length(6),
                Constraint::Length(6),
                Constraint::Length(6),
                Constraint::Length(6),
                Constraint::Length(7),
                Constraint::Fill(1),
            ],
        )
        .header(
            Row::new([
                "SERVICE", "REQUESTS", "1XX", "2XX", "3XX", "4XX", "5XX", "5XX %", "TLS",
            ])
            .style(theme.style(Role::Title)),
        )
        .row_highlight_style(theme.style(Role::Selection))
        .block(block(
            " L7 by service: HTTP, and TLS ClientHellos (j/k selects; ids in paths fold to :id) "
                .into(),
            theme,
        )),
        list,
        &mut stateful(selected),
    );
    let Some((name, service)) = services.get(selected) else {
        frame.render_widget(
            Paragraph::new(" no HTTP or TLS among the flows that pass the filter")
                .style(theme.style(Role::Muted))
                .block(block(" routes ".into(), theme)),
            routes_area,
        );
        return;
    };
    if service.routes.is_empty() && service.tls > 0 {
        tls_names(frame, name, service, theme, routes_area);
        return;
    }
    let routes = top_n(
        service.routes.iter(),
        usize::from(routes_area.height),
        |(k, v)| (v.responses, std::cmp::Reverse(k.as_str())),
    );
    let rows: Vec<Row> = routes
        .iter()
        .map(|(k, v)| {
            Row::new(vec![
                Cell::from(k.as_str()),
                Cell::from(v.responses.to_string()),
                Cell::from(v.errors.to_string()).style(theme.style(if v.errors > 0 {
                    Role::Warning
                } else {
                    Role::Text
                })),
                Cell::from(quantile(&v.latency, 0.5)),
                Cell::from(quantile(&v.latency, 0.95)),
                Cell::from(quantile(&v.latency, 0.99)),
            ])
            .style(theme.style(Role::Text))
        })
        .collect();
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Length(10),
                Constraint::Length(6),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(8),
            ],
        )
        .header(
            Row::new(["ROUTE", "RESPONSES", "5XX", "P50", "P95", "P99"])
                .style(theme.style(Role::Title)),
        )
        .block(block(format!(" routes of {name} "), theme)),
        routes_area,
    );
}

pub fn nodes(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let [top, _] = Layout::vertical([Constraint::Length(4), Constraint::Fill(1)]).areas(area);
    let list = list_area(Tab::Nodes, area);
    let (up, down) = app.nodes;
    let summary = match &app.node_list {
        Some(_) => format!(" {up} connected, {down} unavailable"),
        None => {
            " the server has no node list (a node agent, or a file): GetNodes is served by relays"
                .into()
        }
    };
    frame.render_widget(
        Paragraph::new(summary)
            .style(theme.style(if down > 0 { Role::Warning } else { Role::Text }))
            .block(block(format!(" {} ", app.source), theme)),
        top,
    );
    let nodes = app.node_list.as_deref().unwrap_or_default();
    let rows: Vec<Row> = nodes
        .iter()
        .map(|n| {
            let state = crate::status::state_name(n.state);
            let connected = state == "Connected";
            // A node that is not connected has no current figures.
            let (age, flows, seen) = if connected {
                (
                    crate::time::age(std::time::Duration::from_nanos(n.uptime_ns)),
                    format!("{}/{}", n.num_flows, n.max_flows),
                    n.seen_flows.to_string(),
                )
            } else {
                ("-".into(), "-".into(), "-".into())
            };
            let style = theme.style(if connected {
                Role::Healthy
            } else {
                Role::Critical
            });
            Row::new(vec![
                Cell::from(n.name.clone()),
                Cell::from(state).style(style),
                Cell::from(n.version.clone()),
                Cell::from(n.address.clone()),
                Cell::from(if n.tls.as_ref().is_some_and(|t| t.enabled) {
                    "yes"
                } else {
                    "no"
                }),
                Cell::from(age),
                Cell::from(flows),
                Cell::from(seen),
            ])
            .style(theme.style(Role::Text))
        })
        .collect();
    frame.render_stateful_widget(
        Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Length(12),
                Constraint::Length(10),
                Constraint::Fill(1),
                Constraint::Length(4),
                Constraint::Length(10),
                Constraint::Length(16),
                Constraint::Length(10),
            ],
        )
        .header(
            Row::new([
                "NAME", "STATE", "VERSION", "ADDRESS", "TLS", "UPTIME", "FLOWS", "SEEN",
            ])
            .style(theme.style(Role::Title)),
        )
        .row_highlight_style(theme.style(Role::Selection))
        .block(block(" nodes ".into(), theme)),
        list,
        &mut stateful(app.panel_row.min(nodes.len().saturating_sub(1))),
    );
}

pub fn top(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    use crate::top::{SortBy, human_bytes, latency, rate};
    let [head, _] = Layout::vertical([Constraint::Length(4), Constraint::Fill(1)]).areas(area);
    let list = list_area(Tab::Top, area);
    let view = &app.top_view;
    let mut summary = format!(
        " {} flows over {:.0}s of flow time, {} pairs, by {} (o/O: sort; Enter: the pair's flows)",
        view.counted,
        view.seconds,
        view.rows.len(),
        app.top_sort.name(),
    );
    if view.left_out > 0 {
        summary.push_str(&format!(
            "; {} flows of pairs past the limit not itemized",
            view.left_out
        ));
    }
    frame.render_widget(
        Paragraph::new(summary)
            .style(theme.style(Role::Text))
            .wrap(Wrap { trim: true })
            .block(block(
                " top talkers: the filtered flows, summed per workload pair ".into(),
                theme,
            )),
        head,
    );
    let secs = view.seconds;
    // Only the rows on screen are built: a cluster has thousands of pairs.
    let selected = app.panel_row.min(view.rows.len().saturating_sub(1));
    let offset = list_offset(list, selected);
    let shown = usize::from(list.height.saturating_sub(3)).max(1);
    let rows: Vec<Row> = view
        .rows
        .iter()
        .skip(offset)
        .take(shown)
        .map(|r| {
            let f = &r.figures;
            let drops = Cell::from(f.drops.to_string()).style(theme.style(if f.drops > 0 {
                Role::Critical
            } else {
                Role::Text
            }));
            let errors = Cell::from(f.errors.to_string()).style(theme.style(if f.errors > 0 {
                Role::Warning
            } else {
                Role::Text
            }));
            Row::new(vec![
                Cell::from(r.source.clone()),
                Cell::from(r.destination.clone()),
                Cell::from(rate(f.flows, secs)),
                Cell::from(format!("{}/s", human_bytes(f.bytes as f64 / secs))),
                Cell::from(f.packets.to_string()),
                drops,
                errors,
                Cell::from(latency(f.p95_us)),
            ])
            .style(theme.style(Role::Text))
        })
        .collect();
    let columns = [
        ("FLOWS/S", Some(SortBy::Flows)),
        ("BYTES/S", Some(SortBy::Bytes)),
        ("PACKETS", Some(SortBy::Packets)),
        ("DROPS", Some(SortBy::Drops)),
        ("ERRORS", Some(SortBy::Errors)),
        ("P95", Some(SortBy::Latency)),
    ];
    let mut header = vec![Cell::from("SOURCE"), Cell::from("DESTINATION")];
    for (name, sort) in columns {
        header.push(if sort == Some(app.top_sort) {
            Cell::from(format!("{name}▼")).style(theme.style(Role::Key))
        } else {
            Cell::from(name)
        });
    }
    frame.render_stateful_widget(
        Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Fill(1),
                Constraint::Length(9),
                Constraint::Length(13),
                Constraint::Length(9),
                Constraint::Length(7),
                Constraint::Length(7),
                Constraint::Length(9),
            ],
        )
        .header(Row::new(header).style(theme.style(Role::Title)))
        .row_highlight_style(theme.style(Role::Selection))
        .block(block(" pairs ".into(), theme)),
        list,
        &mut stateful(selected - offset),
    );
}

/// A service's TLS column: hellos, and the server name most asked for.
fn tls_text(v: &ServiceStats) -> String {
    if v.tls == 0 {
        return "-".into();
    }
    let top = top_n(v.tls_names.iter(), 1, |(k, n)| {
        (n.hellos, std::cmp::Reverse(k.as_str()))
    });
    match top.first() {
        Some((sni, n)) if v.tls_names.len() > 1 => format!(
            "{} {} {} (+{} names)",
            v.tls,
            printable(sni),
            n.version,
            v.tls_names.len() - 1
        ),
        Some((sni, n)) => format!("{} {} {}", v.tls, printable(sni), n.version),
        None => v.tls.to_string(),
    }
}

/// The selected service's TLS server names, when it has no HTTP routes.
fn tls_names(frame: &mut Frame, name: &str, service: &ServiceStats, theme: &Theme, area: Rect) {
    let names = top_n(
        service.tls_names.iter(),
        usize::from(area.height),
        |(k, n)| (n.hellos, std::cmp::Reverse(k.as_str())),
    );
    let rows: Vec<Row> = names
        .iter()
        .map(|(sni, n)| {
            Row::new(vec![
                Cell::from(printable(sni)),
                Cell::from(n.hellos.to_string()),
                Cell::from(n.version.clone()),
                Cell::from(printable(&n.alpn)),
            ])
            .style(theme.style(Role::Text))
        })
        .collect();
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Fill(2),
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Fill(1),
            ],
        )
        .header(
            Row::new(["SERVER NAME (SNI)", "HELLOS", "VERSION", "ALPN"])
                .style(theme.style(Role::Title)),
        )
        .block(block(format!(" TLS to {name} "), theme)),
        area,
    );
}
