//! The ingest pipeline, without the kernel: records from a
//! [`RecordSource`] (the kernel's event ring in production, made-up records
//! in tests and benchmarks) are decoded into flows, numbered, and handed in
//! batches to every [`FlowSink`] in order: metrics, the on-disk store, the
//! ring and its subscribers.
//!
//! Nothing is lost silently: a record too short to decode and an event the
//! source reports it could not deliver (a full kernel ring) both become a
//! `lost_events` item that every sink sees, within a second.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use webb_proto::flow::{Flow, LostEventSource};

use crate::{
    decode::{Context, Decoded, Decoder},
    observer::{Hub, Item, flow_item},
};

/// Records drained per batch; bounds the time a sink's lock is held. Small
/// enough that the batch's flows (~1.3 KiB each) are still in the CPU's
/// cache when the sinks read them (the ring compacts each flow): 256 ingests
/// ~10% faster than 4096 in `cargo bench -p webb-agent --bench ingest`.
pub const BATCH: usize = 256;

/// The kernel's own counters of what it saw and could not report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SourceCounters {
    /// Events the source dropped because its buffer was full.
    pub ring_full: u64,
    pub malformed: u64,
    pub not_ip: u64,
    /// Packets the TC and cgroup programs ran on (a packet seen at two
    /// points counts twice).
    pub packets: u64,
    pub policy_drops: u64,
    /// Events the kernel wrote to the ring: flow reports and L7 records.
    pub events: u64,
    /// Packets the cgroup programs left to TC (see `cgroup_role`).
    pub left_to_tc: u64,
}

/// Where records come from.
pub trait RecordSource {
    /// Calls `record` for each record available now, at most `max` of them;
    /// returns how many there were.
    fn drain(&mut self, max: usize, record: &mut dyn FnMut(&[u8])) -> usize;
    /// Sleeps until records may be available or `timeout` passes.
    fn wait(&mut self, timeout: Duration);
    /// Cumulative counters, read once a second.
    fn counters(&mut self) -> SourceCounters;
}

/// Where flows go. Sinks see every item, numbered consecutively from the
/// first batch on, in the order the pipeline made them.
pub trait FlowSink: Send {
    fn accept(&mut self, first_seq: u64, items: &[Item]);
}

impl FlowSink for Arc<Hub> {
    fn accept(&mut self, first_seq: u64, items: &[Item]) {
        self.publish_items(first_seq, items);
    }
}

impl FlowSink for Arc<crate::metrics::Metrics> {
    fn accept(&mut self, _: u64, items: &[Item]) {
        self.observe(items.iter().filter_map(|i| match &i.response_types {
            Some(webb_proto::observer::get_flows_response::ResponseTypes::Flow(f)) => {
                Some(f.as_ref())
            }
            _ => None,
        }));
    }
}

/// The decoder's naming context as the reconciler republishes it.
pub struct ContextUpdates {
    pub context: Arc<RwLock<Context>>,
    /// Bumped after each new context: the pipeline takes it up on its next
    /// drain, not a second later.
    pub generation: Arc<AtomicU64>,
}

/// Decodes records and feeds the sinks.
pub struct Pipeline {
    pub decoder: Decoder,
    /// Counters, the watermark and lost-event accounting; also a sink when
    /// listed in `sinks`.
    pub hub: Arc<Hub>,
    pub sinks: Vec<Box<dyn FlowSink>>,
    /// The number the next item gets.
    pub next_seq: u64,
    updates: Option<(ContextUpdates, u64)>,
    flows: Vec<Flow>,
    items: Vec<Item>,
    undecodable: u64,
    last: SourceCounters,
    last_tick: Instant,
}

impl Pipeline {
    pub fn new(decoder: Decoder, hub: Arc<Hub>, sinks: Vec<Box<dyn FlowSink>>) -> Self {
        Self {
            decoder,
            hub,
            sinks,
            next_seq: 0,
            updates: None,
            flows: Vec::with_capacity(BATCH),
            items: Vec::with_capacity(BATCH),
            undecodable: 0,
            last: SourceCounters::default(),
            last_tick: Instant::now(),
        }
    }

    /// Numbers items from `seq` on (the store's next number after a restart).
    pub fn starting_at(mut self, seq: u64) -> Self {
        self.next_seq = seq;
        self
    }

    pub fn with_updates(mut self, updates: ContextUpdates) -> Self {
        let generation = updates.generation.load(Ordering::Acquire);
        self.updates = Some((updates, generation));
        self
    }

    /// Runs until `stop` is set.
    pub fn run(mut self, mut source: impl RecordSource, stop: &AtomicBool, poll: Duration) {
        while !stop.load(Ordering::Relaxed) {
            let drained = self.step(&mut source);
            if self.last_tick.elapsed() >= Duration::from_secs(1) {
                self.last_tick = Instant::now();
                self.tick(&mut source);
            }
            if drained == 0 {
                source.wait(poll);
            }
        }
        // What was drained is published; a last tick reports what was lost.
        self.tick(&mut source);
    }

    /// One drain: at most [`BATCH`] records decoded and published. Returns
    /// how many records there were.
    pub fn step(&mut self, source: &mut impl RecordSource) -> usize {
        self.take_context();
        // Everything the source committed before this instant is drained
        // below (when fewer than BATCH), and was stamped earlier still.
        let drain_began = SystemTime::now();
        let decoder = &mut self.decoder;
        let (flows, undecodable) = (&mut self.flows, &mut self.undecodable);
        let drained = source.drain(BATCH, &mut |bytes| match decoder.decode_record(bytes) {
            Decoded::Flow(f) => flows.push(f),
            Decoded::Skipped => {}
            Decoded::Undecodable => *undecodable += 1,
        });
        let node = &self.decoder.ctx.node_name;
        let (packets, bytes) = self
            .flows
            .iter()
            .fold((0, 0), |(p, b), f| (p + f.webb_packets, b + f.webb_bytes));
        let c = &self.hub.counters;
        c.flow_packets.fetch_add(packets, Ordering::Relaxed);
        c.flow_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.items
            .extend(self.flows.drain(..).map(|f| flow_item(f, node)));
        self.flush_items();
        if drained < BATCH {
            self.hub.advance_watermark(drain_began);
        }
        drained
    }

    /// The once-a-second work: the clock, L7 sweeps, and the source's
    /// counters, whose increases are reported as lost events.
    pub fn tick(&mut self, source: &mut impl RecordSource) {
        self.decoder.refresh_clock();
        self.decoder.l7.sweep(crate::decode::monotonic_ns());
        let now = source.counters();
        let lost = now.ring_full.saturating_sub(self.last.ring_full)
            + std::mem::take(&mut self.undecodable);
        if lost > 0 {
            tracing::warn!(lost, "kernel event ring was full; reporting lost events");
            let item = self.hub.lost_item(
                LostEventSource::PerfEventRingBuffer,
                lost,
                &self.decoder.ctx.node_name,
            );
            self.items.push(item);
            self.flush_items();
        }
        let malformed = now.malformed.saturating_sub(self.last.malformed);
        if malformed > 0 {
            tracing::info!(
                malformed,
                "packets with malformed headers were counted and passed"
            );
        }
        let c = &self.hub.counters;
        c.malformed_packets.store(now.malformed, Ordering::Relaxed);
        c.non_ip_packets.store(now.not_ip, Ordering::Relaxed);
        c.packets.store(now.packets, Ordering::Relaxed);
        c.policy_drops.store(now.policy_drops, Ordering::Relaxed);
        c.kernel_events.store(now.events, Ordering::Relaxed);
        c.left_to_tc.store(now.left_to_tc, Ordering::Relaxed);
        self.last = now;
    }

    fn flush_items(&mut self) {
        if self.items.is_empty() {
            return;
        }
        for sink in &mut self.sinks {
            sink.accept(self.next_seq, &self.items);
        }
        self.next_seq += self.items.len() as u64;
        self.items.clear();
    }

    fn take_context(&mut self) {
        let Some((updates, seen)) = &mut self.updates else {
            return;
        };
        let now = updates.generation.load(Ordering::Acquire);
        if now != *seen
            && let Ok(c) = updates.context.read()
        {
            *seen = now;
            self.decoder.ctx = c.clone();
        }
    }
}

/// A record's bytes as the kernel lays them out. `FlowEvent` is `repr(C)`
/// with explicit padding fields, so every byte is initialised.
pub fn record_bytes(
    ev: &node_agent_ebpf::FlowEvent,
) -> [u8; size_of::<node_agent_ebpf::FlowEvent>()] {
    const {
        // Fields sum to the size: no implicit padding (see above).
        assert!(size_of::<node_agent_ebpf::FlowEvent>() == 104);
    }
    let mut out = [0u8; size_of::<node_agent_ebpf::FlowEvent>()];
    // SAFETY: `out` is exactly one FlowEvent long; write_unaligned tolerates
    // its alignment, and the type has no padding bytes.
    unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast(), *ev) };
    out
}

/// Records made on demand by a function, with counters the caller sets: the
/// tests' and benchmarks' source.
pub struct MadeRecords<F> {
    pub make: F,
    pub counters: SourceCounters,
}

impl<F: FnMut() -> Option<Vec<u8>>> RecordSource for MadeRecords<F> {
    fn drain(&mut self, max: usize, record: &mut dyn FnMut(&[u8])) -> usize {
        let mut n = 0;
        while n < max {
            let Some(bytes) = (self.make)() else { break };
            record(&bytes);
            n += 1;
        }
        n
    }

    fn wait(&mut self, timeout: Duration) {
        std::thread::sleep(timeout);
    }

    fn counters(&mut self) -> SourceCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests;
