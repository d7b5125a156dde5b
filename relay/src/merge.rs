//! One client's GetFlows: fan out to every node, merge in time order.
//!
//! Each node's stream is ordered by time (nearly: an agent publishes in the
//! order it drains its kernel ring). The merger keeps a queue per node and
//! releases the oldest queued flow once no live node can still send an
//! older one:
//! - the node has a flow queued (its front is no older, since we release
//!   the oldest), or
//! - the node's watermark has passed the flow's time (webb agents send an
//!   idle heartbeat carrying it when asked), or
//! - the node has been silent for the bounded delay (default 200 ms; the
//!   only rule for Hubble agents, which send no heartbeats), or
//! - the node's stream has ended.
//!
//! A historical `--first N`/`--last N` is the cluster's oldest/newest N:
//! each node answers its N and the merge keeps the first N released, or
//! holds the last N released until every node has answered (Hubble's
//! relay forwards N per node). `--last N --follow` holds the same way until
//! every node's history has been released (a webb agent marks its end with
//! a first heartbeat; a node that sends none is waited for at most
//! [`HISTORY_SILENCE`]), sends the cluster's newest N, then goes live.
//!
//! Memory is bounded. Each node has its own bounded channel to the merger
//! (so one node's backlog never delays another's flows) and a bounded
//! queue in it; a node whose queue is full is not read until it drains. A
//! client that reads too slowly loses flows, counted and reported as
//! `lost_events`, instead of holding up anyone else.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio_stream::{StreamMap, wrappers::ReceiverStream};
use tonic::Status;
use webb_proto::{
    flow::{LostEvent, LostEventSource},
    observer::{GetFlowsRequest, GetFlowsResponse, get_flows_response::ResponseTypes},
    relay::{NodeState, NodeStatusEvent},
    wkt::Timestamp,
};

use crate::{
    pool::{NodeInfo, Pool},
    raw::{Kind, NodeCodec, Raw},
};

/// Heartbeat period asked of webb agents.
const HEARTBEAT_MS: u32 = 50;
/// Messages in flight per node between its reader and the merger; past it the
/// reader waits (backpressure to the node, whose own queue then reports its
/// losses).
const NODE_QUEUE: usize = 64;
/// The client's queue.
pub const CLIENT_QUEUE: usize = 4096;
/// Flows queued per node in the merger; past it the merger stops reading
/// that node (only) until its queue is half drained.
const MERGE_QUEUE: usize = 16_384;
/// Responses per message from a node's reader, and messages handled per
/// wake-up of the merger, at most.
const BATCH: usize = 256;
/// The largest historical `--last N` the merge answers with exactly the
/// cluster's newest N (held in memory until every node has answered).
const LAST_HELD_MAX: u64 = 1 << 20;
/// A historical (non-follow) query waits this long for a silent node.
const HISTORY_SILENCE: Duration = Duration::from_secs(5);
/// A live node whose stream broke is re-subscribed after this long.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub delay: Duration,
    /// The relay's name in its own lost-event reports.
    pub node_name: &'static str,
}

enum NodeMsg {
    Items(String, Vec<Raw>),
    End(String, Option<Status>),
}

struct NodeQ {
    name: String,
    queue: VecDeque<Raw>,
    /// The node's history has all arrived: its first heartbeat (which a
    /// webb agent sends right after the history), or its end, was seen.
    history_end: bool,
    /// Flows of the node's history still queued here, unreleased.
    history_left: usize,
    watermark: Option<Timestamp>,
    last_heard: Instant,
    done: bool,
    ended_at: Option<Instant>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

fn status_event(names: Vec<String>, state: NodeState, message: String) -> Raw {
    Raw::from_message(&GetFlowsResponse {
        time: Some(Timestamp::from(std::time::SystemTime::now())),
        node_name: String::new(),
        response_types: Some(ResponseTypes::NodeStatus(NodeStatusEvent {
            state_change: state as i32,
            node_names: names,
            message,
        })),
    })
}

/// Starts the merge for one request; the receiver is the client's stream.
pub fn start(
    pool: Arc<Pool>,
    req: GetFlowsRequest,
    opts: Options,
) -> mpsc::Receiver<Result<Raw, Status>> {
    let (out_tx, out_rx) = mpsc::channel(CLIENT_QUEUE);
    tokio::spawn(async move {
        let clients = &crate::metrics::METRICS.clients;
        clients.inc();
        Merger::new(pool, req, opts, out_tx).run().await;
        clients.dec();
    });
    out_rx
}

struct Merger {
    pool: Arc<Pool>,
    req: GetFlowsRequest,
    opts: Options,
    out: mpsc::Sender<Result<Raw, Status>>,
    nodes: BTreeMap<String, NodeQ>,
    /// Node streams opened since the run loop last took them in.
    opened: Vec<(String, ReceiverStream<NodeMsg>)>,
    /// Flows this client missed because it read too slowly.
    lost: u64,
    closed: bool,
    /// A historical `--first N`/`--last N`, or `--last N --follow`: N for
    /// the cluster, not per node.
    limit: Option<Limit>,
    /// With follow, the newest N are sent by then even if a node never
    /// marked the end of its history (a Hubble agent sends no heartbeat).
    hold_until: Instant,
}

/// Each node answers N; the merge keeps the cluster's N. The merge
/// releases in time order, so the oldest N are the first released and the
/// newest N the last.
enum Limit {
    /// Flows still to send.
    First(u64),
    /// The newest flows released so far, at most N, sent when every node
    /// has answered (with follow: every node's history was released).
    Last(usize, VecDeque<Raw>),
}

impl Merger {
    fn new(
        pool: Arc<Pool>,
        req: GetFlowsRequest,
        opts: Options,
        out: mpsc::Sender<Result<Raw, Status>>,
    ) -> Self {
        let limit = match (req.follow, req.number, req.first) {
            (_, 0, _) | (true, _, true) => None,
            (false, n, true) => Some(Limit::First(n)),
            // The newest N are held until every node answered, so N
            // bounds the memory; above the bound (`--all` asks for
            // u64::MAX), every node's answer streams through.
            (_, n, false) if n <= LAST_HELD_MAX => Some(Limit::Last(n as usize, VecDeque::new())),
            _ => None,
        };
        Self {
            pool,
            req,
            opts,
            out,
            nodes: BTreeMap::new(),
            opened: Vec::new(),
            lost: 0,
            closed: false,
            limit,
            hold_until: Instant::now() + HISTORY_SILENCE,
        }
    }

    fn subscribe(&mut self, node: &NodeInfo, resume: bool) {
        let mut req = self.req.clone();
        if req.follow {
            req.webb_heartbeat_ms = HEARTBEAT_MS;
        }
        if resume {
            // After a reconnect: only what is new.
            req.number = 0;
            req.first = false;
            req.since = None;
        }
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
        let key = node.address.clone();
        // Each node has its own channel, so one node's backlog never sits in
        // front of another's flows.
        let (tx, rx) = mpsc::channel(NODE_QUEUE);
        self.opened.push((key.clone(), ReceiverStream::new(rx)));
        // Raw responses: the relay reads only each flow's time and forwards
        // the bytes (see raw.rs).
        let mut grpc =
            tonic::client::Grpc::new(node.channel.clone()).max_decoding_message_size(64 << 20);
        tokio::spawn(async move {
            if let Err(e) = grpc.ready().await {
                let _ = tx
                    .send(NodeMsg::End(key, Some(Status::unavailable(e.to_string()))))
                    .await;
                return;
            }
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(crate::raw::GET_FLOWS);
            let mut stream = match grpc
                .server_streaming(tonic::Request::new(req), path, NodeCodec)
                .await
            {
                Ok(s) => s.into_inner(),
                Err(s) => {
                    let _ = tx.send(NodeMsg::End(key, Some(s))).await;
                    return;
                }
            };
            loop {
                tokio::select! {
                    item = stream.next() => match item {
                                                Some(Ok(r)) => {
                            // Hand over what else is ready with it, in one
                            // message: the merger's cost is per message.
                            let mut batch = vec![r];
                            let mut end = None;
                            while batch.len() < BATCH {
                                match stream.next().now_or_never() {
                                    Some(Some(Ok(r))) => batch.push(r),
                                    Some(Some(Err(s))) => {
                                        end = Some(Some(s));
                                        break;
                                    }
                                    Some(None) => {
                                        end = Some(None);
                                        break;
                                    }
                                    None => break,
                                }
                            }
                            if tx.send(NodeMsg::Items(key.clone(), batch)).await.is_err() {
                                return;
                            }
                            if let Some(err) = end {
                                let _ = tx.send(NodeMsg::End(key, err)).await;
                                return;
                            }
                        }
                        Some(Err(s)) => {
                            let _ = tx.send(NodeMsg::End(key, Some(s))).await;
                            return;
                        }
                        None => {
                            let _ = tx.send(NodeMsg::End(key, None)).await;
                            return;
                        }
                    },
                    _ = &mut stop_rx => return,
                }
            }
        });
        self.nodes.insert(
            node.address.clone(),
            NodeQ {
                name: node.name.clone(),
                queue: VecDeque::new(),
                // A resumed stream has no history.
                history_end: resume,
                history_left: 0,
                watermark: None,
                last_heard: Instant::now(),
                done: false,
                ended_at: None,
                stop: Some(stop_tx),
            },
        );
    }

    async fn run(mut self) {
        let mut events = self.pool.subscribe();
        let all = self.pool.nodes();
        let unavailable: Vec<String> = all
            .iter()
            .filter(|n| n.state != NodeState::NodeConnected)
            .map(|n| n.name.clone())
            .collect();
        if !unavailable.is_empty() {
            let msg = all
                .iter()
                .filter(|n| n.state != NodeState::NodeConnected)
                .map(|n| n.last_error.clone())
                .find(|m| !m.is_empty())
                .unwrap_or_default();
            self.emit(status_event(unavailable, NodeState::NodeUnavailable, msg));
        }
        for n in all.iter().filter(|n| n.state == NodeState::NodeConnected) {
            self.subscribe(n, false);
        }
        let follow = self.req.follow;
        let silence = if follow {
            self.opts.delay
        } else {
            HISTORY_SILENCE
        };
        let out = self.out.clone();
        let mut streams: StreamMap<String, ReceiverStream<NodeMsg>> = StreamMap::new();
        // Nodes whose merge queue is full wait here until it drains.
        let mut parked: BTreeMap<String, ReceiverStream<NodeMsg>> = BTreeMap::new();
        let mut tick = tokio::time::interval((self.opts.delay / 4).max(Duration::from_millis(5)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.closed || self.out.is_closed() {
                break;
            }
            if !follow && self.nodes.values().all(|n| n.done && n.queue.is_empty()) {
                break;
            }
            if matches!(self.limit, Some(Limit::First(0))) {
                break;
            }
            // A historical query waits for a slow client (nothing is lost);
            // a live one never does (see `emit`). Either way the merger's
            // own queues stay bounded.
            let client_full = !follow && self.out.capacity() == 0;
            for (key, stream) in self.opened.drain(..) {
                parked.remove(&key);
                streams.insert(key, stream);
            }
            for (key, n) in &self.nodes {
                if n.queue.len() >= MERGE_QUEUE {
                    if let Some(s) = streams.remove(key) {
                        parked.insert(key.clone(), s);
                    }
                } else if n.queue.len() < MERGE_QUEUE / 2
                    && let Some(s) = parked.remove(key)
                {
                    streams.insert(key.clone(), s);
                }
            }
            tokio::select! {
                permit = out.reserve(), if client_full => {
                    drop(permit);
                }
                                                Some((_, msg)) = streams.next(), if !client_full => {
                    self.on_msg(msg);
                    // Take what else is ready in one go: the bookkeeping
                    // around each wake-up is then paid once per batch.
                    for _ in 0..BATCH {
                        match streams.next().now_or_never() {
                            Some(Some((_, msg))) => self.on_msg(msg),
                            _ => break,
                        }
                    }
                }
                ev = events.recv(), if follow => {
                    if let Ok(ev) = ev {
                        self.on_node_event(ev);
                    }
                }
                _ = tick.tick() => {
                    if follow {
                        self.resubscribe();
                    }
                    self.flush_lost();
                }
                _ = out.closed() => break,
            }
            self.release(silence);
            if follow && self.history_released() {
                self.send_held().await;
            }
        }
        for n in self.nodes.values_mut() {
            if let Some(stop) = n.stop.take() {
                let _ = stop.send(());
            }
        }
        self.send_held().await;
    }

    /// With follow and a held `--last N`: whether every node's history has
    /// been released (or the wait for it is over).
    fn history_released(&self) -> bool {
        matches!(self.limit, Some(Limit::Last(..)))
            && (Instant::now() >= self.hold_until
                || self
                    .nodes
                    .values()
                    .all(|n| (n.history_end || n.done) && n.history_left == 0))
    }

    /// Sends the held newest N, waiting for the client (nothing is lost);
    /// what is released after them goes straight out.
    async fn send_held(&mut self) {
        if let Some(Limit::Last(_, tail)) = self.limit.take() {
            for r in tail {
                if self.out.send(Ok(r)).await.is_err() {
                    self.closed = true;
                    break;
                }
                crate::metrics::METRICS.forwarded.inc();
            }
        }
    }

    fn on_msg(&mut self, msg: NodeMsg) {
        match msg {
            NodeMsg::Items(key, batch) => {
                for r in batch {
                    self.on_item(&key, r);
                }
            }
            NodeMsg::End(key, err) => self.on_end(&key, err),
        }
    }

    fn on_item(&mut self, key: &str, r: Raw) {
        let Some(n) = self.nodes.get_mut(key) else {
            return;
        };
        n.last_heard = Instant::now();
        match r.kind {
            // A heartbeat: the node's watermark. The first one also ends
            // the node's history: what is queued now is all of it.
            Kind::Heartbeat => {
                if let Some(t) = r.time {
                    n.watermark = Some(n.watermark.map_or(t, |w| w.max(t)));
                }
                if !n.history_end {
                    n.history_end = true;
                    n.history_left = n.queue.len();
                }
            }
            Kind::Flow => n.queue.push_back(r),
            // The node's own lost events and statuses pass straight through.
            Kind::NodeStatus | Kind::LostEvents => self.emit(r),
        }
    }

    fn on_end(&mut self, key: &str, err: Option<Status>) {
        let Some(n) = self.nodes.get_mut(key) else {
            return;
        };
        n.done = true;
        n.ended_at = Some(Instant::now());
        if !n.history_end {
            n.history_end = true;
            n.history_left = n.queue.len();
        }
        if let Some(s) = err
            && !self.closed
        {
            let name = n.name.clone();
            tracing::warn!(node = %name, "stream ended: {}", s.message());
            if s.code() == tonic::Code::InvalidArgument {
                // The request itself is bad (every node would say so).
                let _ = self.out.try_send(Err(s));
                self.closed = true;
                return;
            }
            self.emit(status_event(
                vec![name],
                NodeState::NodeUnavailable,
                format!("{}: {}", crate::pool::code_name(s.code()), s.message()),
            ));
        }
    }

    fn on_node_event(&mut self, ev: crate::pool::NodeEvent) {
        match ev.state {
            NodeState::NodeConnected => {
                self.emit(status_event(
                    vec![ev.name.clone()],
                    NodeState::NodeConnected,
                    String::new(),
                ));
                let streaming = self.nodes.get(&ev.address).is_some_and(|n| !n.done);
                if !streaming
                    && let Some(info) = self
                        .pool
                        .nodes()
                        .into_iter()
                        .find(|n| n.address == ev.address)
                {
                    self.subscribe(&info, true);
                }
            }
            state => {
                if let Some(n) = self.nodes.get_mut(&ev.address) {
                    n.done = true;
                    n.ended_at.get_or_insert_with(Instant::now);
                    if let Some(stop) = n.stop.take() {
                        let _ = stop.send(());
                    }
                }
                self.emit(status_event(vec![ev.name], state, ev.message));
            }
        }
    }

    /// Live nodes whose stream broke without the pool noticing a state change
    /// are subscribed again.
    fn resubscribe(&mut self) {
        let due: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| {
                n.done
                    && n.queue.is_empty()
                    && n.ended_at.is_some_and(|t| t.elapsed() >= RESUBSCRIBE_AFTER)
            })
            .map(|(k, _)| k.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        for info in self.pool.connected() {
            if due.contains(&info.address) {
                self.subscribe(&info, true);
            }
        }
    }

    /// Releases every flow no live node can still precede.
    fn release(&mut self, silence: Duration) {
        loop {
            let holding = matches!(self.limit, Some(Limit::Last(..)));
            if !self.req.follow && !holding && self.out.capacity() == 0 {
                return;
            }
            let Some((key, t)) = self
                .nodes
                .iter()
                .filter_map(|(k, n)| n.queue.front().map(|r| (k, r.time)))
                .min_by_key(|(_, t)| *t)
                .map(|(k, t)| (k.clone(), t))
            else {
                return;
            };
            let ready = self.nodes.iter().all(|(k, n)| {
                *k == key
                    || n.done
                    || !n.queue.is_empty()
                    || t.is_none()
                    || n.watermark.is_some_and(|w| Some(w) >= t)
                    || n.last_heard.elapsed() >= silence
            });
            if !ready {
                return;
            }
            let r = self.nodes.get_mut(&key).and_then(|n| {
                n.history_left = n.history_left.saturating_sub(1);
                n.queue.pop_front()
            });
            if let Some(r) = r {
                self.deliver(r);
            }
        }
    }

    /// A released response, through the cluster-wide `--first`/`--last`.
    fn deliver(&mut self, r: Raw) {
        if r.kind == Kind::Flow {
            match &mut self.limit {
                Some(Limit::Last(n, tail)) => {
                    tail.push_back(r);
                    if tail.len() > *n {
                        tail.pop_front();
                    }
                    return;
                }
                Some(Limit::First(0)) => return,
                Some(Limit::First(left)) => *left -= 1,
                None => {}
            }
        }
        self.emit(r);
    }

    /// Sends to the client without waiting: a full queue counts the flow as
    /// lost, and the count goes out as one lost_events as soon as there is
    /// room.
    fn emit(&mut self, r: Raw) {
        if !self.flush_lost() {
            self.lost += 1;
            crate::metrics::METRICS.lost.inc();
            return;
        }
        let time = r.time;
        let m = &*crate::metrics::METRICS;
        match self.out.try_send(Ok(r)) {
            Ok(()) => {
                m.forwarded.inc();
                if let Some(t) = time {
                    let now = Timestamp::from(std::time::SystemTime::now());
                    let ns = (i128::from(now.seconds) - i128::from(t.seconds)) * 1_000_000_000
                        + i128::from(now.nanos - t.nanos);
                    m.merge_delay.observe(ns.max(0) as f64 / 1e9);
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lost += 1;
                m.lost.inc();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.closed = true,
        }
    }

    /// Sends the pending lost-events report if there is one and room for
    /// it; false when it is still pending.
    fn flush_lost(&mut self) -> bool {
        if self.lost == 0 {
            return true;
        }
        let report = Raw::from_message(&GetFlowsResponse {
            time: Some(Timestamp::from(std::time::SystemTime::now())),
            node_name: self.opts.node_name.to_owned(),
            response_types: Some(ResponseTypes::LostEvents(LostEvent {
                source: LostEventSource::ObserverEventsQueue as i32,
                num_events_lost: self.lost,
                cpu: None,
                first: None,
                last: None,
            })),
        });
        match self.out.try_send(Ok(report)) {
            Ok(()) => {
                self.lost = 0;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => false,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.closed = true;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
