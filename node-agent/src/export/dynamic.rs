//! Hubble's dynamic flow logs (`--flowlogs-config-path FILE`): several
//! named exporters from one YAML file, each with its own file, filters,
//! field mask, rotation and optional end time, started, stopped and changed
//! as the file changes, with no restart:
//!
//! ```yaml
//! flowLogs:
//!   - name: denied
//!     filePath: /var/log/webb/denied.log
//!     includeFilters: [{verdict: [DROPPED]}]
//!     excludeFilters: []
//!     fieldMask: [time, source, destination, verdict]
//!     end: "2026-12-31T23:59:59Z"
//! ```
//!
//! The filters are `FlowFilter`s with Hubble's field names, as
//! `--export-allowlist` takes them. `fileMaxSizeMb`, `fileMaxBackups` and
//! `fileCompress` set an exporter's rotation (defaults as the static
//! exporter's flags). The file is read again at most every [`RELOAD`] as
//! flows arrive; a log whose settings changed is restarted, one no longer
//! named is stopped (its queue written out first), one past its `end` stops.
//! A file that does not parse, or names a log twice, is warned about and the
//! running logs stay as they are; a missing file means no logs.

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use webb_proto::{filter::FlowFilters, flow::FlowFilter};

use super::{Counters, Exporter, Options, Target, parse_mask};
use crate::observer::Item;

/// How often the file is read again, at most.
pub const RELOAD: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    #[serde(default)]
    flow_logs: Vec<FlowLog>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FlowLog {
    name: String,
    file_path: PathBuf,
    #[serde(default)]
    field_mask: Vec<String>,
    #[serde(default)]
    include_filters: Vec<serde_yaml_ng::Value>,
    #[serde(default)]
    exclude_filters: Vec<serde_yaml_ng::Value>,
    end: Option<String>,
    file_max_size_mb: Option<u64>,
    file_max_backups: Option<usize>,
    file_compress: Option<bool>,
}

/// One log, checked: its exporter's options and end.
struct Spec {
    log: FlowLog,
    options: Options,
    end: Option<SystemTime>,
}

struct Running {
    log: FlowLog,
    end: Option<SystemTime>,
    exporter: Exporter,
}

/// The dynamic logs, as an ingest sink.
pub struct Dynamic {
    path: PathBuf,
    running: Vec<Running>,
    /// The text last read (applied, or refused), to act only on a change.
    last: Option<Vec<u8>>,
    next_read: Instant,
    counters: Arc<Counters>,
}

fn filters(
    name: &str,
    which: &str,
    values: &[serde_yaml_ng::Value],
) -> anyhow::Result<Vec<FlowFilter>> {
    values
        .iter()
        .map(|v| {
            let json = serde_json::to_value(v)?;
            serde_json::from_value::<FlowFilter>(json)
                .with_context(|| format!("flow log {name:?}: {which}: not a FlowFilter"))
        })
        .collect()
}

/// The file's logs, checked whole: any error refuses all of it.
fn parse(text: &[u8]) -> anyhow::Result<Vec<Spec>> {
    let file: File = serde_yaml_ng::from_slice(text).context("not a flowLogs YAML file")?;
    let (mut names, mut paths) = (HashSet::new(), HashSet::new());
    file.flow_logs
        .into_iter()
        .map(|log| {
            let name = log.name.clone();
            if name.is_empty() {
                bail!("a flow log has no name");
            }
            if !names.insert(name.clone()) {
                bail!("flow log {name:?} is named twice");
            }
            if log.file_path.as_os_str().is_empty() {
                bail!("flow log {name:?} has no filePath");
            }
            if log.file_path.as_os_str() != "stdout" && !paths.insert(log.file_path.clone()) {
                bail!(
                    "flow log {name:?}: {} is another log's file",
                    log.file_path.display()
                );
            }
            let include = filters(&name, "includeFilters", &log.include_filters)?;
            let exclude = filters(&name, "excludeFilters", &log.exclude_filters)?;
            let compiled = FlowFilters::compile(&include, &exclude)
                .map_err(|e| anyhow::anyhow!("flow log {name:?}: {e}"))?;
            let mask = parse_mask(&log.field_mask)
                .with_context(|| format!("flow log {name:?}: fieldMask"))?;
            let end = log
                .end
                .as_deref()
                .map(|e| {
                    chrono::DateTime::parse_from_rfc3339(e)
                        .map(SystemTime::from)
                        .with_context(|| {
                            format!("flow log {name:?}: end {e:?} is not an RFC 3339 time")
                        })
                })
                .transpose()?;
            let options = Options {
                target: if log.file_path.as_os_str() == "stdout" {
                    Target::Stdout
                } else {
                    Target::File(log.file_path.clone())
                },
                max_size: log
                    .file_max_size_mb
                    .unwrap_or(10)
                    .max(1)
                    .saturating_mul(1 << 20),
                max_backups: log.file_max_backups.unwrap_or(5),
                compress: log.file_compress.unwrap_or(false),
                filters: compiled,
                mask,
            };
            Ok(Spec { log, options, end })
        })
        .collect()
}

impl Dynamic {
    /// Reads the file now; the logs it names start writing.
    pub fn start(path: PathBuf, counters: Arc<Counters>) -> Self {
        let mut d = Self {
            path,
            running: Vec::new(),
            last: None,
            next_read: Instant::now(),
            counters,
        };
        d.reload();
        d
    }

    /// The names of the running logs.
    pub fn running(&self) -> Vec<&str> {
        self.running.iter().map(|r| r.log.name.as_str()).collect()
    }

    fn reload(&mut self) {
        self.next_read = Instant::now() + RELOAD;
        let text = match fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                if self.last.is_some() {
                    tracing::warn!(path = %self.path.display(), "flow logs: cannot read the config ({e}); the running logs are kept");
                    self.last = None;
                }
                return;
            }
        };
        if self.last.as_ref() == Some(&text) {
            return;
        }
        self.last = Some(text.clone());
        match parse(&text) {
            Ok(specs) => self.apply(specs),
            Err(e) => tracing::warn!(
                path = %self.path.display(),
                "flow logs: config refused ({e:#}); the running logs are kept"
            ),
        }
    }

    fn apply(&mut self, specs: Vec<Spec>) {
        // Stopped (their queues written out) before any new one opens a file.
        self.running.retain(|r| {
            let keep = specs.iter().any(|s| s.log == r.log);
            if !keep {
                tracing::info!(name = %r.log.name, "flow log stopped");
            }
            keep
        });
        let now = SystemTime::now();
        for s in specs {
            if self.running.iter().any(|r| r.log == s.log) {
                continue;
            }
            if s.end.is_some_and(|e| e <= now) {
                tracing::info!(name = %s.log.name, "flow log not started: its end has passed");
                continue;
            }
            match Exporter::start_counted(s.options, self.counters.clone()) {
                Ok(exporter) => {
                    tracing::info!(name = %s.log.name, path = %s.log.file_path.display(), "flow log started");
                    self.running.push(Running {
                        log: s.log,
                        end: s.end,
                        exporter,
                    });
                }
                Err(e) => {
                    self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(name = %s.log.name, "flow log cannot start: {e:#}");
                }
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl crate::ingest::FlowSink for Dynamic {
    fn accept(&mut self, first_seq: u64, items: &[Item]) {
        if Instant::now() >= self.next_read {
            self.reload();
        }
        let now = SystemTime::now();
        self.running.retain(|r| {
            let on = r.end.is_none_or(|e| now < e);
            if !on {
                tracing::info!(name = %r.log.name, "flow log ended (its end time)");
            }
            on
        });
        for r in &mut self.running {
            r.exporter.accept(first_seq, items);
        }
    }
}

#[cfg(test)]
mod tests;
