//! Command-line options of `webb-agent`.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::{ArgAction, Parser, ValueEnum};

/// webb-agent: observes a node's pod traffic with eBPF and serves it as
/// Hubble-compatible flows (the Observer API) on port 4244.
///
/// Needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (and CAP_SYS_ADMIN only to
/// mount tracefs when it is not mounted).
#[derive(Debug, Clone, Parser)]
#[command(name = "webb-agent", version, about, long_about)]
pub struct Args {
    /// Address to serve the Observer API on. Use 0.0.0.0:4244 so a relay on
    /// another host can connect.
    #[arg(long, default_value = "127.0.0.1:4244", env = "WEBB_AGENT_LISTEN")]
    pub listen: SocketAddr,
    /// Serve TLS with this certificate (PEM; needs --tls-key-file)
    #[arg(long, value_name = "FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// The key of --tls-cert-file (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<std::path::PathBuf>,
    /// Require client certificates signed by these CAs (mutual TLS)
    #[arg(
        long,
        value_name = "FILES",
        value_delimiter = ',',
        requires = "tls_cert_file"
    )]
    pub tls_client_ca_files: Vec<std::path::PathBuf>,

    /// Address peers and relays should dial, if not the listen address.
    #[arg(long)]
    pub advertise_address: Option<String>,

    /// This node's name in flows and in the Kubernetes API (default: the
    /// WEBB_NODE_NAME or NODE_NAME environment variable, then the host name).
    #[arg(long, env = "WEBB_NODE_NAME")]
    pub node_name: Option<String>,

    /// Learn pods, namespaces, nodes and NetworkPolicies from the Kubernetes
    /// API. auto: when running in a pod (a service account) or given
    /// --kubeconfig.
    #[arg(long, value_enum, default_value_t = KubernetesMode::Auto)]
    pub kubernetes: KubernetesMode,

    /// kubeconfig file for the Kubernetes API (outside a pod).
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub kube_context: Option<String>,

    /// Do not discover pod interfaces from the node's routes, neighbours
    /// and bridges (then only --interface and the endpoints file's are
    /// watched).
    #[arg(long)]
    pub no_interface_discovery: bool,

    /// Network interface to watch with TC ingress and egress programs,
    /// typically the host side of a pod's veth. Repeatable. Interfaces named
    /// in the endpoints file are watched too.
    #[arg(long = "interface", short = 'i', value_name = "IFACE")]
    pub interface: Vec<String>,

    /// cgroup v2 directory whose sockets the cgroup_skb programs watch (its
    /// sub-cgroups included); flows carry the socket's cgroup id. The
    /// programs are attached only where no watched interface covers the
    /// pods: a pod with a watched veth is reported by TC, and its cgroup is
    /// left alone.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Where the kubelet's pod cgroups are (the directory holding
    /// kubepods.slice or kubepods); default: under --cgroup, or one level
    /// below it. Sockets' flows are named with their pod from it, host
    /// network pods included.
    #[arg(long, value_name = "PATH")]
    pub kubelet_cgroup_root: Option<PathBuf>,

    /// YAML file naming the node's endpoints (pods); reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    pub endpoints: Option<PathBuf>,

    /// YAML file of Kubernetes NetworkPolicies to enforce; reloaded when it
    /// changes.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// enforce: drop what policy denies. audit: let it pass with verdict AUDIT.
    #[arg(long, value_enum, default_value_t = PolicyMode::Enforce)]
    pub policy_mode: PolicyMode,

    /// Number of recent flows kept for queries (Hubble's default is 4095).
    #[arg(long, default_value_t = 4095, value_parser = clap::value_parser!(u32).range(1..=16_777_215))]
    pub ring_capacity: u32,

    /// Keep every flow on disk in DIR as well (compressed, time-indexed
    /// segments), so `--since` reaches past the ring and across restarts.
    /// Off by default; one agent per directory.
    #[arg(long, value_name = "DIR")]
    pub flow_store: Option<PathBuf>,

    /// Most bytes the flow store keeps on disk (e.g. 2GiB, 500MiB); the
    /// oldest flows are removed first.
    #[arg(long, default_value = "2GiB", value_name = "SIZE")]
    pub flow_store_max_size: ByteSize,

    /// Flows older than this are removed from the flow store (e.g. 24h).
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub flow_store_max_age: HumanDuration,

    /// Export every flow (that passes --export-allowlist/--export-denylist)
    /// as a JSON line to this file, as Hubble's exporter does (`stdout` for
    /// standard output): what Fluent Bit, Vector or Promtail ship, and what
    /// `webb observe --input-file` reads back. Off by default.
    #[arg(long, value_name = "PATH")]
    pub export_file_path: Option<PathBuf>,

    /// Size in MB at which the export file is rotated.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub export_file_max_size_mb: u64,

    /// Rotated export files to keep (0: all).
    #[arg(long, default_value_t = 5)]
    pub export_file_max_backups: usize,

    /// Gzip rotated export files.
    #[arg(long)]
    pub export_file_compress: bool,

    /// Export only flows that match one of these JSON FlowFilters (as
    /// `webb observe --allowlist` takes them; several separated by commas).
    #[arg(long, value_name = "JSON")]
    pub export_allowlist: Option<String>,

    /// Do not export flows that match one of these JSON FlowFilters.
    #[arg(long, value_name = "JSON")]
    pub export_denylist: Option<String>,

    /// Export only these fields of each flow (e.g. `time,source,verdict`;
    /// commas or spaces between them).
    #[arg(long, value_name = "FIELDS")]
    pub export_fieldmask: Vec<String>,

    /// Hubble's dynamic flow logs: a YAML file of named exporters
    /// (`flowLogs:` with name, filePath, includeFilters, excludeFilters,
    /// fieldMask, end), applied as it changes, without a restart.
    #[arg(long, value_name = "FILE")]
    pub flowlogs_config_path: Option<PathBuf>,

    /// Maximum number of flows the kernel tracks at once (LRU).
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub flow_map_size: u32,

    /// Where packets are reported. `default`: once per point as Cilium
    /// reports them, where a pod's packet leaves the pod (from-endpoint) and
    /// where it is delivered (to-endpoint), with the cgroup programs adding
    /// the socket's cgroup to those reports and reporting only traffic that
    /// crosses no watched interface (host processes, host-network pods; as
    /// to-stack and from-stack); each DNS message and HTTP head once per
    /// node. `all`: every program reports every flow it sees, and L7 at
    /// every point (for debugging the datapath).
    #[arg(long, value_enum, default_value_t = TracePoints::Default)]
    pub trace_points: TracePoints,

    /// Report a busy flow again after this long (e.g. 10s, 500ms; 0 disables).
    #[arg(long, default_value = "10s")]
    pub flush_interval: HumanDuration,

    /// Size of the kernel's event ring in MiB (a power of two). The agent is
    /// woken early once 1 MiB is waiting, so a few MiB absorb long bursts.
    #[arg(long, default_value_t = 4, value_parser = ring_mib)]
    pub event_ring_mib: u32,

    /// How long the agent waits for kernel events before draining the ring
    /// anyway. The kernel never wakes the agent per event, only when the ring
    /// holds over 1 MiB; this bounds `follow` latency on a quiet node.
    #[arg(long, default_value = "50ms")]
    pub ring_poll_interval: HumanDuration,

    /// Do not attach to skb:kfree_skb (no kernel drop reasons).
    #[arg(long)]
    pub no_kernel_drops: bool,

    /// Other agents share this kernel (lab "nodes" in network namespaces on
    /// one machine): report a kernel drop only when it was headed for a
    /// local endpoint, or came from one and was not headed for a pod of
    /// another node, so each drop is reported once. Not for real nodes: a
    /// drop on the way to another node's pod would go unreported.
    #[arg(long)]
    pub shared_kernel: bool,

    /// Payload bytes the kernel copies from each DNS message and each TCP
    /// segment that starts an HTTP/1.x head, for L7 flows (0 turns L7 off;
    /// at most 4096). Heads longer than this are reported truncated.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(0..=4096))]
    pub l7_capture_bytes: u32,

    /// UDP and TCP ports whose traffic is DNS (comma-separated, at most 8).
    #[arg(long, value_delimiter = ',', default_value = "53", value_parser = dns_port)]
    pub dns_ports: Vec<u16>,

    /// Replace the values of URL query parameters in HTTP flows with
    /// HUBBLE_REDACTED (`--redact-http-urlquery=false` keeps them).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub redact_http_urlquery: bool,

    /// Replace the password in `user:password@` of absolute request URLs.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub redact_http_userinfo: bool,

    /// HTTP headers whose values are replaced (comma-separated, any case;
    /// an empty value redacts none).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "Authorization,Proxy-Authorization,Cookie,Set-Cookie"
    )]
    pub redact_http_headers_deny: Vec<String>,

    /// When given, only these HTTP headers keep their values; every other
    /// header's value is replaced.
    #[arg(long, value_delimiter = ',')]
    pub redact_http_headers_allow: Vec<String>,

    /// Prometheus metric handlers to enable, as Hubble's
    /// `hubble.metrics.enabled` takes them: `flow`, `drop`, `tcp`, `icmp`,
    /// `port-distribution`, `dns`, `http`, each with options after a colon
    /// (`flow:sourceContext=namespace;destinationContext=namespace`,
    /// `dns:query;ignoreAAAA`). Repeatable, or space-separated in one value.
    /// Enabling any starts the metrics server.
    #[arg(long = "metrics", value_name = "HANDLER", value_parser = metrics_handlers)]
    pub metrics: Vec<Vec<crate::metrics::options::Handler>>,

    /// Where to serve /metrics (OpenMetrics text). Given alone, serves the
    /// agent's own webb_* metrics and hubble_lost_events_total.
    #[arg(long, value_name = "[HOST]:PORT", value_parser = webb_proto::metrics_http::parse_listen)]
    pub metrics_listen: Option<SocketAddr>,

    /// Series one metric family may hold; label sets beyond it are counted
    /// in a series labelled `other` (and in webb_metrics_series_folded_total).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub metrics_max_series: u64,
}

/// Hubble's metrics port.
pub const DEFAULT_METRICS_PORT: u16 = 9965;

fn metrics_handlers(s: &str) -> Result<Vec<crate::metrics::options::Handler>, String> {
    crate::metrics::options::parse(s).map_err(|e| e.to_string())
}

fn dns_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{s:?} is not a port (1-65535)")),
    }
}

fn ring_mib(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of MiB"))?;
    if !(2..=256).contains(&n) || !n.is_power_of_two() {
        return Err(format!("{n} must be a power of two from 2 to 256"));
    }
    Ok(n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KubernetesMode {
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TracePoints {
    Default,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyMode {
    Enforce,
    Audit,
}

impl Args {
    /// Checks what clap cannot: the number of DNS ports.
    pub fn validate(&self) -> Result<(), String> {
        if self.dns_ports.len() > node_agent_ebpf::DNS_PORTS {
            return Err(format!(
                "--dns-ports: at most {} ports, got {}",
                node_agent_ebpf::DNS_PORTS,
                self.dns_ports.len()
            ));
        }
        Ok(())
    }

    /// The metric handlers asked for, and where to serve them (`None`: no
    /// metrics server).
    pub fn metrics(&self) -> Option<(Vec<crate::metrics::options::Handler>, SocketAddr)> {
        let handlers: Vec<_> = self.metrics.iter().flatten().cloned().collect();
        if handlers.is_empty() && self.metrics_listen.is_none() {
            return None;
        }
        let addr = self
            .metrics_listen
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], DEFAULT_METRICS_PORT)));
        Some((handlers, addr))
    }

    /// The exporter the `--export-*` flags ask for, if any; bad filters and
    /// field paths are errors that name the flag.
    pub fn export_options(&self) -> anyhow::Result<Option<crate::export::Options>> {
        use crate::export;
        let Some(path) = &self.export_file_path else {
            return Ok(None);
        };
        let list = |flag: &str, v: &Option<String>| {
            v.as_deref()
                .map_or(Ok(Vec::new()), |t| export::parse_filters(flag, t))
        };
        let allow = list("--export-allowlist", &self.export_allowlist)?;
        let deny = list("--export-denylist", &self.export_denylist)?;
        let filters = webb_proto::filter::FlowFilters::compile(&allow, &deny)
            .map_err(|e| anyhow::anyhow!("--export-allowlist/--export-denylist: {e}"))?;
        Ok(Some(export::Options {
            target: if path.as_os_str() == "stdout" {
                export::Target::Stdout
            } else {
                export::Target::File(path.clone())
            },
            max_size: self.export_file_max_size_mb.saturating_mul(1 << 20),
            max_backups: self.export_file_max_backups,
            compress: self.export_file_compress,
            filters,
            mask: export::parse_mask(&self.export_fieldmask)?,
        }))
    }

    /// The redaction the flags ask for.
    pub fn redaction(&self) -> crate::l7::http::Redaction {
        let set = |v: &[String]| {
            v.iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect::<std::collections::HashSet<_>>()
        };
        crate::l7::http::Redaction {
            url_query: self.redact_http_urlquery,
            userinfo: self.redact_http_userinfo,
            headers_deny: set(&self.redact_http_headers_deny),
            headers_allow: (!self.redact_http_headers_allow.is_empty())
                .then(|| set(&self.redact_http_headers_allow)),
        }
    }

    /// Whether to watch the Kubernetes API.
    pub fn kubernetes(&self) -> bool {
        match self.kubernetes {
            KubernetesMode::On => true,
            KubernetesMode::Off => false,
            KubernetesMode::Auto => {
                self.kubeconfig.is_some()
                    || self.kube_context.is_some()
                    || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
            }
        }
    }

    pub fn node_name(&self) -> String {
        if let Some(n) = self
            .node_name
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok())
            && !n.is_empty()
        {
            return n;
        }
        self.node_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "localhost".to_owned())
        })
    }
}

/// A duration flag in Go's syntax (`10s`, `500ms`, `2m`, `1h43m`, `0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        webb_proto::duration::parse(s)
            .map(Self)
            .ok_or_else(|| webb_proto::duration::error(s))
    }
}

/// A size flag: a number of bytes with an optional unit (`KiB`, `MiB`,
/// `GiB`, `TiB`, or `K`/`M`/`G`/`T` for the same; `KB`, `MB`, `GB` are
/// powers of ten).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size (e.g. 2GiB, 500MiB)"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => {
                return Err(format!(
                    "{s:?}: unknown unit {unit:?} (use KiB, MiB, GiB or TiB)"
                ));
            }
        };
        let v = n
            .checked_mul(mult)
            .ok_or_else(|| format!("{s:?} is too large"))?;
        if v < 1 << 20 {
            return Err(format!("{s:?} is too small: at least 1MiB"));
        }
        Ok(Self(v))
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn bad_values_are_rejected_with_the_flag_name() {
        for (argv, needle) in [
            (vec!["webb-agent", "--listen", "nope"], "--listen"),
            (
                vec!["webb-agent", "--ring-capacity", "0"],
                "--ring-capacity",
            ),
            (
                vec!["webb-agent", "--flow-store-max-size", "2 parsecs"],
                "--flow-store-max-size",
            ),
            (
                vec!["webb-agent", "--flow-store-max-size", "100"],
                "at least 1MiB",
            ),
            (
                vec!["webb-agent", "--flush-interval", "10parsecs"],
                "--flush-interval",
            ),
            (
                vec!["webb-agent", "--policy-mode", "maybe"],
                "--policy-mode",
            ),
            (
                vec!["webb-agent", "--l7-capture-bytes", "5000"],
                "--l7-capture-bytes",
            ),
            (vec!["webb-agent", "--dns-ports", "53,0"], "--dns-ports"),
            (vec!["webb-agent", "--metrics", "flows"], "--metrics"),
            (
                vec!["webb-agent", "--metrics-listen", "9965"],
                "--metrics-listen",
            ),
        ] {
            let err = Args::try_parse_from(&argv).unwrap_err().to_string();
            assert!(err.contains(needle), "{argv:?}: {err}");
        }
        let a = Args::try_parse_from(["webb-agent", "--flush-interval", "500ms"]).unwrap();
        assert_eq!(Duration::from(a.flush_interval), Duration::from_millis(500));
        assert_eq!(a.ring_capacity, 4095);
        assert_eq!(a.flow_store, None);
        assert_eq!(a.flow_store_max_size, ByteSize(2 << 30));
        assert_eq!(
            Duration::from(a.flow_store_max_age),
            Duration::from_secs(86_400)
        );
        assert_eq!(a.l7_capture_bytes, 512);
        assert_eq!(a.dns_ports, [53]);
        let r = a.redaction();
        assert!(r.url_query && r.userinfo && r.headers_deny.contains("cookie"));

        let a = Args::try_parse_from([
            "webb-agent",
            "--redact-http-urlquery=false",
            "--redact-http-headers-deny=",
            "--dns-ports=53,5353",
        ])
        .unwrap();
        let r = a.redaction();
        assert!(!r.url_query && r.headers_deny.is_empty());
        assert_eq!(a.dns_ports, [53, 5353]);

        assert!(a.metrics().is_none());
        let a = Args::try_parse_from(["webb-agent", "--metrics", "drop tcp", "--metrics", "flow"])
            .unwrap();
        let (handlers, addr) = a.metrics().unwrap();
        assert_eq!(handlers.len(), 3);
        assert_eq!(addr.to_string(), "0.0.0.0:9965");
        let a = Args::try_parse_from(["webb-agent", "--metrics-listen", ":9000"]).unwrap();
        assert_eq!(a.metrics().unwrap().1.to_string(), "0.0.0.0:9000");

        let nine = "1,2,3,4,5,6,7,8,9";
        let a = Args::try_parse_from(["webb-agent", "--dns-ports", nine]).unwrap();
        assert!(a.validate().unwrap_err().contains("at most 8"));
    }
}
