//! `webb ui`: the interactive dashboard. A live flow table with verdict
//! chips, pause, scrolling, a detail pane and a filter bar that takes
//! `webb observe`'s flags, over a server's follow stream or a recorded file.
//!
//! The state (`app.rs`) knows nothing of terminals; `view.rs` draws it with
//! the theme's semantic styles; this file owns the terminal and the sources.

pub mod app;
pub mod explain;
pub mod graph;
pub mod stats;
pub mod view;

use std::{
    io::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use crossterm::event::{Event, EventStream, KeyEventKind, MouseButton, MouseEventKind};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use webb_proto::{
    analysis::{WhatIfRequest, WhatIfResponse},
    observer::{
        GetFlowsRequest, GetFlowsResponse, GetNodesRequest, ServerStatusRequest,
        get_flows_response::ResponseTypes, observer_client::ObserverClient,
    },
    wkt::Timestamp,
};
use webb_themes::Theme;

use crate::{
    conn::{ConfigFile, Server, ServerArgs, Usage},
    filters::FilterArgs,
};
use app::{Action, App, Link, NodeInfo, Window};

#[derive(Debug, Clone, clap::Args)]
pub struct UiArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Replay this file (`webb observe -o json` or `hubble observe -o json`
    /// output) instead of connecting to a server
    #[arg(long, value_name = "FILE", help_heading = "Dashboard")]
    pub input_file: Option<PathBuf>,
    /// With --input-file: replay at this multiple of the recorded speed
    /// (0: everything at once)
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "X",
        help_heading = "Dashboard"
    )]
    pub replay_speed: f64,
    /// Colour theme: a built-in (dark, light, high-contrast, colour-blind)
    /// or a TOML file; NAME.toml in ~/.config/webb/themes changes a built-in
    #[arg(long, default_value = webb_themes::DEFAULT, value_name = "NAME|PATH", help_heading = "Dashboard")]
    pub theme: String,
    /// Flows kept in memory; the oldest go first (the header counts them)
    #[arg(
        long,
        default_value_t = 100_000,
        value_name = "N",
        help_heading = "Dashboard"
    )]
    pub buffer: usize,
    /// Where the dashboard logs (it never writes to the terminal it draws
    /// on); default $XDG_STATE_HOME/webb/ui.log or ~/.local/state/webb/ui.log.
    /// WEBB_LOG sets the level (default info).
    #[arg(long, value_name = "FILE", help_heading = "Dashboard")]
    pub log_file: Option<PathBuf>,
    /// Try these NetworkPolicy files against the buffered connections (as
    /// `webb policy what-if`; W changes them): the graph and the flow table
    /// mark what they would cut
    #[arg(long, value_name = "FILE", help_heading = "Dashboard")]
    pub what_if: Vec<PathBuf>,
    /// Show a window of history instead of the live stream: flows since this
    /// time (a duration before now or a time, as `observe --since`); [ and ]
    /// move the window, { and } narrow and widen it, L goes live
    #[arg(long, value_name = "TIME", value_parser = crate::top::parse_time, help_heading = "Dashboard")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// With --since: the window's end [default: now]
    #[arg(long, value_name = "TIME", value_parser = crate::top::parse_time, requires = "since", help_heading = "Dashboard")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

/// What the sources send the event loop.
enum Feed {
    Flows(Vec<GetFlowsResponse>),
    Link(Link),
    /// Connected and unavailable nodes, and the node list (None when the
    /// server has none: a node agent).
    Nodes(u32, u32, Option<Vec<NodeInfo>>),
    /// The server's what-if answer, or why there is none.
    WhatIf(Result<WhatIfResponse, String>),
}

/// How often what-if is asked again while candidates are loaded (new flows
/// arrive; the policies in force may change).
const WHAT_IF_EVERY: Duration = Duration::from_secs(5);

/// Reads candidate policy files: their text, or what went wrong.
fn read_policies(files: &[String]) -> Result<Vec<String>, String> {
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).map_err(|e| format!("what-if: {f}: {e}")))
        .collect()
}

/// Asks the server what candidates would change over [since, now].
async fn ask_what_if(server: Server, req: WhatIfRequest, tx: mpsc::Sender<Feed>) {
    let answer = crate::whatif::ask(&server, req)
        .await
        .map_err(|e| format!("{e:#}"));
    let _ = tx.send(Feed::WhatIf(answer)).await;
}

fn default_log_file() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("webb").join("ui.log"))
}

/// Sends the dashboard's log to a file. A log that cannot be opened is not
/// a reason to refuse to start: the dashboard runs without one and says so.
fn init_log(path: Option<&std::path::Path>) -> Option<String> {
    let path = path.map(PathBuf::from).or_else(default_log_file)?;
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => return Some(format!("no log: cannot open {}: {e}", path.display())),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEBB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Some(format!("logging to {}", path.display()))
}

fn theme(args: &UiArgs) -> anyhow::Result<Theme> {
    let user_dir =
        crate::conn::default_config_path().and_then(|p| p.parent().map(|d| d.join("themes")));
    let t = Theme::load(&args.theme, user_dir.as_deref()).map_err(|e| Usage(e.to_string()))?;
    let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let colours_256 = std::env::var("COLORTERM")
        .is_ok_and(|c| c.contains("truecolor") || c.contains("24bit"))
        || std::env::var("TERM").is_ok_and(|t| t.contains("256"));
    Ok(if no_colour {
        t.without_colour()
    } else if colours_256 {
        t
    } else {
        t.to_16_colours()
    })
}

pub async fn run(args: UiArgs, config: &ConfigFile) -> anyhow::Result<()> {
    if args.replay_speed < 0.0 || !args.replay_speed.is_finite() {
        return Err(Usage("--replay-speed must be 0 or more".into()).into());
    }
    let window = match (args.since, args.until) {
        (Some(since), until) => {
            let until = until.unwrap_or_else(chrono::Utc::now);
            if since >= until {
                return Err(Usage("--since must be before --until".into()).into());
            }
            if args.input_file.is_some() {
                return Err(Usage(
                    "--since is a window of a server's history; with --input-file, filter the file with webb observe --since first".into(),
                )
                .into());
            }
            Some(Window { since, until })
        }
        (None, _) => None,
    };
    let theme = theme(&args)?;
    let log_note = init_log(args.log_file.as_deref());
    // A file is read whole before the terminal is taken, so that a bad file
    // is a plain error; a server is followed in the background.
    let (tx, mut rx) = mpsc::channel::<Feed>(64);
    // A port-forward (-P) lasts as long as the dashboard.
    let mut forwarded = None;
    let mut read_note = None;
    let (source_name, server, mut source) = match &args.input_file {
        Some(path) => {
            let (lines, note) = read_file(path)?;
            read_note = note;
            let task = tokio::spawn(replay(lines, args.replay_speed, tx.clone()));
            (path.display().to_string(), None, task)
        }
        None => {
            let (s, forward) = Server::resolve_forwarded(&args.server, config).await?;
            forwarded = forward;
            let task = match window {
                Some(w) => tokio::spawn(history(s.clone(), args.filters.clone(), w, tx.clone())),
                None => tokio::spawn(follow(
                    s.clone(),
                    args.filters.clone(),
                    Resume::default(),
                    tx.clone(),
                )),
            };
            (s.address.to_string(), Some(s), task)
        }
    };
    if let Some(f) = &forwarded {
        tracing::info!(local = %f.local, pod = %f.pod, "port-forwarding to the relay");
    }

    let mut app = App::new(source_name, args.buffer, args.filters.clone())?;
    app.window = window;
    app.message = read_note.or(log_note);
    if !args.what_if.is_empty() {
        let files: Vec<String> = args
            .what_if
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        let texts = read_policies(&files).map_err(Usage)?;
        app.start_what_if(files, texts);
    }
    tracing::info!(source = %app.source, buffer = args.buffer, "webb ui started");

    let mut terminal = ratatui::init();
    let _ = crossterm::execute!(std::io::stdout(), crossterm::event::EnableMouseCapture);
    let what_if_tx = tx.clone();
    let what_if_server = server.clone();
    let result = event_loop(
        &mut terminal,
        &mut app,
        &theme,
        &mut rx,
        |filters, resume, window| {
            if let Some(s) = &server {
                source.abort();
                source = match window {
                    Some(w) => tokio::spawn(history(s.clone(), filters, w, tx.clone())),
                    None => tokio::spawn(follow(s.clone(), filters, resume, tx.clone())),
                };
            }
        },
        |req| match &what_if_server {
            Some(s) => {
                tokio::spawn(ask_what_if(s.clone(), req, what_if_tx.clone()));
            }
            None => {
                let tx = what_if_tx.clone();
                tokio::spawn(async move {
                    let why = "what-if asks a server (webb-agent or webb-relay): its policy compiler decides; a file has none".to_owned();
                    let _ = tx.send(Feed::WhatIf(Err(why))).await;
                });
            }
        },
    )
    .await;
    if let Err(e) = &result {
        tracing::error!("webb ui stopped: {e:#}");
    }
    let _ = crossterm::execute!(std::io::stdout(), crossterm::event::DisableMouseCapture);
    ratatui::restore();
    result
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    theme: &Theme,
    rx: &mut mpsc::Receiver<Feed>,
    mut resubscribe: impl FnMut(FilterArgs, Resume, Option<Window>),
    mut ask_what_if: impl FnMut(WhatIfRequest),
) -> anyhow::Result<()> {
    let mut events = EventStream::new();
    let mut what_if_tick = tokio::time::interval(WHAT_IF_EVERY);
    let mut frame_tick = tokio::time::interval(Duration::from_millis(33));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut dirty = true;
    let (mut window_start, mut window_count) = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(Ok(ev)) = ev else { return Ok(()) };
                let area = terminal.get_frame().area();
                let page = view::table_rows(area, app.mode);
                let action = match ev {
                    Event::Key(k) if k.kind != KeyEventKind::Release => app.on_key(k, page),
                    Event::Mouse(m) => {
                        let code = match m.kind {
                            MouseEventKind::ScrollDown => crossterm::event::KeyCode::Char('j'),
                            MouseEventKind::ScrollUp => crossterm::event::KeyCode::Char('k'),
                            MouseEventKind::Down(MouseButton::Left) => {
                                if let Some(hit) = view::hit(area, app, m.column, m.row) {
                                    app.on_click(hit);
                                }
                                redraw(terminal, app, theme)?;
                                continue;
                            }
                            _ => continue,
                        };
                        app.on_key(code.into(), page)
                    }
                    Event::Resize(..) => Action::None,
                    _ => continue,
                };
                match action {
                    Action::Quit => return Ok(()),
                    Action::Resubscribe(f) => {
                        tracing::info!(filter = %app.filter_text, "filter changed; subscribing again");
                        match app.window {
                            // A window is read again whole, with the new filter.
                            Some(w) => {
                                app.show_window(Some(w));
                                resubscribe(f, Resume::default(), Some(w));
                            }
                            None => resubscribe(f, Resume::from_app(app), None),
                        }
                    }
                    Action::Window(w) => {
                        tracing::info!(window = ?w, "window");
                        resubscribe(app.filter_args.clone(), Resume::default(), w);
                    }
                    Action::Save { all } => {
                        let m = save(app, all);
                        tracing::info!("{m}");
                        app.message = Some(m);
                    }
                    Action::WhatIf(files) => match read_policies(&files) {
                        Ok(texts) => {
                            tracing::info!(?files, "what-if");
                            app.start_what_if(files, texts);
                            if let Some(req) = what_if_request(app) {
                                ask_what_if(req);
                            }
                        }
                        Err(e) => app.message = Some(e),
                    },
                    Action::None => {}
                }
                // A key is answered at once, not at the next frame tick.
                redraw(terminal, app, theme)?;
                dirty = false;
            }
            feed = rx.recv() => {
                match feed {
                    Some(Feed::Flows(batch)) => {
                        window_count += batch.len() as u64;
                        for r in batch {
                            app.push(r);
                        }
                    }
                    Some(Feed::Link(l)) => {
                        if l != app.link {
                            match &l {
                                Link::Down(why) => tracing::warn!("connection lost: {why}"),
                                other => tracing::info!("source: {other:?}"),
                            }
                        }
                        app.link = l;
                    }
                    Some(Feed::Nodes(up, down, list)) => {
                        app.nodes = (up, down);
                        app.node_list = list;
                    }
                    Some(Feed::WhatIf(answer)) => {
                        if let Err(e) = &answer {
                            tracing::warn!("what-if: {e}");
                        }
                        app.what_if_answer(answer);
                    }
                    None => {}
                }
                dirty = true;
            }
            _ = frame_tick.tick() => {
                let secs = window_start.elapsed().as_secs_f64();
                if secs >= 1.0 {
                    app.rate = window_count as f64 / secs;
                    window_start = Instant::now();
                    window_count = 0;
                    dirty = true;
                }
                if dirty {
                    redraw(terminal, app, theme)?;
                    dirty = false;
                }
            }
            _ = what_if_tick.tick() => {
                if let Some(req) = what_if_request(app) {
                    ask_what_if(req);
                }
            }
            _ = term.recv() => return Ok(()),
        }
    }
}

/// The what-if question over the buffered window, if candidates are loaded.
fn what_if_request(app: &App) -> Option<WhatIfRequest> {
    let w = app.what_if.as_ref()?;
    Some(WhatIfRequest {
        policies: w.texts.clone(),
        since: app.flows.front().and_then(|f| f.time),
        until: None,
        whitelist: app.filter_args.allowlist.clone(),
        blacklist: app.filter_args.denylist.clone(),
    })
}

fn redraw(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    theme: &Theme,
) -> anyhow::Result<()> {
    let page = view::table_rows(terminal.get_frame().area(), app.mode);
    app.prepare(page);
    terminal.draw(|f| view::draw(f, app, theme))?;
    Ok(())
}

/// Writes the selected flow, or every buffered flow, as JSON lines that
/// `webb observe --input-file` and `webb ui --input-file` read back.
fn save(app: &App, all: bool) -> String {
    let name = format!(
        "webb-flows-{}.jsonl",
        chrono::Utc::now().format("%Y%m%dT%H%M%S")
    );
    let flows: Vec<&std::sync::Arc<webb_proto::flow::Flow>> = if all {
        app.flows.iter().collect()
    } else {
        app.selected_flow().into_iter().collect()
    };
    if flows.is_empty() {
        return "nothing to save".into();
    }
    let write = || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&name)?);
        for f in &flows {
            let resp = GetFlowsResponse {
                node_name: f.node_name.clone(),
                time: f.time,
                response_types: Some(
                    webb_proto::observer::get_flows_response::ResponseTypes::Flow(Box::new(
                        (***f).clone(),
                    )),
                ),
            };
            webb_proto::json::write_line(&mut out, &resp)?;
        }
        out.flush()
    };
    match write() {
        Ok(()) => format!("saved {} flows to {name}", flows.len()),
        Err(e) => format!("cannot save to {name}: {e}"),
    }
}

/// Reads a capture as `webb observe --input-file` does: a line that is not
/// a response is skipped (each is logged; the dashboard says how many), and
/// fields or values from a newer Hubble are read as Hubble's reader reads
/// them. The note says what was skipped or not understood.
fn read_file(path: &std::path::Path) -> anyhow::Result<(Vec<GetFlowsResponse>, Option<String>)> {
    let f = std::fs::File::open(path)
        .map_err(|e| Usage(format!("--input-file {}: {e}", path.display())))?;
    let mut lines = Vec::new();
    let (mut skipped, mut first_bad, mut unknown) = (0u64, None, None);
    for item in webb_proto::json::read_lines_noting(std::io::BufReader::new(f)) {
        match item {
            Ok(p) => {
                if unknown.is_none() {
                    unknown = p.unknown;
                }
                lines.push(p.response);
            }
            Err(e @ webb_proto::json::JsonError::Parse { .. }) => {
                tracing::warn!("--input-file {}: {e}; skipped", path.display());
                skipped += 1;
                first_bad.get_or_insert_with(|| e.to_string());
            }
            Err(e) => return Err(Usage(format!("--input-file {}: {e}", path.display())).into()),
        }
    }
    let mut notes = Vec::new();
    if let Some(first) = first_bad {
        notes.push(format!(
            "skipped {skipped} lines that are not Hubble responses ({first})"
        ));
    }
    if let Some(what) = unknown {
        notes.push(format!(
            "the capture has fields or values this webb does not know ({what}): skipped, or kept as numbers"
        ));
    }
    Ok((lines, (!notes.is_empty()).then(|| notes.join("; "))))
}

/// Sends a recorded file at `speed` times its recorded pace.
async fn replay(lines: Vec<GetFlowsResponse>, speed: f64, tx: mpsc::Sender<Feed>) {
    let _ = tx.send(Feed::Link(Link::Replay)).await;
    let time_of = |r: &GetFlowsResponse| {
        r.time
            .as_ref()
            .and_then(|t| t.to_datetime())
            .map(|t| t.timestamp_nanos_opt().unwrap_or(0))
    };
    let first = lines.iter().find_map(time_of);
    let start = Instant::now();
    let mut batch = Vec::new();
    for r in lines {
        if speed > 0.0
            && let (Some(t0), Some(t)) = (first, time_of(&r))
        {
            let due = Duration::from_nanos(((t - t0).max(0) as f64 / speed) as u64);
            let now = start.elapsed();
            if due > now + Duration::from_millis(5) {
                if !batch.is_empty()
                    && tx
                        .send(Feed::Flows(std::mem::take(&mut batch)))
                        .await
                        .is_err()
                {
                    return;
                }
                tokio::time::sleep(due - now).await;
            }
        }
        batch.push(r);
        if batch.len() >= 1024
            && tx
                .send(Feed::Flows(std::mem::take(&mut batch)))
                .await
                .is_err()
        {
            return;
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Feed::Flows(batch)).await;
    }
    let _ = tx.send(Feed::Link(Link::Done)).await;
}

/// Where a new subscription picks up: from the newest flow already buffered
/// (its time, and the flows at exactly that time, which the server sends
/// again), so that reconnecting or changing the filter neither loses nor
/// repeats flows.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    since: Option<Timestamp>,
    seen: Vec<String>,
}

impl Resume {
    fn from_app(app: &App) -> Self {
        let mut r = Resume::default();
        // A relay merges nodes in time order within a small window, so the
        // newest flow is among the last ones received.
        for f in app.flows.iter().rev().take(4096) {
            r.saw(f.time, &f.uuid);
        }
        r
    }

    fn saw(&mut self, time: Option<Timestamp>, uuid: &str) {
        let Some(t) = time else { return };
        let key = |t: &Timestamp| (t.seconds, t.nanos);
        match self.since.as_ref().map(|s| key(s).cmp(&key(&t))) {
            None | Some(std::cmp::Ordering::Less) => {
                self.since = Some(t);
                self.seen = vec![uuid.to_owned()];
            }
            Some(std::cmp::Ordering::Equal) => self.seen.push(uuid.to_owned()),
            Some(std::cmp::Ordering::Greater) => {}
        }
    }

    /// Whether a flow sent by a subscription that started from this point
    /// is one already buffered.
    fn repeats(&self, time: Option<Timestamp>, uuid: &str) -> bool {
        self.since.is_some() && self.since == time && self.seen.iter().any(|u| u == uuid)
    }
}

/// The first line of an error and its causes, for the header.
fn first_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Reads a window of a server's history (every flow of it, from the
/// nodes' rings and stores), then stops: nothing live is added.
async fn history(server: Server, filters: FilterArgs, window: Window, tx: mpsc::Sender<Feed>) {
    let _ = tx.send(Feed::Link(Link::Loading)).await;
    let read = async {
        let channel = server.connect().await?;
        let mut client = ObserverClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
        let mut stream = client
            .get_flows(GetFlowsRequest {
                since: Some(crate::top::ts(window.since)),
                until: Some(crate::top::ts(window.until)),
                // 0 with since: every flow of the window.
                number: 0,
                whitelist: filters.allowlist.clone(),
                blacklist: filters.denylist.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| server.call_error("GetFlows", &s))?
            .into_inner();
        let mut batch = Vec::with_capacity(1024);
        while let Some(r) = stream.next().await {
            batch.push(r.map_err(|s| server.call_error("GetFlows stream", &s))?);
            if batch.len() >= 1024
                && tx
                    .send(Feed::Flows(std::mem::take(&mut batch)))
                    .await
                    .is_err()
            {
                return Ok(());
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(Feed::Flows(batch)).await;
        }
        anyhow::Ok(())
    };
    let link = match read.await {
        Ok(()) => Link::Window,
        Err(e) => Link::Down(first_line(&e)),
    };
    let _ = tx.send(Feed::Link(link)).await;
}

/// Follows a server: history first (or, after a reconnect or a filter
/// change, what came since the newest buffered flow), then live flows; on a
/// lost connection, says so and reconnects with backoff (1 s doubling to
/// 30 s). Flows already buffered stay on screen.
async fn follow(server: Server, filters: FilterArgs, mut resume: Resume, tx: mpsc::Sender<Feed>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let _ = tx.send(Feed::Link(Link::Connecting)).await;
        let err = match stream_once(&server, &filters, &mut resume, &tx).await {
            Ok(()) => "the server ended the stream".to_owned(),
            Err(e) => first_line(&e),
        };
        if tx.is_closed() {
            return;
        }
        let _ = tx
            .send(Feed::Link(Link::Down(format!(
                "{err} (retrying in {}s)",
                backoff.as_secs()
            ))))
            .await;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn stream_once(
    server: &Server,
    filters: &FilterArgs,
    resume: &mut Resume,
    tx: &mpsc::Sender<Feed>,
) -> anyhow::Result<()> {
    let channel = server.connect().await?;
    let mut client = ObserverClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let at_start = resume.clone();
    let mut stream = client
        .get_flows(GetFlowsRequest {
            follow: true,
            number: if resume.since.is_some() { 0 } else { 1000 },
            since: resume.since,
            whitelist: filters.allowlist.clone(),
            blacklist: filters.denylist.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| server.call_error("GetFlows", &s))?
        .into_inner();
    let _ = tx.send(Feed::Link(Link::Live)).await;
    let status_client = client.clone();
    let status_tx = tx.clone();
    let status = tokio::spawn(async move {
        let mut c = status_client;
        loop {
            if let Ok(s) = c.server_status(ServerStatusRequest {}).await {
                let s = s.into_inner();
                let up = s.num_connected_nodes.map_or(0, |n| n.value);
                let down = s.num_unavailable_nodes.map_or(0, |n| n.value);
                // Only relays serve GetNodes; a node agent answers
                // Unimplemented.
                let list = c
                    .get_nodes(GetNodesRequest {})
                    .await
                    .ok()
                    .map(|r| r.into_inner().nodes);
                if status_tx.send(Feed::Nodes(up, down, list)).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    let result = async {
        // Drops what the history repeats and remembers the newest flow.
        let mut keep = |r: &GetFlowsResponse| match &r.response_types {
            Some(ResponseTypes::Flow(f)) => {
                if at_start.repeats(f.time, &f.uuid) {
                    return false;
                }
                resume.saw(f.time, &f.uuid);
                true
            }
            _ => true,
        };
        while let Some(first) = stream.next().await {
            let first = first.map_err(|s| server.call_error("GetFlows stream", &s))?;
            let mut batch = Vec::with_capacity(64);
            if keep(&first) {
                batch.push(first);
            }
            while batch.len() < 1024 {
                match futures::FutureExt::now_or_never(stream.next()) {
                    Some(Some(r)) => {
                        let r = r.map_err(|s| server.call_error("GetFlows stream", &s))?;
                        if keep(&r) {
                            batch.push(r);
                        }
                    }
                    _ => break,
                }
            }
            if batch.is_empty() {
                continue;
            }
            if tx.send(Feed::Flows(batch)).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
    .await;
    status.abort();
    result
}

#[cfg(test)]
mod tests;
