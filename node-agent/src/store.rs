//! The on-disk flow store (`--flow-store DIR`): every item the ring gets is
//! also kept on disk, so history outlives the ring and the agent.
//!
//! Format: a directory of segment files named by the sequence number of
//! their first item (`00000000000000000042.wfs`), each an 8-byte magic then
//! blocks. A block is a fixed header ([`HEADER`] bytes: sizes, item count,
//! first sequence number, time range, a [`Summary`] of what it holds, CRC-32
//! of the payload and of the header) and a payload of two zstd frames: the
//! items' keys (an [`ItemKey`] each: verdict, ports, namespaces), then the
//! length-delimited `GetFlowsResponse` messages. A query skips a block by
//! its summary, then by its keys (decompressing only them), and decodes
//! only the items whose key may pass. Blocks are written whole,
//! at most [`FLUSH`] apart, by one writer thread; the index (headers only)
//! is rebuilt at start by reading headers, not payloads.
//!
//! Why this and not an embedded database: flows are appended in time order
//! and never updated, queries scan time ranges, and retention drops the
//! oldest whole: an append-only log of compressed blocks does exactly that
//! with one write per block and one unlink per expired segment, where a
//! B-tree store (redb, sled) would rewrite pages and compress nothing.
//!
//! Faults, none of which stop the agent: a torn tail (a crash mid-write) is
//! cut at start; a block whose header or payload does not check is skipped
//! and counted, never decoded; a full disk or a failed write is warned about
//! once, counted, and writing resumes when a write succeeds (the flows stay
//! in the memory ring meanwhile); a removed directory is created again; a
//! second agent on the same directory is refused (an exclusive `flock`).

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::Write as _,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use prost::Message as _;
use webb_proto::{
    filter::{FlowFilters, ItemKey, Summary},
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
    wkt::Timestamp,
};

use crate::observer::{Hub, Item, Query, Snapshot};

const SEGMENT_MAGIC: &[u8; 8] = b"WEBBFS01";
const BLOCK_MAGIC: &[u8; 4] = b"WFB2";
/// Blocks written before keys: items only, all decoded. Still read.
const BLOCK_MAGIC_UNKEYED: &[u8; 4] = b"WFB1";
/// A keyed block whose items frame was compressed with its segment's
/// reference (see [`REFERENCE_MAX`]).
const BLOCK_MAGIC_REFERENCED: &[u8; 4] = b"WFB3";
/// A small block compresses poorly alone (a node's second of flows: a
/// hundred flows, each mostly like the others). Such blocks are compressed
/// with a reference: the first this many bytes of the items of their
/// segment's first block, as a zstd raw-content dictionary, so what flows
/// share is paid for once per segment, not once per block (the demo's
/// 46 bytes a flow become 3x).
/// Bytes in a block header.
pub const HEADER: usize = 80;
/// Items per block at most.
const BLOCK_ITEMS: usize = 8192;
/// The longest an item waits in memory before its block is written: what a
/// `kill -9` can lose.
pub const FLUSH: Duration = Duration::from_secs(1);
/// Items waiting for the writer at most; beyond, new items are not stored
/// (and counted) rather than held in memory without bound.
const MAX_WAITING: usize = 1 << 20;
const SEGMENT_MAX: u64 = 64 << 20;
const ZSTD_LEVEL: i32 = 3;
/// A block of fewer items is a slow node's second of flows: compressed
/// harder (the writer has the time, and a small block compresses poorly).
const SMALL_BLOCK: usize = 1024;
const ZSTD_LEVEL_SMALL: i32 = 19;
const REFERENCE_MAX: usize = 64 << 10;

#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    /// Bytes on disk at most; the oldest segments go first.
    pub max_size: u64,
    /// Flows older than this are removed (with their segment).
    pub max_age: Duration,
}

/// What the store counts (ServerStatus, metrics, logs).
#[derive(Debug, Default)]
pub struct Counters {
    /// Items given to the store that it could not write (disk full, write
    /// errors, a writer too far behind). They stayed in the ring.
    pub not_stored: AtomicU64,
    pub write_errors: AtomicU64,
    /// Blocks whose header or payload did not check, skipped.
    pub corrupt_blocks: AtomicU64,
    /// Bytes cut from torn segment tails at start.
    pub torn_bytes: AtomicU64,
    pub blocks_skipped_by_summary: AtomicU64,
    /// Blocks read whose keys ruled every item out (items not decompressed).
    pub blocks_skipped_by_keys: AtomicU64,
    /// Items decoded for queries, and items their keys let a query skip.
    pub items_decoded: AtomicU64,
    pub items_skipped_by_keys: AtomicU64,
}

/// The window the store holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Status {
    pub oldest: Option<Timestamp>,
    pub newest: Option<Timestamp>,
    pub items: u64,
    pub bytes: u64,
    pub segments: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BlockMeta {
    offset: u64,
    len: u32,
    raw_len: u32,
    count: u32,
    first_seq: u64,
    min_ns: i64,
    max_ns: i64,
    summary: Summary,
    /// Its payload starts with the items' keys (not a `WFB1` block).
    keyed: bool,
    /// Its items need the segment's reference to decompress (`WFB3`).
    referenced: bool,
}

impl BlockMeta {
    fn end_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count)
    }

    fn encode(&self, payload_crc: u32) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[0..4].copy_from_slice(if self.referenced {
            BLOCK_MAGIC_REFERENCED
        } else if self.keyed {
            BLOCK_MAGIC
        } else {
            BLOCK_MAGIC_UNKEYED
        });
        h[4..8].copy_from_slice(&self.len.to_le_bytes());
        h[8..12].copy_from_slice(&self.raw_len.to_le_bytes());
        h[12..16].copy_from_slice(&self.count.to_le_bytes());
        h[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        h[24..32].copy_from_slice(&self.min_ns.to_le_bytes());
        h[32..40].copy_from_slice(&self.max_ns.to_le_bytes());
        h[40..44].copy_from_slice(&self.summary.verdicts.to_le_bytes());
        h[44..52].copy_from_slice(&self.summary.ports[0].to_le_bytes());
        h[52..60].copy_from_slice(&self.summary.ports[1].to_le_bytes());
        h[60..68].copy_from_slice(&self.summary.namespaces.to_le_bytes());
        h[68] = u8::from(self.summary.non_flows);
        h[72..76].copy_from_slice(&payload_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..76]);
        h[76..80].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// The header at `offset`, if it checks; with its payload's CRC.
    fn decode(h: &[u8; HEADER], offset: u64) -> Option<(Self, u32)> {
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let referenced = &h[0..4] == BLOCK_MAGIC_REFERENCED;
        let keyed = referenced || &h[0..4] == BLOCK_MAGIC;
        if !(keyed || &h[0..4] == BLOCK_MAGIC_UNKEYED) || crc32fast::hash(&h[..76]) != u32_at(76) {
            return None;
        }
        let meta = Self {
            offset,
            len: u32_at(4),
            raw_len: u32_at(8),
            count: u32_at(12),
            first_seq: u64_at(16),
            min_ns: u64_at(24) as i64,
            max_ns: u64_at(32) as i64,
            summary: Summary {
                verdicts: u32_at(40),
                ports: [u64_at(44), u64_at(52)],
                namespaces: u64_at(60),
                non_flows: h[68] != 0,
            },
            keyed,
            referenced,
        };
        Some((meta, u32_at(72)))
    }
}

/// Blocks (with their segment's path) and numbered items in memory.
type Held = (Vec<(PathBuf, BlockMeta)>, Vec<(u64, Item)>);

struct Segment {
    path: PathBuf,
    blocks: Vec<BlockMeta>,
    /// Bytes in the file (the next block's offset).
    size: u64,
}

impl Segment {
    fn max_ns(&self) -> Option<i64> {
        self.blocks.iter().map(|b| b.max_ns).max()
    }
}

struct State {
    /// Items not yet handed to the writer, from `pending_first`.
    pending: Vec<Item>,
    pending_first: u64,
    pending_since: Option<Instant>,
    /// Blocks the writer is writing: still served from memory.
    waiting: VecDeque<(u64, Arc<Vec<Item>>)>,
    waiting_items: usize,
    segments: Vec<Segment>,
    next_seq: u64,
    stop: bool,
}

struct Inner {
    opts: Options,
    state: Mutex<State>,
    wake: Condvar,
    counters: Counters,
    /// Set after a failed write is warned about; cleared by a good one.
    failing: AtomicBool,
    /// The lock on the directory: held while the file is open.
    lock: Mutex<File>,
    /// The last segment reference read (scans go segment by segment):
    /// its segment, its first block's payload CRC, and the bytes.
    reference: ReferenceCache,
}

/// The last segment reference read: its segment, its first block's payload
/// CRC, and the bytes.
type ReferenceCache = Mutex<Option<(PathBuf, u32, Arc<Vec<u8>>)>>;

pub struct FlowStore {
    inner: Arc<Inner>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

fn lock_dir(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join("LOCK");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    use std::os::fd::AsRawFd as _;
    // SAFETY: flock on a file descriptor we own.
    let try_lock = || unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    // A lock can outlive its holder for a moment: a process forked between
    // the holder's open and its close shares the lock until it execs (or an
    // agent being replaced is still exiting). So wait up to a second before
    // calling the directory taken; a live agent holds it far longer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let mut locked = try_lock();
    while !locked && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        locked = try_lock();
    }
    if !locked {
        let holder = fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "--flow-store {}: in use by another webb-agent (pid {}); give each agent its own directory",
            dir.display(),
            holder.trim()
        );
    }
    f.set_len(0)?;
    writeln!(f, "{}", std::process::id())?;
    Ok(f)
}

fn time_ns(t: Option<Timestamp>) -> i64 {
    t.map_or(0, |t| {
        t.seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(t.nanos))
    })
}

fn ns_time(ns: i64) -> Timestamp {
    Timestamp::from_nanos(i128::from(ns))
}

/// Reads a segment's headers; returns the blocks that check and the offset
/// after the last of them.
fn scan_segment(path: &Path) -> anyhow::Result<(Vec<BlockMeta>, u64, u64)> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut magic = [0u8; 8];
    if len < 8 || f.read_exact_at(&mut magic, 0).is_err() || &magic != SEGMENT_MAGIC {
        return Ok((Vec::new(), 0, len));
    }
    let mut blocks = Vec::new();
    let mut off = 8u64;
    let mut expect_seq: Option<u64> = None;
    while off + HEADER as u64 <= len {
        let mut h = [0u8; HEADER];
        if f.read_exact_at(&mut h, off).is_err() {
            break;
        }
        let Some((meta, _)) = BlockMeta::decode(&h, off) else {
            break;
        };
        let end = off + HEADER as u64 + u64::from(meta.len);
        if end > len || expect_seq.is_some_and(|s| meta.first_seq < s) {
            break;
        }
        expect_seq = Some(meta.end_seq());
        blocks.push(meta);
        off = end;
    }
    Ok((blocks, off, len))
}

impl FlowStore {
    /// Opens (or creates) the store: takes the directory's lock, indexes the
    /// segments, cuts a torn tail, and starts the writer.
    pub fn open(opts: Options) -> anyhow::Result<Arc<Self>> {
        fs::create_dir_all(&opts.dir)
            .with_context(|| format!("--flow-store {}: cannot create", opts.dir.display()))?;
        let lock = lock_dir(&opts.dir)?;
        let counters = Counters::default();
        let mut names: Vec<PathBuf> = fs::read_dir(&opts.dir)
            .with_context(|| format!("--flow-store {}: cannot read", opts.dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "wfs"))
            .collect();
        names.sort();
        let mut segments = Vec::new();
        let last = names.len().saturating_sub(1);
        for (i, path) in names.into_iter().enumerate() {
            let (blocks, good, len) =
                scan_segment(&path).with_context(|| format!("reading {}", path.display()))?;
            if good < len {
                let cut = len - good;
                if i == last {
                    // A crash mid-write: the tail never became a block.
                    tracing::warn!(segment = %path.display(), bytes = cut, "flow store: cutting a torn tail");
                    counters.torn_bytes.fetch_add(cut, Ordering::Relaxed);
                    if good < 8 {
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(good))
                        .with_context(|| format!("truncating {}", path.display()))?;
                } else {
                    tracing::warn!(segment = %path.display(), bytes = cut, "flow store: a segment's blocks stop checking here; the rest is skipped");
                    counters.corrupt_blocks.fetch_add(1, Ordering::Relaxed);
                }
            }
            if blocks.is_empty() && i != last {
                continue;
            }
            segments.push(Segment {
                path,
                size: good.max(8),
                blocks,
            });
        }
        let next_seq = segments
            .iter()
            .flat_map(|s| s.blocks.last())
            .map(BlockMeta::end_seq)
            .max()
            .unwrap_or(0);
        let inner = Arc::new(Inner {
            opts,
            state: Mutex::new(State {
                pending: Vec::new(),
                pending_first: next_seq,
                pending_since: None,
                waiting: VecDeque::new(),
                waiting_items: 0,
                segments,
                next_seq,
                stop: false,
            }),
            wake: Condvar::new(),
            counters,
            failing: AtomicBool::new(false),
            lock: Mutex::new(lock),
            reference: Mutex::new(None),
        });
        let w = inner.clone();
        let writer = std::thread::Builder::new()
            .name("webb-store".into())
            .spawn(move || w.write_loop())?;
        Ok(Arc::new(Self {
            inner,
            writer: Mutex::new(Some(writer)),
        }))
    }

    /// The sequence number the next item must have: the ingest pipeline
    /// starts there, so numbers continue across restarts.
    pub fn next_seq(&self) -> u64 {
        self.inner.lock().next_seq
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Takes numbered items; the writer writes them within [`FLUSH`].
    pub fn append(&self, first_seq: u64, items: &[Item]) {
        if items.is_empty() {
            return;
        }
        let mut st = self.inner.lock();
        if st.next_seq != first_seq {
            // Numbers skipped: start the pending block again there.
            self.inner.seal(&mut st);
            st.pending_first = first_seq;
        }
        if st.waiting_items >= MAX_WAITING {
            self.inner
                .counters
                .not_stored
                .fetch_add(items.len() as u64, Ordering::Relaxed);
            st.next_seq = first_seq + items.len() as u64;
            st.pending_first = st.next_seq;
            return;
        }
        if st.pending.is_empty() {
            st.pending_first = first_seq;
            st.pending_since = Some(Instant::now());
        }
        for item in items {
            st.pending.push(item.clone());
            if st.pending.len() >= BLOCK_ITEMS {
                self.inner.seal(&mut st);
                st.pending_since = Some(Instant::now());
            }
        }
        st.next_seq = first_seq + items.len() as u64;
        if st.pending.is_empty() {
            st.pending_since = None;
        }
    }

    /// Writes what is pending and stops the writer.
    pub fn close(&self) {
        {
            let mut st = self.inner.lock();
            self.inner.seal(&mut st);
            st.stop = true;
        }
        self.inner.wake.notify_all();
        if let Some(w) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = w.join();
        }
    }

    pub fn status(&self) -> Status {
        let st = self.inner.lock();
        let blocks = || st.segments.iter().flat_map(|s| &s.blocks);
        let mem = st
            .waiting
            .iter()
            .flat_map(|(_, items)| items.iter())
            .chain(&st.pending);
        let mem_times: Vec<i64> = mem.map(|i| time_ns(i.time)).collect();
        let min = blocks()
            .map(|b| b.min_ns)
            .chain(mem_times.iter().copied())
            .min();
        let max = blocks()
            .map(|b| b.max_ns)
            .chain(mem_times.iter().copied())
            .max();
        Status {
            oldest: min.map(ns_time),
            newest: max.map(ns_time),
            items: blocks().map(|b| u64::from(b.count)).sum::<u64>() + mem_times.len() as u64,
            bytes: st.segments.iter().map(|s| s.size).sum(),
            segments: st.segments.len() as u64,
        }
    }

    /// What the store holds below `before`: its blocks, and the items not
    /// yet written, numbered.
    fn held(&self, before: u64) -> Held {
        let st = self.inner.lock();
        let blocks: Vec<(PathBuf, BlockMeta)> = st
            .segments
            .iter()
            .flat_map(|s| s.blocks.iter().map(|b| (s.path.clone(), *b)))
            .filter(|(_, b)| b.first_seq < before)
            .collect();
        let mut memory: Vec<(u64, Item)> = Vec::new();
        for (first, items) in &st.waiting {
            memory.extend(
                items
                    .iter()
                    .cloned()
                    .enumerate()
                    .map(|(i, it)| (first + i as u64, it)),
            );
        }
        memory.extend(
            st.pending
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, it)| (st.pending_first + i as u64, it)),
        );
        memory.retain(|(seq, _)| *seq < before);
        (blocks, memory)
    }

    /// The items with numbers below `before` that the query wants, oldest
    /// first, read a block at a time as the iterator is advanced (a query
    /// over hours of flows never holds them all); with how many numbers in
    /// the range the store does not hold (not stored, or removed).
    pub fn scan(&self, q: &Query, before: u64) -> Scan {
        let (blocks, memory) = self.held(before);
        let missing = missing_numbers(&blocks, &memory, before, q.since.map(|t| time_ns(Some(t))));
        Scan {
            inner: self.inner.clone(),
            query: q.clone(),
            before,
            blocks: blocks.into(),
            memory: memory.into(),
            current: Vec::new().into_iter(),
            missing,
        }
    }

    /// The items with numbers below `before` that the query wants, oldest
    /// first: the first `limit` of them, or with `newest` the last `limit`.
    /// Also how many numbers in the range the store does not hold.
    pub fn read(&self, q: &Query, before: u64, limit: usize, newest: bool) -> (Vec<Item>, u64) {
        if !newest {
            let mut scan = self.scan(q, before);
            let items = scan.by_ref().take(limit).collect();
            return (items, scan.missing);
        }
        let (blocks, memory) = self.held(before);
        let missing = missing_numbers(&blocks, &memory, before, q.since.map(|t| time_ns(Some(t))));
        let mut out: Vec<Item> = Vec::new();
        let take = |seq: u64, item: Item, out: &mut Vec<Item>| {
            if seq < before && q.wants(&item) {
                out.push(item);
            }
        };
        // Newest first, then turned around.
        for (seq, item) in memory.into_iter().rev() {
            if out.len() >= limit {
                break;
            }
            take(seq, item, &mut out);
        }
        for (path, b) in blocks.iter().rev() {
            if out.len() >= limit {
                break;
            }
            if !self.inner.could_match(q, b) {
                continue;
            }
            for (seq, item) in self.inner.read_block(path, b, &q.filters).into_iter().rev() {
                if out.len() >= limit {
                    break;
                }
                take(seq, item, &mut out);
            }
        }
        out.reverse();
        // A query for the newest N that found them all missed nothing.
        let missing = if q.since.is_none() {
            missing.min(limit.saturating_sub(out.len()) as u64)
        } else {
            missing
        };
        (out, missing)
    }
}

/// A forward read of the store (see [`FlowStore::scan`]).
pub struct Scan {
    inner: Arc<Inner>,
    query: Query,
    before: u64,
    blocks: VecDeque<(PathBuf, BlockMeta)>,
    memory: VecDeque<(u64, Item)>,
    current: std::vec::IntoIter<(u64, Item)>,
    /// Numbers in the range the store does not hold.
    pub missing: u64,
}

impl Iterator for Scan {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            let (seq, item) = match self.current.next() {
                Some(next) => next,
                None => match self.blocks.pop_front() {
                    Some((path, b)) => {
                        if self.inner.could_match(&self.query, &b) {
                            self.current = self
                                .inner
                                .read_block(&path, &b, &self.query.filters)
                                .into_iter();
                        }
                        continue;
                    }
                    None => self.memory.pop_front()?,
                },
            };
            if seq < self.before && self.query.wants(&item) {
                return Some(item);
            }
        }
    }
}

/// How many numbers below `before` the store does not hold, that a query
/// from `since` would have wanted: those removed or never written before
/// the oldest held item (numbers start at 0 in a new store), and the gaps
/// between held blocks that end after `since`.
fn missing_numbers(
    blocks: &[(PathBuf, BlockMeta)],
    memory: &[(u64, Item)],
    before: u64,
    since: Option<i64>,
) -> u64 {
    let mut held: Vec<(u64, u64, i64, i64)> = blocks
        .iter()
        .map(|(_, b)| (b.first_seq, b.end_seq(), b.min_ns, b.max_ns))
        .collect();
    for (seq, item) in memory {
        let t = time_ns(item.time);
        match held.last_mut() {
            Some(last) if last.1 == *seq => {
                last.1 += 1;
                last.2 = last.2.min(t);
                last.3 = last.3.max(t);
            }
            _ => held.push((*seq, seq + 1, t, t)),
        }
    }
    let mut expect = 0u64;
    let mut missing = 0u64;
    for (first, end, min_ns, max_ns) in &held {
        // Items before the oldest held one are older than it; a gap
        // between two held ranges is older than the range after it.
        let wanted = since.is_none_or(|s| *max_ns >= s && (expect > 0 || *min_ns > s));
        if *first > expect && wanted {
            missing += first - expect;
        }
        expect = expect.max(*end);
    }
    // Numbers newer than everything held that the ring no longer keeps:
    // the store never got them.
    missing + before.saturating_sub(expect)
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a block may hold something the query wants: its time range
    /// meets the query's, and its summary passes the filters (a block
    /// skipped so is counted).
    fn could_match(&self, q: &Query, b: &BlockMeta) -> bool {
        let since = q.since.map(|t| time_ns(Some(t)));
        let until = q.until.map(|t| time_ns(Some(t)));
        if since.is_some_and(|s| b.max_ns < s) || until.is_some_and(|u| b.min_ns > u) {
            return false;
        }
        let may = q.filters.may_match(&b.summary);
        if !may {
            self.counters
                .blocks_skipped_by_summary
                .fetch_add(1, Ordering::Relaxed);
        }
        may
    }

    /// Hands the pending items to the writer.
    fn seal(&self, st: &mut State) {
        if st.pending.is_empty() {
            return;
        }
        let items = std::mem::take(&mut st.pending);
        st.waiting_items += items.len();
        let first = st.pending_first;
        st.pending_first = first + items.len() as u64;
        st.pending_since = None;
        st.waiting.push_back((first, Arc::new(items)));
        self.wake.notify_one();
    }

    fn write_loop(&self) {
        let mut active: Option<File> = None;
        // The active segment's reference, once its first block is written.
        let mut reference: Option<Vec<u8>> = None;
        loop {
            let (first, items, stop) = {
                let mut st = self.lock();
                loop {
                    if st.pending_since.is_some_and(|t| t.elapsed() >= FLUSH) {
                        self.seal(&mut st);
                    }
                    if !st.waiting.is_empty() || st.stop {
                        break;
                    }
                    let wait = st
                        .pending_since
                        .map_or(FLUSH, |t| FLUSH.saturating_sub(t.elapsed()))
                        .max(Duration::from_millis(5));
                    st = self
                        .wake
                        .wait_timeout(st, wait)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
                match st.waiting.front() {
                    Some((first, items)) => (*first, items.clone(), false),
                    None => (0, Arc::new(Vec::new()), st.stop),
                }
            };
            if stop {
                if let Some(f) = &active {
                    let _ = f.sync_data();
                }
                return;
            }
            let written = self.write_block(&mut active, &mut reference, first, &items);
            let mut st = self.lock();
            st.waiting.pop_front();
            st.waiting_items -= items.len();
            match written {
                Ok(Some((path, meta, new_segment))) => {
                    if new_segment || st.segments.last().is_none_or(|s| s.path != path) {
                        st.segments.push(Segment {
                            path,
                            blocks: Vec::new(),
                            size: 8,
                        });
                    }
                    if let Some(seg) = st.segments.last_mut() {
                        seg.blocks.push(meta);
                        seg.size = meta.offset + HEADER as u64 + u64::from(meta.len);
                    }
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("flow store: writing again");
                    }
                    self.retain(&mut st, &mut active);
                }
                Ok(None) => {}
                Err(e) => {
                    self.counters
                        .not_stored
                        .fetch_add(items.len() as u64, Ordering::Relaxed);
                    self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    if !self.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "flow store: cannot write ({e:#}); flows stay in the memory ring only, counted as not stored, until a write succeeds"
                        );
                    }
                    // The next block starts a fresh segment.
                    active = None;
                }
            }
        }
    }

    /// Appends one block; returns its segment's path, its header and whether
    /// the segment is new.
    fn write_block(
        &self,
        active: &mut Option<File>,
        reference: &mut Option<Vec<u8>>,
        first: u64,
        items: &[Item],
    ) -> anyhow::Result<Option<(PathBuf, BlockMeta, bool)>> {
        if items.is_empty() {
            return Ok(None);
        }
        let mut raw = Vec::with_capacity(items.len() * 512);
        let mut keys = Vec::with_capacity(items.len() * ItemKey::LEN);
        let mut summary = Summary::default();
        let (mut min_ns, mut max_ns) = (i64::MAX, i64::MIN);
        for item in items {
            item.encode_length_delimited(&mut raw)?;
            let key = match &item.response_types {
                Some(ResponseTypes::Flow(f)) => {
                    summary.add(f);
                    ItemKey::of_flow(f)
                }
                _ => {
                    summary.non_flows = true;
                    ItemKey::non_flow()
                }
            };
            keys.extend_from_slice(&key.to_bytes());
            let t = time_ns(item.time);
            min_ns = min_ns.min(t);
            max_ns = max_ns.max(t);
        }
        let level = if items.len() < SMALL_BLOCK {
            ZSTD_LEVEL_SMALL
        } else {
            ZSTD_LEVEL
        };
        let keys = zstd::bulk::compress(&keys, level)?;
        let compress = |with: Option<&[u8]>| -> anyhow::Result<Vec<u8>> {
            let mut payload = Vec::with_capacity(4 + keys.len() + raw.len() / 4);
            payload.extend_from_slice(&u32::try_from(keys.len())?.to_le_bytes());
            payload.extend_from_slice(&keys);
            payload.extend_from_slice(&match with {
                Some(dict) => {
                    zstd::bulk::Compressor::with_dictionary(level, dict)?.compress(&raw)?
                }
                None => zstd::bulk::compress(&raw, level)?,
            });
            Ok(payload)
        };
        let with = reference.as_deref().filter(|_| items.len() < SMALL_BLOCK);
        let mut payload = compress(with)?;
        let mut meta = BlockMeta {
            offset: 0,
            len: u32::try_from(payload.len())?,
            raw_len: u32::try_from(raw.len())?,
            count: u32::try_from(items.len())?,
            first_seq: first,
            min_ns,
            max_ns,
            summary,
            keyed: true,
            referenced: with.is_some(),
        };
        let (path, size, new_segment) = self.active_segment(active, first)?;
        if new_segment {
            // The first block of a segment is its reference: whole, alone.
            if meta.referenced {
                payload = compress(None)?;
                meta.referenced = false;
                meta.len = u32::try_from(payload.len())?;
            }
            *reference = Some(raw[..raw.len().min(REFERENCE_MAX)].to_vec());
        }
        let Some(f) = active.as_ref() else {
            bail!("no segment open");
        };
        meta.offset = size;
        let header = meta.encode(crc32fast::hash(&payload));
        let mut block = Vec::with_capacity(HEADER + payload.len());
        block.extend_from_slice(&header);
        block.extend_from_slice(&payload);
        if let Err(e) = f.write_all_at(&block, size) {
            // Leave no half block behind for the next one to follow.
            let _ = f.set_len(size);
            return Err(e).context("appending a block");
        }
        Ok(Some((path, meta, new_segment)))
    }

    /// The segment to append to (a new one when there is none or it is
    /// full), and its size.
    fn active_segment(
        &self,
        active: &mut Option<File>,
        first: u64,
    ) -> anyhow::Result<(PathBuf, u64, bool)> {
        let dir = &self.opts.dir;
        let seg_max = (self.opts.max_size / 8).clamp(64 << 10, SEGMENT_MAX);
        let (current, size) = {
            let st = self.lock();
            match st.segments.last() {
                Some(s) => (Some(s.path.clone()), s.size),
                None => (None, 0),
            }
        };
        if !dir.exists() {
            // Removed under us: start again, and hold a new lock.
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            tracing::warn!(dir = %dir.display(), "flow store: the directory was removed; starting an empty store there");
            if let Ok(l) = lock_dir(dir)
                && let Ok(mut held) = self.lock.lock()
            {
                *held = l;
            }
            self.lock().segments.clear();
            *active = None;
            return self.new_segment(active, first);
        }
        match (current, active.as_ref()) {
            // Still the file at that name: a segment removed or replaced
            // under us would swallow the blocks written to it.
            (Some(path), Some(f)) if size < seg_max && same_file(f, &path) => {
                Ok((path, size, false))
            }
            (Some(path), None) if size < seg_max && path.is_file() => {
                *active = Some(OpenOptions::new().write(true).open(&path)?);
                Ok((path, size, false))
            }
            _ => self.new_segment(active, first),
        }
    }

    fn new_segment(
        &self,
        active: &mut Option<File>,
        first: u64,
    ) -> anyhow::Result<(PathBuf, u64, bool)> {
        if let Some(f) = active.take() {
            let _ = f.sync_data();
        }
        let path = self.opts.dir.join(format!("{first:020}.wfs"));
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        if let Err(e) = f.write_all_at(SEGMENT_MAGIC, 0) {
            let _ = fs::remove_file(&path);
            return Err(e).context("writing a segment header");
        }
        *active = Some(f);
        Ok((path, 8, true))
    }

    /// Removes the oldest segments beyond the size or age limit; the
    /// segment being written goes only when it is all too old.
    fn retain(&self, st: &mut State, active: &mut Option<File>) {
        let cutoff = SystemTime::now()
            .checked_sub(self.opts.max_age)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(i64::MIN, |d| d.as_nanos() as i64);
        loop {
            let total: u64 = st.segments.iter().map(|s| s.size).sum();
            let Some(oldest) = st.segments.first() else {
                return;
            };
            let too_big = total > self.opts.max_size && st.segments.len() > 1;
            let too_old = oldest.max_ns().is_some_and(|t| t < cutoff);
            if !(too_big || too_old) {
                return;
            }
            let seg = st.segments.remove(0);
            if st.segments.is_empty() {
                *active = None;
            }
            if let Err(e) = fs::remove_file(&seg.path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(segment = %seg.path.display(), "flow store: cannot remove an old segment: {e}");
            }
        }
    }

    /// A block's items that the filters may want, with their numbers;
    /// none (and counted) when it does not check.
    fn read_block(&self, path: &Path, b: &BlockMeta, filters: &FlowFilters) -> Vec<(u64, Item)> {
        match read_block(path, b, filters, &self.counters, &self.reference) {
            Ok(items) => items,
            Err(e) => {
                // A segment removed by retention meanwhile is not corrupt.
                if path.exists() {
                    self.counters.corrupt_blocks.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(segment = %path.display(), offset = b.offset, "flow store: skipping a block: {e:#}");
                }
                Vec::new()
            }
        }
    }
}

/// Whether the open file is still the one at `path` (not removed or
/// replaced meanwhile). Also the exporter's check.
pub(crate) fn same_file(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (f.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Segment `path`'s reference: the start of its first block's items,
/// which must check (else its referenced blocks cannot be read).
fn segment_reference(path: &Path, cache: &ReferenceCache) -> anyhow::Result<Arc<Vec<u8>>> {
    let f = File::open(path)?;
    let offset = SEGMENT_MAGIC.len() as u64;
    let mut h = [0u8; HEADER];
    f.read_exact_at(&mut h, offset)?;
    let Some((first, crc)) = BlockMeta::decode(&h, offset) else {
        bail!("the segment's first block (its reference) does not check");
    };
    let mut cached = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((p, c, bytes)) = cached.as_ref()
        && p == path
        && *c == crc
    {
        return Ok(bytes.clone());
    }
    if first.referenced {
        bail!("the segment's first block is no reference");
    }
    let mut payload = vec![0u8; first.len as usize];
    f.read_exact_at(&mut payload, offset + HEADER as u64)?;
    if crc32fast::hash(&payload) != crc {
        bail!("the segment's first block (its reference) does not check");
    }
    let items = if first.keyed {
        let Some((len, rest)) = payload.split_first_chunk::<4>() else {
            bail!("the segment's first block is cut short");
        };
        rest.get(u32::from_le_bytes(*len) as usize..)
            .ok_or_else(|| anyhow::anyhow!("the segment's first block is cut short"))?
    } else {
        &payload[..]
    };
    let mut raw = zstd::bulk::decompress(items, first.raw_len as usize)?;
    raw.truncate(REFERENCE_MAX);
    let bytes = Arc::new(raw);
    *cached = Some((path.to_owned(), crc, bytes.clone()));
    Ok(bytes)
}

fn read_block(
    path: &Path,
    b: &BlockMeta,
    filters: &FlowFilters,
    counters: &Counters,
    reference: &ReferenceCache,
) -> anyhow::Result<Vec<(u64, Item)>> {
    let f = File::open(path)?;
    let mut h = [0u8; HEADER];
    f.read_exact_at(&mut h, b.offset)?;
    let Some((meta, crc)) = BlockMeta::decode(&h, b.offset) else {
        bail!("the block header does not check");
    };
    if meta != *b {
        bail!("the block header changed");
    }
    let mut payload = vec![0u8; b.len as usize];
    f.read_exact_at(&mut payload, b.offset + HEADER as u64)?;
    if crc32fast::hash(&payload) != crc {
        bail!("the block's checksum does not match");
    }
    let count = b.count as usize;
    let (wanted, frame) = if b.keyed {
        let Some((len, rest)) = payload.split_first_chunk::<4>() else {
            bail!("the block's keys are cut short");
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            bail!("the block's keys are cut short");
        }
        let (keys, items) = rest.split_at(len);
        if filters.is_empty() {
            (None, items)
        } else {
            let keys = zstd::bulk::decompress(keys, count * ItemKey::LEN)?;
            if keys.len() != count * ItemKey::LEN {
                bail!(
                    "the block holds {} keys, not {count}",
                    keys.len() / ItemKey::LEN
                );
            }
            let wanted: Vec<bool> = keys
                .as_chunks::<{ ItemKey::LEN }>()
                .0
                .iter()
                .map(|k| filters.may_match_key(&ItemKey::from_bytes(k)))
                .collect();
            let n = wanted.iter().filter(|w| **w).count();
            counters
                .items_skipped_by_keys
                .fetch_add((count - n) as u64, Ordering::Relaxed);
            if n == 0 {
                counters
                    .blocks_skipped_by_keys
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(Vec::new());
            }
            (Some(wanted), items)
        }
    } else {
        (None, &payload[..])
    };
    let raw = if b.referenced {
        let dict = segment_reference(path, reference)?;
        zstd::bulk::Decompressor::with_dictionary(&dict)?.decompress(frame, b.raw_len as usize)?
    } else {
        zstd::bulk::decompress(frame, b.raw_len as usize)?
    };
    let mut buf = raw.as_slice();
    let mut out = Vec::with_capacity(if wanted.is_some() { 64 } else { count });
    let mut i = 0usize;
    while !buf.is_empty() {
        let len = prost::encoding::decode_varint(&mut buf)?;
        let Some(msg) = usize::try_from(len).ok().and_then(|l| buf.get(..l)) else {
            bail!("item {i} of the block is cut short");
        };
        buf = &buf[msg.len()..];
        if wanted
            .as_ref()
            .is_none_or(|w| w.get(i).copied().unwrap_or(true))
        {
            out.push((
                b.first_seq + i as u64,
                Arc::new(GetFlowsResponse::decode(msg)?),
            ));
        }
        i += 1;
    }
    if i != count {
        bail!("the block holds {i} items, not {count}");
    }
    counters
        .items_decoded
        .fetch_add(out.len() as u64, Ordering::Relaxed);
    Ok(out)
}

/// The store as a sink of the ingest pipeline.
impl crate::ingest::FlowSink for Arc<FlowStore> {
    fn accept(&mut self, first_seq: u64, items: &[Item]) {
        self.append(first_seq, items);
    }
}

/// A query's history: the ring's part, and before it the store's.
pub struct History {
    pub snapshot: Snapshot,
    /// The store's items older than the ring's, to be sent first.
    pub older: Option<Scan>,
    /// The most items the history (older then the ring's) may give.
    pub limit: usize,
}

impl History {
    /// The whole history at once (tests; the server streams it).
    pub fn collect(self) -> Vec<Item> {
        let older = self.older.into_iter().flatten();
        older
            .chain(self.snapshot.history)
            .take(self.limit)
            .collect()
    }
}

/// A query over the whole history: the ring, and before what it holds, the
/// store. Items are numbered by the pipeline, so the two meet with no gap
/// or overlap: the store answers only numbers below the ring's first.
/// Numbers neither holds any more are `snapshot.overwritten`.
pub fn history(hub: &Hub, store: Option<&FlowStore>, q: &Query) -> History {
    let mut snapshot = hub.query(q);
    let limit = q.limit();
    let Some(store) = store else {
        return History {
            snapshot,
            older: None,
            limit,
        };
    };
    let mut older = None;
    if q.first || q.number == 0 {
        // Oldest first, or all of it: streamed from the store.
        let scan = store.scan(q, snapshot.ring_first_seq);
        snapshot.overwritten = scan.missing;
        older = Some(scan);
    } else {
        // The newest N: what the ring lacks, from the store's newest.
        let want = limit.saturating_sub(snapshot.history.len());
        snapshot.overwritten = 0;
        if want > 0 {
            let (mut items, missing) = store.read(q, snapshot.ring_first_seq, want, true);
            items.append(&mut snapshot.history);
            snapshot.history = items;
            snapshot.overwritten = missing;
        }
    }
    // What is gone is gone from before the store's oldest flow: the answer
    // says from when the history starts (asked from `since`).
    snapshot.lost_span = if snapshot.overwritten == 0 {
        None
    } else {
        let oldest = store.status().oldest.or(snapshot.lost_span.map(|(_, o)| o));
        match (q.since, oldest) {
            (Some(since), Some(oldest)) if since < oldest => Some((since, oldest)),
            (None, Some(oldest)) => snapshot
                .lost_span
                .map(|(first, _)| (first.min(oldest), oldest)),
            _ => None,
        }
    };
    History {
        snapshot,
        older,
        limit,
    }
}

#[cfg(test)]
mod tests;
