//! The flow ring and its subscribers.
//!
//! One [`Hub`] owns the ring of recent flows and the list of `follow`
//! subscribers. The ingest thread publishes batches under one lock; queries
//! snapshot the ring under the same lock, so a `follow` query registers its
//! subscription atomically with its history and misses nothing in between.
//!
//! The ring holds compact records that share what flows have in common
//! (see [`ring`]), built back into responses only when a query returns them.
//!
//! Nothing is lost silently: a subscriber whose queue is full is never waited
//! on; its misses are counted and delivered as one `lost_events` response
//! (source HUBBLE_RING_BUFFER) as soon as it has room again. Flows the ring
//! overwrote before a query could read them are reported the same way.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Instant,
};

use tokio::sync::mpsc;
use webb_proto::{
    filter::FlowFilters,
    flow::{Flow, LostEvent, LostEventSource},
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
    wkt::Timestamp,
};

pub type Item = Arc<GetFlowsResponse>;

/// Default ring size, as Hubble's.
pub const DEFAULT_RING_CAPACITY: usize = 4095;
/// Per-subscriber queue length.
pub const SUBSCRIBER_QUEUE: usize = 8192;
/// How long evictions are remembered for lost-event accounting.
const EVICTION_MEMORY_SECS: usize = 3600;

/// Counters reported by ServerStatus.
#[derive(Default)]
pub struct Counters {
    pub lost_events: AtomicU64,
    /// `lost_events`, by `LostEventSource` value.
    pub lost_by_source: [AtomicU64; 4],
    pub malformed_packets: AtomicU64,
    pub non_ip_packets: AtomicU64,
    pub packets: AtomicU64,
    pub policy_drops: AtomicU64,
    /// Events the kernel wrote to its ring (flow reports, L7 records).
    pub kernel_events: AtomicU64,
    /// Packets the cgroup programs left to TC.
    pub left_to_tc: AtomicU64,
    /// Packets and bytes the flows carried (`webb_packets`, `webb_bytes`):
    /// each report's counts since the flow's last one, summed.
    pub flow_packets: AtomicU64,
    pub flow_bytes: AtomicU64,
    /// Shared with the ingest thread's L7 tracker.
    pub l7: Arc<crate::l7::Counters>,
}

pub struct Hub {
    state: Mutex<State>,
    pub counters: Counters,
    pub started: Instant,
    /// Unix nanoseconds up to which every flow has been published: the
    /// ingest thread sets it after each drain to the time the drain began.
    watermark_ns: AtomicI64,
}

mod ring;

use ring::{Entry, Shapes};

struct State {
    ring: VecDeque<Entry>,
    /// What the ring's flows share.
    shapes: Shapes,
    capacity: usize,
    seen: u64,
    /// The sequence number of the next item stored: the ring holds
    /// `next_seq - ring.len() .. next_seq`. Numbers continue across restarts
    /// when a flow store gives the first one, so that the store and the ring
    /// meet without a gap or an overlap.
    next_seq: u64,
    /// Evicted flows per second of their timestamp, oldest first.
    evicted: VecDeque<(i64, u64)>,
    subscribers: Vec<Subscriber>,
    next_id: u64,
    /// Flows per wall-clock second, for the flow rate.
    rate: VecDeque<(u64, u64)>,
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Item>,
    filters: FlowFilters,
    lost: u64,
    first_lost: Option<Timestamp>,
    last_lost: Option<Timestamp>,
}

/// The result of registering a query.
pub struct Snapshot {
    pub history: Vec<Item>,
    /// Flows the query wanted that the ring had already overwritten.
    pub overwritten: u64,
    /// When some were: the time of the first of them the query asked for
    /// (to the second the ring remembers), and of the oldest flow still
    /// held, so the answer says where the history it has starts.
    pub lost_span: Option<(Timestamp, Timestamp)>,
    pub live: Option<mpsc::Receiver<Item>>,
    pub subscriber_id: Option<u64>,
    /// The sequence number of the oldest item the ring held: anything older
    /// comes from the flow store.
    pub ring_first_seq: u64,
}

/// What a GetFlows query asks of the ring.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub filters: FlowFilters,
    /// 0: every flow in range.
    pub number: u64,
    pub first: bool,
    pub follow: bool,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

impl Query {
    /// Whether a stored item is in the query's time range and passes its
    /// filters.
    pub fn wants(&self, item: &GetFlowsResponse) -> bool {
        let t = flow_time(item);
        let after = self.since.is_none_or(|s| t.is_some_and(|t| t >= s));
        let before = self.until.is_none_or(|u| t.is_some_and(|t| t <= u));
        after && before && matches_item(&self.filters, item)
    }

    /// The most items the query returns from history.
    pub fn limit(&self) -> usize {
        if self.number == 0 {
            usize::MAX
        } else {
            self.number.min(usize::MAX as u64) as usize
        }
    }
}

/// Ring records a query selected ([`Hub::select`]).
pub struct Selection {
    entries: Vec<Entry>,
    /// The sequence number of the oldest item the ring held: older ones
    /// are the store's.
    pub first_seq: u64,
    /// Flows from `gone_since` on that the ring no longer holds.
    pub overwritten: u64,
    scratch: std::collections::HashMap<usize, Flow, foldhash::fast::FixedState>,
}

impl Selection {
    /// Passes each selected flow, oldest first, to `visit`: a scratch flow
    /// per shape, never built into a response.
    pub fn visit(mut self, visit: &mut dyn FnMut(&Flow)) {
        for e in &self.entries {
            match e {
                Entry::Flow(c) => {
                    let f = self
                        .scratch
                        .entry(c.shape_id())
                        .or_insert_with(|| c.shape_flow().clone());
                    c.fill(f);
                    visit(f);
                }
                Entry::Other(item) => {
                    if let Some(ResponseTypes::Flow(f)) = &item.response_types {
                        visit(f);
                    }
                }
            }
        }
    }
}

fn flow_time(item: &GetFlowsResponse) -> Option<Timestamp> {
    item.time
}

/// A flow as the ring stores it.
pub fn flow_item(flow: Flow, node_name: &str) -> Item {
    Arc::new(GetFlowsResponse {
        time: flow.time,
        node_name: node_name.to_owned(),
        response_types: Some(ResponseTypes::Flow(Box::new(flow))),
    })
}

impl Hub {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                ring: VecDeque::with_capacity(capacity.min(1 << 20)),
                shapes: Shapes::default(),
                capacity: capacity.max(1),
                seen: 0,
                next_seq: 0,
                evicted: VecDeque::new(),
                subscribers: Vec::new(),
                next_id: 1,
                rate: VecDeque::new(),
            }),
            counters: Counters::default(),
            started: Instant::now(),
            watermark_ns: AtomicI64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores flows in the ring and hands each to the subscribers it matches,
    /// numbering them after what the ring holds. The batch is drained, so
    /// the caller can reuse its buffer. (The ingest pipeline numbers items
    /// itself and calls [`Hub::publish_items`].)
    pub fn publish(&self, flows: &mut Vec<Flow>, node_name: &str) {
        let items: Vec<Item> = flows
            .drain(..)
            .map(|flow| flow_item(flow, node_name))
            .collect();
        let first = self.lock().next_seq;
        self.publish_items(first, &items);
    }

    /// Stores numbered items (`first_seq`, `first_seq + 1`, ...) in the ring
    /// and hands each to the subscribers it matches.
    pub fn publish_items(&self, first_seq: u64, items: &[Item]) {
        if items.is_empty() {
            return;
        }
        let now_sec = unix_secs();
        let mut st = self.lock();
        let mut n = 0;
        for item in items {
            n += u64::from(matches!(item.response_types, Some(ResponseTypes::Flow(_))));
            st.push(item);
        }
        st.shapes.maybe_sweep();
        st.next_seq = first_seq + items.len() as u64;
        st.seen += n;
        match st.rate.back_mut() {
            Some((sec, count)) if *sec == now_sec => *count += n,
            _ => {
                st.rate.push_back((now_sec, n));
                while st.rate.len() > 61 {
                    st.rate.pop_front();
                }
            }
        }
    }

    /// Reports events lost before they became flows (e.g. a full kernel ring)
    /// to every subscriber, and stores the report in the ring.
    pub fn publish_lost(&self, source: LostEventSource, count: u64, node_name: &str) {
        if count == 0 {
            return;
        }
        let item = self.lost_item(source, count, node_name);
        let first = self.lock().next_seq;
        self.publish_items(first, &[item]);
    }

    /// A report of `count` events lost at `source`, counted in the hub's
    /// counters; the caller publishes it.
    pub fn lost_item(&self, source: LostEventSource, count: u64, node_name: &str) -> Item {
        self.counters
            .lost_events
            .fetch_add(count, Ordering::Relaxed);
        self.counters.count_lost_source(source as i32, count);
        let now = Timestamp::from(std::time::SystemTime::now());
        Arc::new(GetFlowsResponse {
            time: Some(now),
            node_name: node_name.to_owned(),
            response_types: Some(ResponseTypes::LostEvents(LostEvent {
                source: source as i32,
                num_events_lost: count,
                cpu: None,
                first: Some(now),
                last: Some(now),
            })),
        })
    }

    /// Registers a query: the matching history now, and (with follow) a queue
    /// of live flows from this instant on.
    pub fn query(&self, q: &Query) -> Snapshot {
        let mut st = self.lock();
        let limit = q.limit();
        // Records are selected under the lock (a flow is built only to be
        // filtered, into a scratch flow per shape) and built into
        // responses after it.
        let mut wanted = Wanted::new(q);
        let selected: Vec<Entry> = if q.first {
            st.ring
                .iter()
                .filter(|e| wanted.test(e))
                .take(limit)
                .cloned()
                .collect()
        } else {
            let mut h: Vec<Entry> = st
                .ring
                .iter()
                .rev()
                .filter(|e| wanted.test(e))
                .take(limit)
                .cloned()
                .collect();
            h.reverse();
            h
        };
        let history_len = selected.len();
        // What the query wanted from before the oldest retained flow.
        let overwritten = match (q.since, q.first) {
            (Some(since), _) => st
                .evicted
                .iter()
                .filter(|(sec, _)| *sec >= since.seconds)
                .map(|(_, n)| n)
                .sum(),
            (None, true) => st.evicted.iter().map(|(_, n)| n).sum(),
            (None, false) if history_len < limit && limit != usize::MAX => {
                let total: u64 = st.evicted.iter().map(|(_, n)| n).sum();
                total.min((limit - history_len) as u64)
            }
            _ => 0,
        };
        let lost_span = if overwritten > 0 {
            let from = q.since.map_or(i64::MIN, |s| s.seconds);
            let first = st
                .evicted
                .iter()
                .map(|(sec, _)| *sec)
                .find(|sec| *sec >= from);
            let oldest = st.ring.front().and_then(Entry::time);
            first.zip(oldest).map(|(sec, oldest)| {
                let first = Timestamp {
                    seconds: sec,
                    nanos: 0,
                };
                (q.since.map_or(first, |s| s.max(first)).min(oldest), oldest)
            })
        } else {
            None
        };
        let (live, subscriber_id) = if q.follow {
            let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
            let id = st.next_id;
            st.next_id += 1;
            st.subscribers.push(Subscriber {
                id,
                tx,
                filters: q.filters.clone(),
                lost: 0,
                first_lost: None,
                last_lost: None,
            });
            (Some(rx), Some(id))
        } else {
            (None, None)
        };
        let ring_first_seq = st.next_seq - st.ring.len() as u64;
        drop(st);
        Snapshot {
            history: selected.iter().map(Entry::item).collect(),
            overwritten,
            lost_span,
            live,
            subscriber_id,
            ring_first_seq,
        }
    }

    /// The ring's part of an aggregation: the records the query wants,
    /// copied out under the lock (ingest waits only for the copy), to be
    /// visited after it.
    /// `gone_since`: count the flows overwritten from this time on.
    pub fn select(&self, q: &Query, gone_since: Option<Timestamp>) -> Selection {
        let mut wanted = Wanted::new(q);
        let st = self.lock();
        let entries = st.ring.iter().filter(|e| wanted.test(e)).cloned().collect();
        let overwritten = gone_since.map_or(0, |since| {
            st.evicted
                .iter()
                .filter(|(sec, _)| *sec >= since.seconds)
                .map(|(_, n)| n)
                .sum()
        });
        Selection {
            entries,
            first_seq: st.next_seq - st.ring.len() as u64,
            overwritten,
            scratch: wanted.scratch,
        }
    }

    /// Records that every flow up to `t` has been published.
    pub fn advance_watermark(&self, t: std::time::SystemTime) {
        let ns = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        self.watermark_ns.fetch_max(ns, Ordering::Release);
    }

    /// The time up to which every flow has been published, if the ingest
    /// thread has drained at least once.
    pub fn watermark(&self) -> Option<Timestamp> {
        let ns = self.watermark_ns.load(Ordering::Acquire);
        (ns > 0).then(|| Timestamp::from_nanos(i128::from(ns)))
    }

    pub fn unsubscribe(&self, id: u64) {
        self.lock().subscribers.retain(|s| s.id != id);
    }

    pub fn status(&self) -> RingStatus {
        let st = self.lock();
        let now = unix_secs();
        // Flows per second over the last complete minute (or less at start).
        let window: Vec<&(u64, u64)> = st
            .rate
            .iter()
            .filter(|(s, _)| *s < now && now - *s <= 60)
            .collect();
        let secs = window.len().max(1) as f64;
        RingStatus {
            num_flows: st.ring.len() as u64,
            max_flows: st.capacity as u64,
            seen_flows: st.seen,
            flows_rate: window.iter().map(|(_, n)| *n as f64).sum::<f64>() / secs,
            namespaces: namespaces(&st),
            oldest: st.ring.front().and_then(Entry::time),
        }
    }
}

pub struct RingStatus {
    pub num_flows: u64,
    pub max_flows: u64,
    pub seen_flows: u64,
    pub flows_rate: f64,
    pub namespaces: Vec<String>,
    /// The oldest item's time.
    pub oldest: Option<Timestamp>,
}

fn namespaces(st: &State) -> Vec<String> {
    let mut set = std::collections::BTreeSet::new();
    let whole = st.ring.iter().filter_map(|e| match e {
        Entry::Other(item) => match &item.response_types {
            Some(ResponseTypes::Flow(f)) => Some(&**f),
            _ => None,
        },
        Entry::Flow(_) => None,
    });
    for f in st.shapes.live().chain(whole) {
        for e in [&f.source, &f.destination].into_iter().flatten() {
            if !e.namespace.is_empty() && !set.contains(&e.namespace) {
                set.insert(e.namespace.clone());
            }
        }
    }
    set.into_iter().collect()
}

/// A query's test of ring entries: its time range, then the key, then the
/// filters on the flow (built into a scratch flow of the record's shape).
struct Wanted<'q> {
    q: &'q Query,
    scratch: std::collections::HashMap<usize, Flow, foldhash::fast::FixedState>,
}

impl<'q> Wanted<'q> {
    fn new(q: &'q Query) -> Self {
        Self {
            q,
            scratch: Default::default(),
        }
    }

    fn test(&mut self, e: &Entry) -> bool {
        let q = self.q;
        let t = e.time();
        let after = q.since.is_none_or(|s| t.is_some_and(|t| t >= s));
        let before = q.until.is_none_or(|u| t.is_some_and(|t| t <= u));
        if !(after && before) {
            return false;
        }
        if q.filters.is_empty() {
            return true;
        }
        if !q.filters.may_match_key(&e.key()) {
            return false;
        }
        match e {
            Entry::Other(item) => matches_item(&q.filters, item),
            Entry::Flow(c) => {
                let f = self
                    .scratch
                    .entry(c.shape_id())
                    .or_insert_with(|| c.shape_flow().clone());
                c.fill(f);
                q.filters.matches(f)
            }
        }
    }
}

/// Lost-event reports and node status pass every filter: a client must
/// always learn that it missed something.
fn matches_item(filters: &FlowFilters, item: &GetFlowsResponse) -> bool {
    match &item.response_types {
        Some(ResponseTypes::Flow(f)) => filters.matches(f),
        _ => true,
    }
}

impl State {
    fn push(&mut self, item: &Item) {
        if self.ring.len() >= self.capacity
            && let Some(old) = self.ring.pop_front()
        {
            let sec = old.time().map_or(0, |t| t.seconds);
            match self.evicted.back_mut() {
                Some((s, n)) if *s == sec => *n += 1,
                _ => {
                    self.evicted.push_back((sec, 1));
                    while self.evicted.len() > EVICTION_MEMORY_SECS {
                        self.evicted.pop_front();
                    }
                }
            }
        }
        self.fan_out(item);
        let entry = Entry::of(item, &mut self.shapes);
        self.ring.push_back(entry);
    }

    fn fan_out(&mut self, item: &Item) {
        let mut closed = false;
        for sub in &mut self.subscribers {
            if !matches_item(&sub.filters, item) {
                continue;
            }
            if sub.lost > 0 {
                // Tell the subscriber what it missed before anything new.
                let report = Arc::new(GetFlowsResponse {
                    time: sub.last_lost,
                    node_name: item.node_name.clone(),
                    response_types: Some(ResponseTypes::LostEvents(LostEvent {
                        source: LostEventSource::HubbleRingBuffer as i32,
                        num_events_lost: sub.lost,
                        cpu: None,
                        first: sub.first_lost,
                        last: sub.last_lost,
                    })),
                });
                match sub.tx.try_send(report) {
                    Ok(()) => {
                        sub.lost = 0;
                        sub.first_lost = None;
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        closed = true;
                        continue;
                    }
                }
            }
            if sub.lost > 0 {
                sub.lost += 1;
                sub.last_lost = item.time;
                continue;
            }
            match sub.tx.try_send(item.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    sub.lost = 1;
                    sub.first_lost = item.time;
                    sub.last_lost = item.time;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
            }
        }
        if closed {
            self.subscribers.retain(|s| !s.tx.is_closed());
        }
    }
}

/// Counts a subscriber's losses in the hub's lost-events counter. Called by
/// the server when it forwards a lost-events report to its client.
pub fn count_lost(hub: &Hub, item: &GetFlowsResponse) {
    if let Some(ResponseTypes::LostEvents(l)) = &item.response_types
        && l.source == LostEventSource::HubbleRingBuffer as i32
    {
        hub.counters
            .lost_events
            .fetch_add(l.num_events_lost, Ordering::Relaxed);
        hub.counters.count_lost_source(l.source, l.num_events_lost);
    }
}

impl Counters {
    fn count_lost_source(&self, source: i32, n: u64) {
        if let Some(c) = usize::try_from(source)
            .ok()
            .and_then(|i| self.lost_by_source.get(i))
        {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
