//! Hubble's flow exporter (`--export-file-path`): every flow that passes
//! the export filters, as one JSON line in Hubble's `-o json` form, written
//! to a file that Fluent Bit, Vector, Promtail or Logstash follow, and that
//! `webb observe --input-file` and `hubble observe --input-file` read back.
//!
//! A sink of the ingest pipeline. The pipeline only hands batches to a
//! bounded queue; one writer thread filters, masks, encodes and writes, so
//! a slow disk never stalls ingest: a batch that finds the queue full is
//! dropped and counted (`webb_export_dropped_total`), never silently.
//!
//! Rotation as Hubble's (lumberjack's): when a line would take the file past
//! `--export-file-max-size-mb`, the file is renamed to
//! `NAME-<UTC time>.EXT` (gzipped with `--export-file-compress`), a new one
//! is started, and backups beyond `--export-file-max-backups` are removed,
//! oldest first (0 keeps them all). Rotation happens between lines, so no
//! line is ever split or lost by it. A file removed or renamed away (by
//! logrotate, say) is noticed within a second and started anew.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use webb_proto::{
    filter::FlowFilters,
    flow::FlowFilter,
    json,
    mask::FlowMask,
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
};

use crate::{observer::Item, store::same_file};

pub mod dynamic;

/// Batches the queue holds before the pipeline's next one is dropped.
const QUEUE: usize = 1024;
/// How often the writer checks that its file is still the one at the path.
const CHECK_PATH: Duration = Duration::from_secs(1);

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `stdout`, as Hubble takes it: no rotation.
    Stdout,
    File(PathBuf),
}

#[derive(Clone)]
pub struct Options {
    pub target: Target,
    /// Bytes after which the file is rotated.
    pub max_size: u64,
    /// Rotated files kept (0: all).
    pub max_backups: usize,
    pub compress: bool,
    pub filters: FlowFilters,
    pub mask: Option<Arc<FlowMask>>,
}

#[derive(Debug, Default)]
pub struct Counters {
    /// Lines written.
    pub exported: AtomicU64,
    /// Items not exported: the writer too far behind, or a failed write.
    pub dropped: AtomicU64,
    pub write_errors: AtomicU64,
    pub rotations: AtomicU64,
}

/// A running exporter; the writer stops when this is dropped.
pub struct Exporter {
    tx: Option<SyncSender<Vec<Item>>>,
    counters: Arc<Counters>,
    writer: Option<JoinHandle<()>>,
    /// Set while the queue is full, so it is warned about once.
    behind: bool,
}

/// Export filters as Hubble's agent takes them: JSON `FlowFilter` objects,
/// one after another (separated by whitespace or commas), or a JSON array.
pub fn parse_filters(flag: &str, text: &str) -> anyhow::Result<Vec<FlowFilter>> {
    let text = text.trim();
    if text.starts_with('[') {
        return serde_json::from_str(text)
            .with_context(|| format!("{flag}: not a JSON list of FlowFilters"));
    }
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        if rest.is_empty() {
            return Ok(out);
        }
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<FlowFilter>();
        match stream.next() {
            Some(Ok(f)) => out.push(f),
            Some(Err(e)) => {
                return Err(e).with_context(|| format!("{flag}: not a JSON FlowFilter: {rest}"));
            }
            None => return Ok(out),
        }
        rest = &rest[stream.byte_offset()..];
    }
}

/// Field mask paths, separated by commas or whitespace.
pub fn parse_mask(text: &[String]) -> anyhow::Result<Option<Arc<FlowMask>>> {
    let paths: Vec<&str> = text
        .iter()
        .flat_map(|t| t.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|p| !p.is_empty())
        .collect();
    let mask = FlowMask::new(&paths).map_err(|e| anyhow::anyhow!("--export-fieldmask: {e}"))?;
    Ok(mask.map(Arc::new))
}

impl Exporter {
    /// Opens the file (creating its directory) and starts the writer.
    pub fn start(opts: Options) -> anyhow::Result<Self> {
        Self::start_counted(opts, Arc::new(Counters::default()))
    }

    /// As [`Exporter::start`], counting into counters shared with others
    /// (the dynamic flow logs count together).
    pub fn start_counted(opts: Options, counters: Arc<Counters>) -> anyhow::Result<Self> {
        let out = Output::open(&opts)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let c = counters.clone();
        let writer = std::thread::Builder::new()
            .name("webb-export".into())
            .spawn(move || write_loop(rx, out, &opts, &c))?;
        Ok(Self {
            tx: Some(tx),
            counters,
            writer: Some(writer),
            behind: false,
        })
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has written what is in it.
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl crate::ingest::FlowSink for Exporter {
    fn accept(&mut self, _first_seq: u64, items: &[Item]) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(items.to_vec()) {
            Ok(()) => self.behind = false,
            Err(TrySendError::Full(v) | TrySendError::Disconnected(v)) => {
                self.counters
                    .dropped
                    .fetch_add(v.len() as u64, Ordering::Relaxed);
                if !self.behind {
                    tracing::warn!(
                        "flow export: the writer is behind; dropping flows (counted in webb_export_dropped_total)"
                    );
                    self.behind = true;
                }
            }
        }
    }
}

/// Whether an item goes to the export: flows by the filters; lost events
/// and node status as Hubble's filters treat a response with no flow.
fn passes(filters: &FlowFilters, item: &GetFlowsResponse) -> bool {
    if filters.is_empty() {
        return true;
    }
    match &item.response_types {
        Some(ResponseTypes::Flow(f)) => filters.matches(f),
        _ => filters.matches_non_flow(),
    }
}

fn write_loop(rx: Receiver<Vec<Item>>, mut out: Output, opts: &Options, c: &Counters) {
    let mut masker = opts.mask.as_ref().map(|m| m.masker());
    let mut buf = Vec::with_capacity(1 << 20);
    let mut ends = Vec::new();
    let mut failing = false;
    for batch in rx {
        buf.clear();
        ends.clear();
        for item in batch.iter().filter(|i| passes(&opts.filters, i)) {
            match &mut masker {
                Some(m) => json::append_line(&mut buf, &m.response(item)),
                None => json::append_line(&mut buf, item),
            }
            buf.push(b'\n');
            ends.push(buf.len());
        }
        if ends.is_empty() {
            continue;
        }
        match out.write_lines(&buf, &ends, opts, c) {
            Ok(()) => {
                c.exported.fetch_add(ends.len() as u64, Ordering::Relaxed);
                if failing {
                    tracing::info!("flow export: writing again");
                    failing = false;
                }
            }
            Err((written, e)) => {
                c.exported.fetch_add(written as u64, Ordering::Relaxed);
                c.dropped
                    .fetch_add((ends.len() - written) as u64, Ordering::Relaxed);
                c.write_errors.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    tracing::warn!(
                        "flow export: {e:#}; dropping flows until a write succeeds (counted in webb_export_dropped_total)"
                    );
                    failing = true;
                }
            }
        }
    }
    let _ = out.flush();
}

/// The export file (or standard output) and its size.
enum Output {
    Stdout,
    File {
        path: PathBuf,
        file: File,
        size: u64,
        checked: Instant,
    },
}

impl Output {
    fn open(opts: &Options) -> anyhow::Result<Self> {
        match &opts.target {
            Target::Stdout => Ok(Self::Stdout),
            Target::File(path) => {
                let (file, size) = open_file(path)
                    .with_context(|| format!("--export-file-path {}", path.display()))?;
                Ok(Self::File {
                    path: path.clone(),
                    file,
                    size,
                    checked: Instant::now(),
                })
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Stdout => io::stdout().flush(),
            Self::File { file, .. } => file.flush(),
        }
    }

    /// Writes the lines of `buf` (ending at `ends`), rotating between lines;
    /// on failure, how many lines were written.
    fn write_lines(
        &mut self,
        buf: &[u8],
        ends: &[usize],
        opts: &Options,
        c: &Counters,
    ) -> Result<(), (usize, anyhow::Error)> {
        let Self::File {
            path,
            file,
            size,
            checked,
        } = self
        else {
            let mut out = io::stdout().lock();
            return out
                .write_all(buf)
                .and_then(|()| out.flush())
                .map_err(|e| (0, e.into()));
        };
        if checked.elapsed() >= CHECK_PATH {
            *checked = Instant::now();
            if !same_file(file, path) {
                // Moved or removed under us: start the file anew.
                let (f, s) = open_file(path).map_err(|e| (0, e))?;
                (*file, *size) = (f, s);
            }
        }
        let mut start = 0;
        let mut done = 0;
        while done < ends.len() {
            // The lines that fit before the next rotation (at least one:
            // a line longer than the limit gets a file of its own).
            let mut end = done;
            while end < ends.len()
                && (end == done && *size == 0
                    || *size + (ends[end] - start) as u64 <= opts.max_size)
            {
                end += 1;
            }
            if end == done {
                rotate(path, opts, c).map_err(|e| (done, e))?;
                let (f, s) = open_file(path).map_err(|e| (done, e))?;
                (*file, *size) = (f, s);
                continue;
            }
            let stop = ends[end - 1];
            file.write_all(&buf[start..stop])
                .with_context(|| format!("writing {}", path.display()))
                .map_err(|e| (done, e))?;
            *size += (stop - start) as u64;
            start = stop;
            done = end;
        }
        Ok(())
    }
}

fn open_file(path: &Path) -> anyhow::Result<(File, u64)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

/// `events.log` → (`events`, `.log`).
fn stem_and_ext(path: &Path) -> (String, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rfind('.').filter(|i| *i > 0) {
        Some(i) => (name[..i].to_owned(), name[i..].to_owned()),
        None => (name, String::new()),
    }
}

/// The UTC time as lumberjack writes it in backup names.
fn backup_time(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(0);
    chrono::DateTime::from_timestamp(secs, d.subsec_nanos())
        .unwrap_or_default()
        .format("%Y-%m-%dT%H-%M-%S%.3f")
        .to_string()
}

/// Renames the file to its backup name (compressing it if asked) and
/// removes the backups beyond the limit.
fn rotate(path: &Path, opts: &Options, c: &Counters) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (stem, ext) = stem_and_ext(path);
    // Names sort as the files were written: a new backup is named after
    // every one there (two rotations in one millisecond, or a clock set
    // back, take the millisecond after the newest).
    let before = backups(dir, &stem, &ext)?;
    // Names hold milliseconds: compare at that precision.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut time = SystemTime::UNIX_EPOCH + Duration::from_millis(now.as_millis() as u64);
    if let Some(&(_, newest)) = before.last()
        && newest >= time
    {
        time = newest + Duration::from_millis(1);
    }
    let taken = |b: &Path| b.exists() || PathBuf::from(format!("{}.gz", b.display())).exists();
    let mut backup = dir.join(format!("{stem}-{}{ext}", backup_time(time)));
    while taken(&backup) {
        time += Duration::from_millis(1);
        backup = dir.join(format!("{stem}-{}{ext}", backup_time(time)));
    }
    fs::rename(path, &backup).with_context(|| format!("rotating {}", path.display()))?;
    c.rotations.fetch_add(1, Ordering::Relaxed);
    if opts.compress {
        let gz = PathBuf::from(format!("{}.gz", backup.display()));
        compress(&backup, &gz).with_context(|| format!("compressing {}", backup.display()))?;
        fs::remove_file(&backup)?;
    }
    // The new backup is the newest: the oldest of those before it go.
    if opts.max_backups > 0 {
        let excess = (before.len() + 1).saturating_sub(opts.max_backups);
        for (old, _) in &before[..excess.min(before.len())] {
            let _ = fs::remove_file(old);
        }
    }
    Ok(())
}

/// The rotated files of `STEM.EXT` in `dir` (`STEM-<time>EXT[.gz]`), oldest
/// first, with the time their name carries.
fn backups(dir: &Path, stem: &str, ext: &str) -> io::Result<Vec<(PathBuf, SystemTime)>> {
    let prefix = format!("{stem}-");
    let mut out: Vec<(String, PathBuf, SystemTime)> = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let Some(name) = p.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let rest = rest.strip_suffix(".gz").unwrap_or(rest);
        let Some(time) = rest.strip_suffix(ext) else {
            continue;
        };
        let Ok(t) = chrono::NaiveDateTime::parse_from_str(time, "%Y-%m-%dT%H-%M-%S%.3f") else {
            continue;
        };
        let t = t.and_utc();
        let at = SystemTime::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(t.timestamp_millis()).unwrap_or(0));
        out.push((time.to_owned(), p, at));
    }
    out.sort();
    Ok(out.into_iter().map(|(_, p, t)| (p, t)).collect())
}

fn compress(from: &Path, to: &Path) -> io::Result<()> {
    let mut input = File::open(from)?;
    let out = File::create(to)?;
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    io::copy(&mut input, &mut gz)?;
    gz.finish()?.sync_all()
}

#[cfg(test)]
mod tests;
