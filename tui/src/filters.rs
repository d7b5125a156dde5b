//! `webb observe`'s filter flags, with Hubble's names and meaning, turned
//! into the request's allowlist and denylist.
//!
//! Hubble's rules, which users' fingers know:
//! - `--from-X` constrains the source and `--to-X` the destination of every
//!   filter built so far and after.
//! - A bare `--X` (`--pod`, `--ip`, `--port`, ...) means "either side": the
//!   flags build two filters, one with X as the source and one with X as the
//!   destination, OR-ed.
//! - `--not` moves the next filter flag into the denylist.
//! - Repeating a flag ORs its values.
//!
//! The flags are walked in command-line order (that is what makes `--not`
//! apply to the *next* flag), so this is a hand-written [`clap::Args`].
//! Every value is checked here, so a bad value is a usage error (exit 2)
//! before any connection is made.

use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches, error::ErrorKind};
use webb_proto::{
    filter::FlowFilters,
    flow::{
        DropReason, EventTypeFilter, FlowFilter, HttpHeader, IpVersion, NetworkInterface, TcpFlags,
        TrafficDirection, Verdict, Workload,
    },
    names,
};

/// Which side(s) of a flow a flag constrains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// `--from-X`: the source, in every filter.
    From,
    /// `--to-X`: the destination, in every filter.
    To,
    /// `--X`: source in the left filter, destination in the right one.
    Either,
}

/// The endpoint-related filter families; each has `--X`, `--from-X`, `--to-X`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Ip,
    Pod,
    Namespace,
    /// `-A`, `--from-all-namespaces`, `--to-all-namespaces`.
    AllNamespaces,
    Fqdn,
    Label,
    Port,
    Service,
    Workload,
    Identity,
    Cluster,
}

/// Flow-wide filters (no side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plain {
    Verdict,
    DropReasonDesc,
    Type,
    Protocol,
    HttpStatus,
    HttpMethod,
    HttpPath,
    HttpUrl,
    HttpHeader,
    DnsQuery,
    TcpFlags,
    TrafficDirection,
    NodeName,
    NodeLabel,
    Interface,
    Uuid,
    TraceId,
    Ipv4,
    Ipv6,
    IpVersion,
    SnatIp,
    CelExpression,
    Encrypted,
    Unencrypted,
    IpTraceId,
    TlsSni,
    TlsVersion,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Family(Family, Side),
    Plain(Plain),
    Not,
    Allowlist,
    Denylist,
}

struct Spec {
    id: &'static str,
    short: Option<char>,
    value: &'static str,
    help: &'static str,
    kind: Kind,
}

const fn family(
    id: &'static str,
    short: Option<char>,
    value: &'static str,
    help: &'static str,
    f: Family,
    side: Side,
) -> Spec {
    Spec {
        id,
        short,
        value,
        help,
        kind: Kind::Family(f, side),
    }
}

const fn plain(
    id: &'static str,
    short: Option<char>,
    value: &'static str,
    help: &'static str,
    p: Plain,
) -> Spec {
    Spec {
        id,
        short,
        value,
        help,
        kind: Kind::Plain(p),
    }
}

use Family as F;
use Plain as P;
use Side::{Either, From, To};

/// Every filter flag, in `--help` order.
const SPECS: &[Spec] = &[
    Spec {
        id: "not",
        short: None,
        value: "",
        help: "Reverse the next filter: the flag after it goes to the denylist",
        kind: Kind::Not,
    },
    plain(
        "verdict",
        None,
        "VERDICT",
        "Flows with this verdict (FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR, TRACED, TRANSLATED)",
        P::Verdict,
    ),
    plain(
        "drop-reason-desc",
        None,
        "REASON",
        "Dropped flows with this drop reason (e.g. POLICY_DENIED)",
        P::DropReasonDesc,
    ),
    plain(
        "type",
        Some('t'),
        "TYPE[:SUBTYPE]",
        "Flows of this event type (drop, trace, l7, policy-verdict, capture, trace-sock, agent, debug; trace:to-endpoint ...)",
        P::Type,
    ),
    plain(
        "protocol",
        None,
        "PROTO",
        "Flows of this L4 or L7 protocol (tcp, udp, sctp, icmp, icmpv4, icmpv6, dns, http, ...)",
        P::Protocol,
    ),
    Spec {
        id: "all-namespaces",
        short: Some('A'),
        value: "",
        help: "Flows from or to a pod in any namespace",
        kind: Kind::Family(F::AllNamespaces, Either),
    },
    Spec {
        id: "from-all-namespaces",
        short: None,
        value: "",
        help: "Flows from a pod in any namespace",
        kind: Kind::Family(F::AllNamespaces, From),
    },
    Spec {
        id: "to-all-namespaces",
        short: None,
        value: "",
        help: "Flows to a pod in any namespace",
        kind: Kind::Family(F::AllNamespaces, To),
    },
    family(
        "namespace",
        Some('n'),
        "NS",
        "Flows from or to pods in this namespace",
        F::Namespace,
        Either,
    ),
    family(
        "from-namespace",
        None,
        "NS",
        "Flows from pods in this namespace",
        F::Namespace,
        From,
    ),
    family(
        "to-namespace",
        None,
        "NS",
        "Flows to pods in this namespace",
        F::Namespace,
        To,
    ),
    family(
        "pod",
        None,
        "[NS/]POD",
        "Flows from or to this pod name prefix",
        F::Pod,
        Either,
    ),
    family(
        "from-pod",
        None,
        "[NS/]POD",
        "Flows from this pod name prefix",
        F::Pod,
        From,
    ),
    family(
        "to-pod",
        None,
        "[NS/]POD",
        "Flows to this pod name prefix",
        F::Pod,
        To,
    ),
    family(
        "workload",
        None,
        "[KIND/]NAME",
        "Flows from or to this workload",
        F::Workload,
        Either,
    ),
    family(
        "from-workload",
        None,
        "[KIND/]NAME",
        "Flows from this workload",
        F::Workload,
        From,
    ),
    family(
        "to-workload",
        None,
        "[KIND/]NAME",
        "Flows to this workload",
        F::Workload,
        To,
    ),
    family(
        "label",
        Some('l'),
        "SELECTOR",
        "Flows from or to endpoints matching this label selector (k8s:app=x, 'app in (a,b)')",
        F::Label,
        Either,
    ),
    family(
        "from-label",
        None,
        "SELECTOR",
        "Flows from endpoints matching this label selector",
        F::Label,
        From,
    ),
    family(
        "to-label",
        None,
        "SELECTOR",
        "Flows to endpoints matching this label selector",
        F::Label,
        To,
    ),
    family(
        "ip",
        None,
        "IP|CIDR",
        "Flows from or to this IP address or CIDR",
        F::Ip,
        Either,
    ),
    family(
        "from-ip",
        None,
        "IP|CIDR",
        "Flows from this IP address or CIDR",
        F::Ip,
        From,
    ),
    family(
        "to-ip",
        None,
        "IP|CIDR",
        "Flows to this IP address or CIDR",
        F::Ip,
        To,
    ),
    plain(
        "snat-ip",
        None,
        "IP|CIDR",
        "Flows whose source IP was SNATed to this address or CIDR",
        P::SnatIp,
    ),
    family(
        "port",
        None,
        "PORT",
        "Flows from or to this L4 port",
        F::Port,
        Either,
    ),
    family(
        "from-port",
        None,
        "PORT",
        "Flows from this L4 port",
        F::Port,
        From,
    ),
    family(
        "to-port",
        None,
        "PORT",
        "Flows to this L4 port",
        F::Port,
        To,
    ),
    family(
        "fqdn",
        None,
        "NAME",
        "Flows from or to this DNS name ('*' wildcards)",
        F::Fqdn,
        Either,
    ),
    family(
        "from-fqdn",
        None,
        "NAME",
        "Flows from this DNS name ('*' wildcards)",
        F::Fqdn,
        From,
    ),
    family(
        "to-fqdn",
        None,
        "NAME",
        "Flows to this DNS name ('*' wildcards)",
        F::Fqdn,
        To,
    ),
    family(
        "service",
        None,
        "[NS/]SVC",
        "Flows from or to this service name prefix",
        F::Service,
        Either,
    ),
    family(
        "from-service",
        None,
        "[NS/]SVC",
        "Flows from this service name prefix",
        F::Service,
        From,
    ),
    family(
        "to-service",
        None,
        "[NS/]SVC",
        "Flows to this service name prefix",
        F::Service,
        To,
    ),
    family(
        "identity",
        None,
        "ID",
        "Flows from or to this security identity",
        F::Identity,
        Either,
    ),
    family(
        "from-identity",
        None,
        "ID",
        "Flows from this security identity",
        F::Identity,
        From,
    ),
    family(
        "to-identity",
        None,
        "ID",
        "Flows to this security identity",
        F::Identity,
        To,
    ),
    family(
        "cluster",
        None,
        "NAME",
        "Flows from or to this cluster",
        F::Cluster,
        Either,
    ),
    family(
        "from-cluster",
        None,
        "NAME",
        "Flows from this cluster",
        F::Cluster,
        From,
    ),
    family(
        "to-cluster",
        None,
        "NAME",
        "Flows to this cluster",
        F::Cluster,
        To,
    ),
    plain(
        "http-status",
        None,
        "CODE",
        "HTTP responses with this status code or prefix (404, 5+, 40+)",
        P::HttpStatus,
    ),
    plain(
        "http-method",
        None,
        "METHOD",
        "HTTP flows with this method (GET, POST, ...)",
        P::HttpMethod,
    ),
    plain(
        "http-path",
        None,
        "REGEX",
        "HTTP flows whose path matches this regular expression",
        P::HttpPath,
    ),
    plain(
        "http-url",
        None,
        "REGEX",
        "HTTP flows whose URL matches this regular expression",
        P::HttpUrl,
    ),
    plain(
        "http-header",
        None,
        "KEY:VALUE",
        "HTTP flows carrying this header",
        P::HttpHeader,
    ),
    plain(
        "dns-query",
        None,
        "REGEX",
        "DNS flows whose query matches this regular expression",
        P::DnsQuery,
    ),
    plain(
        "tcp-flags",
        None,
        "FLAGS",
        "TCP flows with these flags set (SYN, SYN,ACK, FIN, RST, PSH, URG, ECE, CWR, NS)",
        P::TcpFlags,
    ),
    plain(
        "traffic-direction",
        None,
        "DIR",
        "Flows in this direction (ingress, egress)",
        P::TrafficDirection,
    ),
    plain(
        "node-name",
        None,
        "NAME",
        "Flows observed on this node ('*' wildcards, cluster/node)",
        P::NodeName,
    ),
    plain(
        "node-label",
        None,
        "SELECTOR",
        "Flows observed on nodes matching this label selector",
        P::NodeLabel,
    ),
    plain(
        "interface",
        None,
        "NAME|INDEX",
        "Flows seen on this network interface",
        P::Interface,
    ),
    plain("uuid", None, "UUID", "The flow with this UUID", P::Uuid),
    plain(
        "trace-id",
        None,
        "ID",
        "Flows with this trace ID",
        P::TraceId,
    ),
    Spec {
        id: "ipv4",
        short: Some('4'),
        value: "",
        help: "IPv4 flows only",
        kind: Kind::Plain(P::Ipv4),
    },
    Spec {
        id: "ipv6",
        short: Some('6'),
        value: "",
        help: "IPv6 flows only",
        kind: Kind::Plain(P::Ipv6),
    },
    plain(
        "ip-version",
        None,
        "VERSION",
        "Flows of this IP version: v4, v6, or none (non-IP flows such as ARP)",
        P::IpVersion,
    ),
    plain(
        "cel-expression",
        None,
        "EXPR",
        "Flows for which this CEL expression over _flow is true (e.g. '_flow.verdict == Verdict.DROPPED')",
        P::CelExpression,
    ),
    Spec {
        id: "encrypted",
        short: None,
        value: "",
        help: "Encrypted flows only",
        kind: Kind::Plain(P::Encrypted),
    },
    Spec {
        id: "unencrypted",
        short: None,
        value: "",
        help: "Unencrypted flows only",
        kind: Kind::Plain(P::Unencrypted),
    },
    plain(
        "tls-sni",
        None,
        "NAME",
        "TLS connections whose ClientHello asks for this server name ('*' wildcards; webb)",
        P::TlsSni,
    ),
    plain(
        "tls-version",
        None,
        "VERSION",
        "TLS connections whose ClientHello offers at most this version (1.2, 1.3; webb)",
        P::TlsVersion,
    ),
    plain(
        "ip-trace-id",
        None,
        "ID",
        "Flows carrying this IP trace ID",
        P::IpTraceId,
    ),
    Spec {
        id: "allowlist",
        short: None,
        value: "JSON",
        help: "A raw FlowFilter in JSON added to the allowlist (OR-ed with the other filters)",
        kind: Kind::Allowlist,
    },
    Spec {
        id: "denylist",
        short: None,
        value: "JSON",
        help: "A raw FlowFilter in JSON added to the denylist",
        kind: Kind::Denylist,
    },
];

/// The filters of one `webb observe`: what goes into the request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterArgs {
    pub allowlist: Vec<FlowFilter>,
    pub denylist: Vec<FlowFilter>,
}

impl FilterArgs {
    /// The compiled engine, the same one the agent and relay run.
    pub fn compile(&self) -> Result<FlowFilters, webb_proto::filter::FilterError> {
        FlowFilters::compile(&self.allowlist, &self.denylist)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.allowlist.is_empty() && self.denylist.is_empty()
    }
}

impl clap::Args for FilterArgs {
    fn augment_args(cmd: Command) -> Command {
        let mut cmd = cmd;
        for s in SPECS {
            let mut arg = Arg::new(s.id)
                .long(s.id)
                .help(s.help)
                .help_heading("Filters");
            if let Some(c) = s.short {
                arg = arg.short(c);
            }
            arg = if s.value.is_empty() {
                // Appended (an empty value each time) so that every
                // occurrence keeps its position; a count keeps only the last.
                // As Hubble's (pflag's NoOptDefVal), `--flag=VALUE` is taken
                // too, and its value ignored: `--encrypted=false` is
                // `--encrypted`.
                arg.num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("")
                    .action(ArgAction::Append)
            } else {
                // A value may start with `-`, as pflag takes any next word.
                arg.action(ArgAction::Append)
                    .value_name(s.value)
                    .allow_hyphen_values(true)
            };
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for FilterArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        // Every occurrence of every filter flag, in command-line order.
        let mut events: Vec<(usize, &Spec, Option<String>)> = Vec::new();
        for s in SPECS {
            let Some(indices) = m.indices_of(s.id) else {
                continue;
            };
            let values = m.get_many::<String>(s.id).into_iter().flatten();
            events.extend(indices.zip(values).map(|(i, v)| (i, s, Some(v.clone()))));
        }
        events.sort_by_key(|(i, _, _)| *i);
        let mut b = Builder::default();
        for (_, spec, value) in events {
            b.apply(spec, value.as_deref().unwrap_or(""))
                .map_err(|msg| clap::Error::raw(ErrorKind::ValueValidation, format!("{msg}\n")))?;
        }
        if b.negate_next {
            return Err(clap::Error::raw(
                ErrorKind::ValueValidation,
                "trailing --not found in the arguments\n",
            ));
        }
        // Values are compiled (IPs, ports, patterns, selectors, CEL) when
        // the command runs, after --print-raw-filters, as Hubble does.
        Ok(b.finish())
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// One list's filters under construction, as Hubble's CLI builds them: a
/// `left` and a `right` filter (OR-ed; one when they end up equal), the
/// namespaces given, applied to the pods and services at the end, and the
/// flags used so far (some cannot be combined).
#[derive(Debug, Default)]
struct Tracker {
    left: Option<FlowFilter>,
    right: Option<FlowFilter>,
    ns: Vec<String>,
    src_ns: Vec<String>,
    dst_ns: Vec<String>,
    changed: Vec<&'static str>,
    /// `--allowlist`/`--denylist` filters, added after the built ones.
    raw: Vec<FlowFilter>,
}

/// Flags of which at most one of each group may be given (per list), as
/// Hubble refuses them.
const CONFLICTS: &[&[&str]] = &[
    &[
        "from-fqdn",
        "from-ip",
        "ip",
        "fqdn",
        "from-namespace",
        "namespace",
        "from-all-namespaces",
        "all-namespaces",
    ],
    &["from-fqdn", "from-ip", "ip", "fqdn", "from-pod", "pod"],
    &[
        "to-fqdn",
        "to-ip",
        "ip",
        "fqdn",
        "to-namespace",
        "namespace",
        "to-all-namespaces",
        "all-namespaces",
    ],
    &["to-fqdn", "to-ip", "ip", "fqdn", "to-pod", "pod"],
    &["to-pod", "namespace", "all-namespaces"],
    &["from-pod", "namespace", "all-namespaces"],
    &["to-service", "namespace", "all-namespaces"],
    &["from-service", "namespace", "all-namespaces"],
    &["label", "from-label"],
    &["label", "to-label"],
    &["service", "from-service"],
    &["service", "to-service"],
    &["port", "to-port"],
    &["port", "from-port"],
    &["identity", "to-identity"],
    &["identity", "from-identity"],
    &["workload", "to-workload"],
    &["workload", "from-workload"],
    &["encrypted", "unencrypted"],
];

impl Tracker {
    fn apply(&mut self, update: &dyn Fn(&mut FlowFilter)) {
        update(self.left.get_or_insert_with(FlowFilter::default));
        update(self.right.get_or_insert_with(FlowFilter::default));
    }

    fn apply_left(&mut self, update: &dyn Fn(&mut FlowFilter)) {
        update(self.left.get_or_insert_with(FlowFilter::default));
    }

    fn apply_right(&mut self, update: &dyn Fn(&mut FlowFilter)) {
        update(self.right.get_or_insert_with(FlowFilter::default));
    }

    /// Records a flag's use and refuses it beside one it conflicts with.
    fn track(&mut self, flag: &'static str) -> Result<(), String> {
        if !self.changed.contains(&flag) {
            self.changed.push(flag);
        }
        for group in CONFLICTS {
            for a in group.iter().filter(|a| self.changed.contains(a)) {
                if let Some(b) = group.iter().find(|b| *b != a && self.changed.contains(b)) {
                    return Err(format!("filters --{a} and --{b} cannot be combined"));
                }
            }
        }
        Ok(())
    }

    /// A pod or service named in another namespace than the one given.
    fn check_namespaces(&self) -> Result<(), String> {
        fn conflicts(nss: &[String], names: &[String]) -> Result<(), String> {
            for ns in nss {
                for name in names {
                    let nn = namespace_of(name);
                    if !nn.is_empty() && nn != ns {
                        return Err(format!(
                            "namespace conflict: {ns:?} does not contain {name:?}"
                        ));
                    }
                }
            }
            Ok(())
        }
        fn inconsistent(pods: &[String], services: &[String]) -> Result<(), String> {
            for pod in pods {
                let pod_ns = namespace_of(pod);
                if pod_ns.is_empty() {
                    continue;
                }
                if let Some(svc) = services.iter().find(|s| namespace_of(s) != pod_ns) {
                    return Err(format!(
                        "namespace of service {svc:?} conflict with pod {pod_ns:?}"
                    ));
                }
            }
            Ok(())
        }
        for f in [&self.left, &self.right].into_iter().flatten() {
            conflicts(&self.ns, &f.source_pod)?;
            conflicts(&self.ns, &f.source_service)?;
            conflicts(&self.ns, &f.destination_pod)?;
            conflicts(&self.ns, &f.destination_service)?;
            conflicts(&self.src_ns, &f.source_pod)?;
            conflicts(&self.src_ns, &f.source_service)?;
            conflicts(&self.dst_ns, &f.destination_pod)?;
            conflicts(&self.dst_ns, &f.destination_service)?;
            inconsistent(&f.source_pod, &f.source_service)?;
            inconsistent(&f.destination_pod, &f.destination_service)?;
        }
        Ok(())
    }

    fn finish(self) -> Vec<FlowFilter> {
        let mut out = Vec::new();
        let built = self.left.is_some()
            || self.right.is_some()
            || !self.ns.is_empty()
            || !self.src_ns.is_empty()
            || !self.dst_ns.is_empty();
        if built {
            let mut left = self.left.unwrap_or_default();
            let mut right = self.right.unwrap_or_default();
            if !self.dst_ns.is_empty() {
                with_namespaces(&self.dst_ns, &mut left, false);
                with_namespaces(&self.dst_ns, &mut right, false);
            }
            if !self.src_ns.is_empty() {
                with_namespaces(&self.src_ns, &mut left, true);
                with_namespaces(&self.src_ns, &mut right, true);
            }
            if !self.ns.is_empty() {
                with_namespaces(&self.ns, &mut left, true);
                with_namespaces(&self.ns, &mut right, false);
            }
            out.push(left.clone());
            if left != right {
                out.push(right);
            }
        }
        out.extend(self.raw);
        out
    }
}

fn namespace_of(name: &str) -> &str {
    name.split_once('/').map_or("", |(ns, _)| ns)
}

/// The namespaces applied to one side's pods and services: a name without
/// a namespace gets each; no pod and no service means the namespaces alone
/// (`shop/`; `-A` is the namespace "", so `/`: any pod).
fn with_namespaces(nss: &[String], f: &mut FlowFilter, source: bool) {
    let (pods, services) = if source {
        (&mut f.source_pod, &mut f.source_service)
    } else {
        (&mut f.destination_pod, &mut f.destination_service)
    };
    if pods.is_empty() && services.is_empty() {
        *pods = vec![String::new()];
    }
    for list in [pods, services] {
        if list.is_empty() {
            continue;
        }
        let mut out = Vec::new();
        for name in list.iter() {
            if name.contains('/') {
                out.push(name.clone());
            } else {
                out.extend(nss.iter().map(|ns| format!("{ns}/{name}")));
            }
        }
        *list = out;
    }
}

#[derive(Debug, Default)]
struct Builder {
    allow: Tracker,
    deny: Tracker,
    negate_next: bool,
}

/// Applies a family's value to the source or destination half of a filter.
fn side_update(f: &mut FlowFilter, source: bool, family: Family, value: &Value) {
    match (family, value) {
        (F::Ip, Value::Str(v)) => {
            pick(source, &mut f.source_ip, &mut f.destination_ip).push(v.clone())
        }
        (F::Pod, Value::Str(v)) => {
            pick(source, &mut f.source_pod, &mut f.destination_pod).push(v.clone())
        }
        (F::Fqdn, Value::Str(v)) => {
            pick(source, &mut f.source_fqdn, &mut f.destination_fqdn).push(v.clone())
        }
        (F::Label, Value::Str(v)) => {
            pick(source, &mut f.source_label, &mut f.destination_label).push(v.clone())
        }
        (F::Port, Value::Str(v)) => {
            pick(source, &mut f.source_port, &mut f.destination_port).push(v.clone())
        }
        (F::Service, Value::Str(v)) => {
            pick(source, &mut f.source_service, &mut f.destination_service).push(v.clone())
        }
        (F::Cluster, Value::Str(v)) => pick(
            source,
            &mut f.source_cluster_name,
            &mut f.destination_cluster_name,
        )
        .push(v.clone()),
        (F::Identity, Value::Id(id)) => {
            pick(source, &mut f.source_identity, &mut f.destination_identity).push(*id)
        }
        (F::Workload, Value::Workload(w)) => {
            pick(source, &mut f.source_workload, &mut f.destination_workload).push(w.clone())
        }
        _ => unreachable!("value kinds are checked by parse_family"),
    }
}

fn pick<'a, T>(source: bool, s: &'a mut Vec<T>, d: &'a mut Vec<T>) -> &'a mut Vec<T> {
    if source { s } else { d }
}

enum Value {
    Str(String),
    Id(u32),
    Workload(Workload),
}

impl Builder {
    fn apply(&mut self, spec: &Spec, value: &str) -> Result<(), String> {
        let flag = format!("--{}", spec.id);
        match spec.kind {
            Kind::Not => {
                if self.negate_next {
                    return Err("consecutive --not statements".into());
                }
                self.negate_next = true;
                return Ok(());
            }
            Kind::Allowlist | Kind::Denylist => {
                let filters = webb_proto::json::filters_strict(value)
                    .map_err(|e| format!("invalid {flag} flag: failed to decode '{value}': {e}"))?;
                let list = if matches!(spec.kind, Kind::Allowlist) {
                    &mut self.allow
                } else {
                    &mut self.deny
                };
                list.raw.extend(filters);
                return Ok(());
            }
            _ => {}
        }
        let negate = std::mem::take(&mut self.negate_next);
        let t = if negate {
            &mut self.deny
        } else {
            &mut self.allow
        };
        t.track(spec.id)?;
        match spec.kind {
            Kind::Family(F::Namespace, side) | Kind::Family(F::AllNamespaces, side) => {
                let ns = if matches!(spec.kind, Kind::Family(F::AllNamespaces, _)) {
                    String::new()
                } else {
                    value.to_owned()
                };
                match side {
                    Side::Either => t.ns.push(ns),
                    Side::From => t.src_ns.push(ns),
                    Side::To => t.dst_ns.push(ns),
                }
            }
            Kind::Family(family, side) => {
                let v = parse_family(&flag, family, value)?;
                match side {
                    Side::From => t.apply(&|f| side_update(f, true, family, &v)),
                    Side::To => t.apply(&|f| side_update(f, false, family, &v)),
                    Side::Either => {
                        t.apply_left(&|f| side_update(f, true, family, &v));
                        t.apply_right(&|f| side_update(f, false, family, &v));
                    }
                }
            }
            Kind::Plain(p) => {
                let update = parse_plain(&flag, p, value)?;
                t.apply(&*update);
            }
            _ => unreachable!(),
        }
        t.check_namespaces()
    }

    fn finish(self) -> FilterArgs {
        FilterArgs {
            allowlist: self.allow.finish(),
            denylist: self.deny.finish(),
        }
    }
}

fn parse_family(flag: &str, family: Family, value: &str) -> Result<Value, String> {
    // As given: Hubble trims nothing.
    let v = value;
    match family {
        // A number, or a reserved identity's name (`world`, `host`, ...).
        F::Identity => (0..=255)
            .find(|&i| names::reserved_identity_name(i) == Some(v))
            .or_else(|| go_uint32(v))
            .map(Value::Id)
            .ok_or_else(|| {
                format!(
                    "{flag}: {value:?} is not a security identity: a number or one of {}",
                    choices((0..=255).filter_map(names::reserved_identity_name))
                )
            }),
        // KIND/NAME, KIND/ (any workload of a kind) or NAME.
        // KIND/NAME, KIND/ (any workload of a kind) or NAME; empty is any
        // workload.
        F::Workload => {
            let (kind, name) = v.split_once('/').unwrap_or(("", v));
            Ok(Value::Workload(Workload {
                name: name.to_owned(),
                kind: kind.to_owned(),
            }))
        }
        F::Namespace | F::AllNamespaces => unreachable!("namespaces are kept apart"),
        // Checked when the filter is compiled, as Hubble checks them.
        F::Ip | F::Port | F::Pod | F::Fqdn | F::Label | F::Service | F::Cluster => {
            Ok(Value::Str(v.to_owned()))
        }
    }
}

/// Go's `strconv.ParseUint(s, 0, 32)`: decimal, or `0x`/`0o`/`0b`/`0`
/// prefixed, with `_` between digits when prefixed.
fn go_uint32(s: &str) -> Option<u32> {
    let lower = s.to_ascii_lowercase();
    let (digits, radix) = if let Some(d) = lower.strip_prefix("0x") {
        (d, 16)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (d, 8)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (d, 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8)
    } else {
        return lower
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| lower.parse().ok())
            .flatten();
    };
    let digits = digits.strip_prefix('_').unwrap_or(digits);
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    if !clean.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(&clean, radix).ok()
}

type Update = Box<dyn Fn(&mut FlowFilter)>;

fn choices<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

fn parse_plain(flag: &str, p: Plain, value: &str) -> Result<Update, String> {
    let v = value.to_owned();
    let u: Update = match p {
        P::Verdict => {
            // Hubble's names, in capitals (VERDICT_UNKNOWN too).
            let verdict = Verdict::from_str_name(&v).ok_or_else(|| {
                format!(
                    "{flag}: {value:?} is not a verdict; valid: {}",
                    choices(VERDICTS.iter().map(|v| v.as_str_name()))
                )
            })?;
            Box::new(move |f| f.verdict.push(verdict as i32))
        }
        P::DropReasonDesc => {
            let r = DropReason::from_str_name(&v).ok_or_else(|| {
                format!(
                    "{flag}: {value:?} is not a drop reason; valid names are DropReason's, e.g. POLICY_DENIED, POLICY_DENY, SOCKET_LOOKUP_FAILED, FIB_LOOKUP_FAILED"
                )
            })?;
            Box::new(move |f| f.drop_reason_desc.push(r as i32))
        }
        P::Type => {
            let filter = parse_event_type(&v).ok_or_else(|| {
                format!(
                    "{flag}: {value:?} is not an event type; valid: {} (trace may take a sub type: trace:{})",
                    choices(names::EVENT_TYPES.iter().map(|(n, _)| *n)),
                    choices(names::TRACE_POINTS.iter().map(|(n, _)| *n)),
                )
            })?;
            Box::new(move |f| f.event_type.push(filter))
        }
        // Checked when the filter is compiled, as Hubble checks them (so
        // --print-raw-filters prints them as given).
        P::Protocol => Box::new(move |f| f.protocol.push(v.clone())),
        P::HttpStatus => Box::new(move |f| f.http_status_code.push(v.clone())),
        // Any text, as Hubble takes it: the match ignores case.
        P::HttpMethod => Box::new(move |f| f.http_method.push(v.clone())),
        P::HttpPath => Box::new(move |f| f.http_path.push(v.clone())),
        P::HttpUrl => Box::new(move |f| f.http_url.push(v.clone())),
        P::HttpHeader => {
            let Some((k, val)) = value.split_once(':') else {
                return Err(format!("{flag}: {value:?} is not KEY:VALUE"));
            };
            let h = HttpHeader {
                key: k.to_owned(),
                value: val.to_owned(),
            };
            Box::new(move |f| f.http_header.push(h.clone()))
        }
        P::DnsQuery => Box::new(move |f| f.dns_query.push(v.clone())),
        P::TcpFlags => {
            let flags = parse_tcp_flags(&v).ok_or_else(|| {
                format!(
                    "{flag}: {value:?} is not a comma-separated list of TCP flags; valid: SYN, ACK, FIN, RST, PSH, URG, ECE, CWR, NS"
                )
            })?;
            Box::new(move |f| f.tcp_flags.push(flags))
        }
        P::TrafficDirection => {
            let d = match v.to_ascii_lowercase().as_str() {
                "ingress" => TrafficDirection::Ingress,
                "egress" => TrafficDirection::Egress,
                _ => {
                    return Err(format!(
                        "{flag}: {value:?} is not a traffic direction; valid: ingress, egress"
                    ));
                }
            };
            Box::new(move |f| f.traffic_direction.push(d as i32))
        }
        P::NodeName => Box::new(move |f| f.node_name.push(v.clone())),
        P::NodeLabel => Box::new(move |f| f.node_labels.push(v.clone())),
        P::Interface => {
            let iface = NetworkInterface {
                index: 0,
                name: v.clone(),
            };
            Box::new(move |f| f.interface.push(iface.clone()))
        }
        P::Uuid => Box::new(move |f| f.uuid.push(v.clone())),
        P::TraceId => Box::new(move |f| f.trace_id.push(v.clone())),
        P::Ipv4 => Box::new(|f| f.ip_version.push(IpVersion::IPv4 as i32)),
        P::Ipv6 => Box::new(|f| f.ip_version.push(IpVersion::IPv6 as i32)),
        P::SnatIp => Box::new(move |f| f.source_ip_xlated.push(v.clone())),
        // Hubble's spellings; anything else means flows without IP.
        P::IpVersion => {
            let version = match v.to_ascii_lowercase().as_str() {
                "4" | "v4" | "ipv4" | "ip4" => IpVersion::IPv4,
                "6" | "v6" | "ipv6" | "ip6" => IpVersion::IPv6,
                _ => IpVersion::IpNotUsed,
            };
            Box::new(move |f| f.ip_version.push(version as i32))
        }
        P::CelExpression => Box::new(move |f| {
            f.experimental
                .get_or_insert_with(Default::default)
                .cel_expression
                .push(v.clone())
        }),
        P::TlsSni => Box::new(move |f| f.webb_tls_sni.push(v.clone())),
        P::TlsVersion => Box::new(move |f| f.webb_tls_version.push(v.clone())),
        P::Encrypted => Box::new(|f| f.encrypted.push(true)),
        P::Unencrypted => Box::new(|f| f.encrypted.push(false)),
        P::IpTraceId => {
            let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
            let id = digits
                .then(|| v.parse::<u64>().ok())
                .flatten()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    format!("{flag}: {value:?} is not an IP trace ID (a number greater than 0)")
                })?;
            Box::new(move |f| f.ip_trace_id.push(id))
        }
    };
    Ok(u)
}

const VERDICTS: &[Verdict] = &[
    Verdict::Forwarded,
    Verdict::Dropped,
    Verdict::Audit,
    Verdict::Redirected,
    Verdict::Error,
    Verdict::Traced,
    Verdict::Translated,
];

/// `drop`, `trace`, `trace:to-endpoint`, `4`, `4:3`.
fn parse_event_type(v: &str) -> Option<EventTypeFilter> {
    let (ty, sub) = match v.split_once(':') {
        Some((t, s)) => (t, Some(s)),
        None => (v, None),
    };
    // Names as Hubble spells them (lower case), or numbers.
    let r#type = names::EVENT_TYPES
        .iter()
        .find(|(n, _)| *n == ty)
        .map(|&(_, v)| v)
        .or_else(|| ty.parse().ok())?;
    let named_sub = |s: &str| match r#type {
        names::EVENT_TRACE => names::TRACE_POINTS
            .iter()
            .find(|(n, _)| *n == s)
            .map(|&(_, v)| v),
        names::EVENT_AGENT => AGENT_SUB_TYPES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|&(_, v)| v),
        _ => None,
    };
    let sub_type = match sub {
        None => None,
        Some(s) => Some(named_sub(s).or_else(|| s.parse::<u32>().ok().map(|n| n as i32))?),
    };
    Some(EventTypeFilter {
        r#type,
        match_sub_type: sub_type.is_some(),
        sub_type: sub_type.unwrap_or(0),
    })
}

/// Agent event sub types by the names `--type agent:NAME` takes (Cilium's
/// agent notification numbers).
const AGENT_SUB_TYPES: &[(&str, i32)] = &[
    ("unspecified", 0),
    ("message", 1),
    ("agent-started", 2),
    ("endpoint-regenerate-success", 3),
    ("endpoint-regenerate-failure", 4),
    ("policy-updated", 5),
    ("policy-deleted", 6),
    ("endpoint-created", 7),
    ("endpoint-deleted", 8),
    ("ipcache-upserted", 9),
    ("ipcache-deleted", 10),
];

fn parse_tcp_flags(v: &str) -> Option<TcpFlags> {
    let mut f = TcpFlags::default();
    for name in v.split(',').map(str::trim) {
        let slot = match name.to_ascii_uppercase().as_str() {
            "SYN" => &mut f.syn,
            "ACK" => &mut f.ack,
            "FIN" => &mut f.fin,
            "RST" => &mut f.rst,
            "PSH" => &mut f.psh,
            "URG" => &mut f.urg,
            "ECE" => &mut f.ece,
            "CWR" => &mut f.cwr,
            "NS" => &mut f.ns,
            _ => return None,
        };
        *slot = true;
    }
    Some(f)
}

/// What `--print-raw-filters` prints: Hubble's YAML-like listing with one
/// JSON filter per item.
pub fn raw_listing(f: &FilterArgs) -> String {
    let mut out = String::new();
    for (name, list) in [("allowlist", &f.allowlist), ("denylist", &f.denylist)] {
        if list.is_empty() {
            continue;
        }
        out.push_str(name);
        out.push_str(":\n");
        for filter in list {
            let json = webb_proto::json::to_go_string(filter);
            out.push_str(&format!("    - '{}'\n", json.replace('\'', "''")));
        }
    }
    // Hubble marshals an empty listing as an empty YAML mapping.
    if out.is_empty() {
        out.push_str("{}\n");
    }
    out
}

#[cfg(test)]
mod tests;
