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
    app.fit(page);
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
