//! `--metrics`: which metric families to serve, and their context labels, in
//! the syntax of Hubble's `hubble.metrics.enabled`:
//! `flow:sourceContext=namespace;destinationContext=namespace`, `drop`,
//! `dns:query;ignoreAAAA`, `http`, `tcp`, `icmp`, `port-distribution`.
//! Several handlers may share one value, separated by spaces, as Hubble's
//! flag takes them.

/// One `--metrics` handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub kind: Kind,
    pub source: Option<Context>,
    pub destination: Option<Context>,
    /// `dns:query`: label DNS metrics with the query name.
    pub dns_query: bool,
    /// `dns:ignoreAAAA`: skip AAAA lookups.
    pub ignore_aaaa: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Flow,
    Drop,
    Tcp,
    Icmp,
    PortDistribution,
    Dns,
    Http,
}

impl Kind {
    pub const ALL: [(&'static str, Kind); 7] = [
        ("flow", Kind::Flow),
        ("drop", Kind::Drop),
        ("tcp", Kind::Tcp),
        ("icmp", Kind::Icmp),
        ("port-distribution", Kind::PortDistribution),
        ("dns", Kind::Dns),
        ("http", Kind::Http),
    ];
}

/// A context label: the first non-empty of its alternatives
/// (`namespace|reserved-identity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context(pub Vec<Part>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Namespace,
    Pod,
    PodName,
    Workload,
    WorkloadName,
    App,
    ReservedIdentity,
    Dns,
    /// Raw addresses: only when asked for, as they are unbounded.
    Ip,
}

const PARTS: [(&str, Part); 9] = [
    ("namespace", Part::Namespace),
    ("pod", Part::Pod),
    ("pod-name", Part::PodName),
    ("workload", Part::Workload),
    ("workload-name", Part::WorkloadName),
    ("app", Part::App),
    ("reserved-identity", Part::ReservedIdentity),
    ("dns", Part::Dns),
    ("ip", Part::Ip),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

fn context(value: &str) -> Result<Context, Error> {
    value
        .split('|')
        .map(|p| {
            PARTS
                .iter()
                .find(|(n, _)| *n == p)
                .map(|(_, part)| *part)
                .ok_or_else(|| {
                    let names: Vec<&str> = PARTS.iter().map(|(n, _)| *n).collect();
                    Error(format!(
                        "unknown context {p:?} (one of {}, alternatives joined by |)",
                        names.join(", ")
                    ))
                })
        })
        .collect::<Result<_, _>>()
        .map(Context)
}

/// Parses one handler, e.g. `flow:sourceContext=namespace;destinationContext=pod`.
pub fn parse_handler(spec: &str) -> Result<Handler, Error> {
    let (name, opts) = spec.split_once(':').unwrap_or((spec, ""));
    let kind = Kind::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
        .ok_or_else(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|(n, _)| *n).collect();
            Error(format!(
                "unknown metrics handler {name:?} (one of {})",
                names.join(", ")
            ))
        })?;
    let mut h = Handler {
        kind,
        source: None,
        destination: None,
        dns_query: false,
        ignore_aaaa: false,
    };
    for opt in opts.split(';').filter(|o| !o.is_empty()) {
        let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
        match (key, kind) {
            ("sourceContext", _) => h.source = Some(context(value)?),
            ("destinationContext", _) => h.destination = Some(context(value)?),
            ("query", Kind::Dns) => h.dns_query = true,
            ("ignoreAAAA", Kind::Dns) => h.ignore_aaaa = true,
            _ => {
                return Err(Error(format!(
                    "{name}: unknown option {key:?} (sourceContext, destinationContext{})",
                    if kind == Kind::Dns {
                        ", query, ignoreAAAA"
                    } else {
                        ""
                    }
                )));
            }
        }
    }
    Ok(h)
}

/// Parses a `--metrics` value: one or more handlers separated by spaces.
pub fn parse(value: &str) -> Result<Vec<Handler>, Error> {
    value.split_whitespace().map(parse_handler).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubble_syntax() {
        let hs = parse("dns:query;ignoreAAAA drop flow:sourceContext=namespace|reserved-identity;destinationContext=pod").unwrap();
        assert_eq!(hs.len(), 3);
        assert!(hs[0].dns_query && hs[0].ignore_aaaa);
        assert_eq!(hs[1].kind, Kind::Drop);
        assert_eq!(
            hs[2].source,
            Some(Context(vec![Part::Namespace, Part::ReservedIdentity]))
        );
        assert_eq!(hs[2].destination, Some(Context(vec![Part::Pod])));
    }

    #[test]
    fn mistakes_are_named() {
        for (v, needle) in [
            ("flows", "unknown metrics handler \"flows\""),
            ("flow:sourceContext=pods", "unknown context \"pods\""),
            ("drop:query", "drop: unknown option \"query\""),
        ] {
            let e = parse(v).unwrap_err().to_string();
            assert!(e.contains(needle), "{v}: {e}");
        }
    }
}
