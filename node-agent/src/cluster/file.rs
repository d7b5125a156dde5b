//! The endpoints and policy files as a source: read at start (a broken file
//! is an error then), re-read when their modification time changes (a broken
//! file is reported and what it said before stays in force).

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use tokio::sync::mpsc;

use super::{Change, Namespace, Pod, Source, Update};
use crate::endpoints::EndpointsFile;

pub struct FileSource {
    pub endpoints: Option<PathBuf>,
    pub policy: Option<PathBuf>,
}

/// What an endpoints file says, as updates that replace what it said before.
pub fn updates_of(file: EndpointsFile) -> Vec<Update> {
    let pods = file
        .endpoints
        .into_iter()
        .map(|spec| Pod {
            uid: String::new(),
            labels: spec.labels,
            ips: spec.ips,
            node: None,
            owner: None,
            workload: spec.workload.map(|w| (w.kind, w.name)),
            host_network: spec.host_network,
            created: 0,
            interface: spec.interface,
            cgroup: spec.cgroup,
            namespace: spec.namespace,
            name: spec.pod,
        })
        .collect();
    let namespaces = file
        .namespaces
        .into_iter()
        .map(|(name, labels)| Namespace { name, labels })
        .collect();
    vec![
        Update::Pods(Source::File, Change::Replace(pods)),
        Update::Namespaces(Source::File, Change::Replace(namespaces)),
        Update::HostIps(Source::File, file.host_ips),
    ]
}

impl FileSource {
    fn read_endpoints(&self) -> anyhow::Result<Vec<Update>> {
        match &self.endpoints {
            Some(p) => Ok(updates_of(EndpointsFile::load(p)?)),
            None => Ok(Vec::new()),
        }
    }

    fn read_policy(&self) -> anyhow::Result<Vec<Update>> {
        match &self.policy {
            Some(p) => Ok(vec![Update::Policies(
                Source::File,
                Change::Replace(crate::policy::load_file(p)?),
            )]),
            None => Ok(Vec::new()),
        }
    }

    /// Both files as they are now; an error names the file and the line.
    pub fn read(&self) -> anyhow::Result<Vec<Update>> {
        let mut out = self.read_endpoints()?;
        out.extend(self.read_policy()?);
        Ok(out)
    }

    /// Re-reads a file whenever its modification time changes.
    pub async fn run(self, tx: mpsc::Sender<Update>) {
        let mut stamps = (modified(&self.endpoints), modified(&self.policy));
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = (modified(&self.endpoints), modified(&self.policy));
            let mut updates = Vec::new();
            if now.0 != stamps.0 {
                match self.read_endpoints() {
                    Ok(u) => updates.extend(u),
                    Err(e) => {
                        tracing::error!("reload failed, keeping the previous endpoints: {e:#}")
                    }
                }
            }
            if now.1 != stamps.1 {
                match self.read_policy() {
                    Ok(u) => updates.extend(u),
                    Err(e) => {
                        tracing::error!("reload failed, keeping the previous policy: {e:#}")
                    }
                }
            }
            stamps = now;
            if !updates.is_empty() {
                tracing::info!("reloading the endpoints and policy files");
            }
            for u in updates {
                if tx.send(u).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn modified(p: &Option<PathBuf>) -> Option<SystemTime> {
    p.as_deref()
        .and_then(|p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}
