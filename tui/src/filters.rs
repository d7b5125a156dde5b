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

use std::net::IpAddr;

use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches, error::ErrorKind};
use ipnet::IpNet;
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
    IpXlated,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Family(Family, Side),
    Plain(Plain),
    Not,
    AllNamespaces,
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
        help: "Flows in every namespace (the default; refuses --namespace)",
        kind: Kind::AllNamespaces,
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
        "ip-xlated",
        None,
        "IP|CIDR",
        "Flows whose source IP was translated to this address or CIDR",
        P::IpXlated,
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
                // Counted so that every occurrence keeps its position.
                arg.action(ArgAction::Count)
            } else {
                arg.action(ArgAction::Append).value_name(s.value)
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
            if s.value.is_empty() {
                if m.get_count(s.id) == 0 {
                    continue;
                }
                events.extend(indices.map(|i| (i, s, None)));
            } else {
                let values = m.get_many::<String>(s.id).into_iter().flatten();
                events.extend(indices.zip(values).map(|(i, v)| (i, s, Some(v.clone()))));
            }
        }
        events.sort_by_key(|(i, _, _)| *i);
        let all_ns = events
            .iter()
            .any(|(_, s, _)| matches!(s.kind, Kind::AllNamespaces));
        let some_ns = events
            .iter()
            .any(|(_, s, _)| matches!(s.kind, Kind::Family(Family::Namespace, _)));
        if all_ns && some_ns {
            return Err(clap::Error::raw(
                ErrorKind::ArgumentConflict,
                "-A/--all-namespaces cannot be used with --namespace, --from-namespace or --to-namespace\n",
            ));
        }
        let mut b = Builder::default();
        for (_, spec, value) in events {
            b.apply(spec, value.as_deref().unwrap_or(""))
                .map_err(|msg| clap::Error::raw(ErrorKind::ValueValidation, format!("{msg}\n")))?;
        }
        let out = b.finish();
        // Compile once here, so regex and selector errors are usage errors too.
        out.compile().map_err(|e| {
            clap::Error::raw(ErrorKind::ValueValidation, format!("invalid filter: {e}\n"))
        })?;
        Ok(out)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// Names and pod prefixes gathered for one side of one filter: namespaces
/// and bare pod names are combined at the end (`-n shop --pod cart` means
/// `shop/cart`, not "namespace shop or pod cart").
#[derive(Debug, Clone, Default, PartialEq)]
struct PodParts {
    namespaces: Vec<String>,
    pods: Vec<String>,
}

impl PodParts {
    /// Pods given: each bare pod name is qualified by every namespace given
    /// (`-n shop --pod cart` is `shop/cart`); pods already qualified stand as
    /// they are. No pods: the namespaces alone (`shop/`).
    fn resolve(&self) -> Vec<String> {
        if self.pods.is_empty() {
            return self.namespaces.iter().map(|ns| format!("{ns}/")).collect();
        }
        let mut out = Vec::new();
        for p in &self.pods {
            if p.contains('/') || self.namespaces.is_empty() {
                out.push(p.clone());
            } else {
                out.extend(self.namespaces.iter().map(|ns| format!("{ns}/{p}")));
            }
        }
        out
    }
}

/// A filter under construction, with its pod parts kept apart until the end.
#[derive(Debug, Clone, Default, PartialEq)]
struct Partial {
    filter: FlowFilter,
    source_pods: PodParts,
    destination_pods: PodParts,
}

impl Partial {
    fn finish(mut self) -> FlowFilter {
        self.filter.source_pod.extend(self.source_pods.resolve());
        self.filter
            .destination_pod
            .extend(self.destination_pods.resolve());
        self.filter
    }
}

/// Hubble's left/right tracker, one per list.
#[derive(Debug, Default)]
struct Tracker {
    left: Option<Partial>,
    right: Option<Partial>,
    raw: Vec<FlowFilter>,
}

impl Tracker {
    fn left(&mut self) -> &mut Partial {
        self.left.get_or_insert_with(Partial::default)
    }
    fn right(&mut self) -> &mut Partial {
        self.right.get_or_insert_with(Partial::default)
    }

    fn finish(self) -> Vec<FlowFilter> {
        let mut out = Vec::new();
        match (self.left, self.right) {
            (Some(l), Some(r)) if l == r => out.push(l.finish()),
            (l, r) => out.extend(l.into_iter().chain(r).map(Partial::finish)),
        }
        out.extend(self.raw);
        out
    }
}

#[derive(Debug, Default)]
struct Builder {
    allow: Tracker,
    deny: Tracker,
    negate_next: bool,
}

/// Applies `f` to the source or destination half of a filter.
fn side_update(p: &mut Partial, source: bool, family: Family, value: &Value) {
    let f = &mut p.filter;
    match (family, value) {
        (F::Ip, Value::Str(v)) => {
            pick(source, &mut f.source_ip, &mut f.destination_ip).push(v.clone())
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
        (F::Pod, Value::Str(v)) => {
            let parts = if source {
                &mut p.source_pods
            } else {
                &mut p.destination_pods
            };
            parts.pods.push(v.clone());
        }
        (F::Namespace, Value::Str(v)) => {
            let parts = if source {
                &mut p.source_pods
            } else {
                &mut p.destination_pods
            };
            parts.namespaces.push(v.clone());
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
                self.negate_next = true;
                return Ok(());
            }
            Kind::AllNamespaces => return Ok(()),
            Kind::Allowlist | Kind::Denylist => {
                let f: FlowFilter = serde_json::from_str(value)
                    .map_err(|e| format!("{flag}: {value:?} is not a FlowFilter in JSON: {e}"))?;
                let list = if matches!(spec.kind, Kind::Allowlist) {
                    &mut self.allow
                } else {
                    &mut self.deny
                };
                list.raw.push(f);
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
        match spec.kind {
            Kind::Family(family, side) => {
                let v = parse_family(&flag, family, value)?;
                match side {
                    Side::From => {
                        side_update(t.left(), true, family, &v);
                        side_update(t.right(), true, family, &v);
                    }
                    Side::To => {
                        side_update(t.left(), false, family, &v);
                        side_update(t.right(), false, family, &v);
                    }
                    Side::Either => {
                        side_update(t.left(), true, family, &v);
                        side_update(t.right(), false, family, &v);
                    }
                }
            }
            Kind::Plain(p) => {
                let update = parse_plain(&flag, p, value)?;
                update(&mut t.left().filter);
                update(&mut t.right().filter);
            }
            _ => unreachable!(),
        }
        Ok(())
    }

    fn finish(self) -> FilterArgs {
        FilterArgs {
            allowlist: self.allow.finish(),
            denylist: self.deny.finish(),
        }
    }
}

fn parse_family(flag: &str, family: Family, value: &str) -> Result<Value, String> {
    let v = value.trim();
    match family {
        F::Ip => {
            if v.parse::<IpAddr>().is_err() && v.parse::<IpNet>().is_err() {
                return Err(format!(
                    "{flag}: {value:?} is not an IP address or CIDR (e.g. 10.0.0.1, 10.0.0.0/8, fd00::/64)"
                ));
            }
            Ok(Value::Str(v.to_owned()))
        }
        F::Port => match v.parse::<u16>() {
            Ok(_) => Ok(Value::Str(v.to_owned())),
            Err(_) => Err(format!("{flag}: {value:?} is not a port number (0-65535)")),
        },
        F::Identity => v
            .parse::<u32>()
            .map(Value::Id)
            .map_err(|_| format!("{flag}: {value:?} is not a numeric identity")),
        F::Workload => {
            let (kind, name) = match v.split_once('/') {
                Some((k, n)) => (k, n),
                None => ("", v),
            };
            if name.is_empty() {
                return Err(format!(
                    "{flag}: {value:?} has no workload name (use NAME or KIND/NAME)"
                ));
            }
            Ok(Value::Workload(Workload {
                name: name.to_owned(),
                kind: kind.to_owned(),
            }))
        }
        F::Namespace if v.is_empty() || v.contains('/') => {
            Err(format!("{flag}: {value:?} is not a namespace name"))
        }
        F::Pod | F::Namespace | F::Fqdn | F::Label | F::Service | F::Cluster => {
            if v.is_empty() {
                return Err(format!("{flag}: the value is empty"));
            }
            Ok(Value::Str(v.to_owned()))
        }
    }
}

type Update = Box<dyn Fn(&mut FlowFilter)>;

fn choices<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

fn parse_plain(flag: &str, p: Plain, value: &str) -> Result<Update, String> {
    let v = value.trim().to_owned();
    let u: Update = match p {
        P::Verdict => {
            let verdict = Verdict::from_str_name(&v.to_ascii_uppercase())
                .filter(|x| *x != Verdict::Unknown)
                .ok_or_else(|| {
                    format!(
                        "{flag}: {value:?} is not a verdict; valid: {}",
                        choices(VERDICTS.iter().map(|v| v.as_str_name()))
                    )
                })?;
            Box::new(move |f| f.verdict.push(verdict as i32))
        }
        P::DropReasonDesc => {
            let r = DropReason::from_str_name(&v.to_ascii_uppercase()).ok_or_else(|| {
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
        P::Protocol => {
            const VALID: &[&str] = &[
                "tcp", "udp", "sctp", "icmp", "icmpv4", "icmpv6", "vrrp", "igmp", "dns", "http",
                "kafka",
            ];
            let lower = v.to_ascii_lowercase();
            if !VALID.contains(&lower.as_str()) {
                return Err(format!(
                    "{flag}: {value:?} is not a protocol; valid: {}",
                    VALID.join(", ")
                ));
            }
            Box::new(move |f| f.protocol.push(lower.clone()))
        }
        P::HttpStatus => {
            let ok = match v.strip_suffix('+') {
                Some(prefix) => {
                    !prefix.is_empty()
                        && prefix.len() < 3
                        && prefix.bytes().all(|b| b.is_ascii_digit())
                }
                None => v.len() == 3 && v.parse::<u16>().is_ok_and(|c| (100..600).contains(&c)),
            };
            if !ok {
                return Err(format!(
                    "{flag}: {value:?} is not a status code (100-599) or a prefix like 5+ or 40+"
                ));
            }
            Box::new(move |f| f.http_status_code.push(v.clone()))
        }
        P::HttpMethod => {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(format!(
                    "{flag}: {value:?} is not an HTTP method (GET, POST, ...)"
                ));
            }
            let m = v.to_ascii_uppercase();
            Box::new(move |f| f.http_method.push(m.clone()))
        }
        P::HttpPath => Box::new(move |f| f.http_path.push(v.clone())),
        P::HttpUrl => Box::new(move |f| f.http_url.push(v.clone())),
        P::HttpHeader => {
            let Some((k, val)) = v.split_once(':') else {
                return Err(format!("{flag}: {value:?} is not KEY:VALUE"));
            };
            let h = HttpHeader {
                key: k.trim().to_owned(),
                value: val.trim().to_owned(),
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
            let iface = match v.parse::<u32>() {
                Ok(index) => NetworkInterface {
                    index,
                    name: String::new(),
                },
                Err(_) => NetworkInterface {
                    index: 0,
                    name: v.clone(),
                },
            };
            Box::new(move |f| f.interface.push(iface.clone()))
        }
        P::Uuid => Box::new(move |f| f.uuid.push(v.clone())),
        P::TraceId => Box::new(move |f| f.trace_id.push(v.clone())),
        P::Ipv4 => Box::new(|f| f.ip_version.push(IpVersion::IPv4 as i32)),
        P::Ipv6 => Box::new(|f| f.ip_version.push(IpVersion::IPv6 as i32)),
        P::IpXlated => {
            if v.parse::<IpAddr>().is_err() && v.parse::<IpNet>().is_err() {
                return Err(format!("{flag}: {value:?} is not an IP address or CIDR"));
            }
            Box::new(move |f| f.source_ip_xlated.push(v.clone()))
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
    let r#type = names::event_type_number(ty).or_else(|| ty.parse().ok())?;
    let sub_type = match sub {
        None => None,
        Some(s) => Some(match s.parse::<i32>() {
            Ok(n) => n,
            Err(_) if r#type == names::EVENT_TRACE => names::TRACE_POINTS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(s))
                .map(|&(_, v)| v)?,
            Err(_) => return None,
        }),
    };
    Some(EventTypeFilter {
        r#type,
        match_sub_type: sub_type.is_some(),
        sub_type: sub_type.unwrap_or(0),
    })
}

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
            let json = serde_json::to_string(filter).unwrap_or_default();
            out.push_str(&format!("    - '{}'\n", json.replace('\'', "''")));
        }
    }
    out
}

#[cfg(test)]
mod tests;
