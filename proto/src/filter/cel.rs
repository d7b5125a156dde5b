//! `experimental.cel_expression`: a flow passes when one of the filter's CEL
//! expressions over `_flow` is true, as Hubble's CEL filter decides.
//!
//! The flow is given to the interpreter as its JSON form with Hubble's
//! proto field names (`_flow.source.pod_name`, `_flow.IP.source`,
//! `_flow.l4.TCP.destination_port`), enums as numbers, and the fields CEL
//! over a protobuf message always has (the flow's scalars, the endpoints'
//! names, identities and labels, the IP header) present with their zero
//! values when the flow leaves them out. Enum values are named as in
//! Hubble's `flow` container: `Verdict.DROPPED`, `flow.Verdict.DROPPED`,
//! `TrafficDirection.INGRESS`, ... An expression that fails at run time, or
//! is not true, does not match (as in Hubble).
//!
//! Cost: the flow is converted for every evaluation (tens of microseconds
//! per flow); the filter is opt-in and says so in `--help`.

use std::{collections::HashMap, fmt, sync::Arc};

use cel::{Context, Program, Value as CelValue};
use serde_json::{Map, Value};

use crate::flow::{
    AuthType, DebugCapturePoint, DropReason, Flow, FlowType, IpVersion, L7FlowType,
    LostEventSource, SocketTranslationPoint, TraceObservationPoint, TraceReason, TrafficDirection,
    Verdict,
};

/// Hubble's limit on an expression's length.
const MAX_EXPRESSION: usize = 4096;

/// The compiled expressions of one filter.
#[derive(Clone)]
pub(super) struct CelFilter {
    programs: Arc<Vec<Program>>,
}

impl fmt::Debug for CelFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CelFilter({} expressions)", self.programs.len())
    }
}

impl CelFilter {
    pub(super) fn compile(exprs: &[String]) -> Result<Option<Self>, String> {
        if exprs.is_empty() {
            return Ok(None);
        }
        let mut programs = Vec::with_capacity(exprs.len());
        for e in exprs {
            if e.len() > MAX_EXPRESSION {
                return Err(format!(
                    "expression is {} characters, more than {MAX_EXPRESSION}",
                    e.len()
                ));
            }
            programs.push(Program::compile(e).map_err(|err| err.to_string())?);
        }
        Ok(Some(Self {
            programs: Arc::new(programs),
        }))
    }

    pub(super) fn matches(&self, flow: &Flow) -> bool {
        let mut ctx = Context::default();
        if ctx.add_variable("_flow", flow_value(flow)).is_err() {
            return false;
        }
        let enums = enums();
        for (name, values) in enums.iter() {
            ctx.add_variable_from_value(*name, values.clone());
        }
        let container: HashMap<String, CelValue> = enums
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect();
        ctx.add_variable_from_value("flow", container);
        self.programs
            .iter()
            .any(|p| matches!(p.execute(&ctx), Ok(CelValue::Bool(true))))
    }
}

/// `Name -> { VALUE: number }` for every enum a flow carries.
fn enums() -> &'static Vec<(&'static str, CelValue)> {
    static ENUMS: std::sync::OnceLock<Vec<(&'static str, CelValue)>> = std::sync::OnceLock::new();
    ENUMS.get_or_init(|| {
        fn table(names: impl Iterator<Item = (&'static str, i32)>) -> CelValue {
            let m: HashMap<String, CelValue> = names
                .map(|(n, v)| (n.to_owned(), CelValue::Int(i64::from(v))))
                .collect();
            m.into()
        }
        macro_rules! enum_table {
            ($t:ty) => {
                table(
                    (0..1024).filter_map(|v| <$t>::try_from(v).ok().map(|e| (e.as_str_name(), v))),
                )
            };
        }
        vec![
            ("Verdict", enum_table!(Verdict)),
            ("FlowType", enum_table!(FlowType)),
            ("TrafficDirection", enum_table!(TrafficDirection)),
            ("DropReason", enum_table!(DropReason)),
            ("TraceObservationPoint", enum_table!(TraceObservationPoint)),
            ("TraceReason", enum_table!(TraceReason)),
            ("AuthType", enum_table!(AuthType)),
            ("IPVersion", enum_table!(IpVersion)),
            ("L7FlowType", enum_table!(L7FlowType)),
            (
                "SocketTranslationPoint",
                enum_table!(SocketTranslationPoint),
            ),
            ("DebugCapturePoint", enum_table!(DebugCapturePoint)),
            ("LostEventSource", enum_table!(LostEventSource)),
        ]
    })
}

/// The flow as CEL sees it (see the module documentation).
fn flow_value(flow: &Flow) -> Value {
    let mut v = serde_json::to_value(flow).unwrap_or(Value::Null);
    let Value::Object(m) = &mut v else {
        return Value::Object(Map::new());
    };
    enum_to_number(m, "verdict", |s| {
        Verdict::from_str_name(s).map(|e| e as i32)
    });
    enum_to_number(m, "Type", |s| FlowType::from_str_name(s).map(|e| e as i32));
    enum_to_number(m, "traffic_direction", |s| {
        TrafficDirection::from_str_name(s).map(|e| e as i32)
    });
    enum_to_number(m, "drop_reason_desc", |s| {
        DropReason::from_str_name(s).map(|e| e as i32)
    });
    enum_to_number(m, "trace_observation_point", |s| {
        TraceObservationPoint::from_str_name(s).map(|e| e as i32)
    });
    enum_to_number(m, "trace_reason", |s| {
        TraceReason::from_str_name(s).map(|e| e as i32)
    });
    enum_to_number(m, "auth_type", |s| {
        AuthType::from_str_name(s).map(|e| e as i32)
    });
    enum_to_number(m, "sock_xlate_point", |s| {
        SocketTranslationPoint::from_str_name(s).map(|e| e as i32)
    });
    enum_to_number(m, "debug_capture_point", |s| {
        DebugCapturePoint::from_str_name(s).map(|e| e as i32)
    });
    for (key, zero) in [
        ("verdict", Value::from(0)),
        ("drop_reason", Value::from(0)),
        ("drop_reason_desc", Value::from(0)),
        ("Type", Value::from(0)),
        ("traffic_direction", Value::from(0)),
        ("policy_match_type", Value::from(0)),
        ("trace_observation_point", Value::from(0)),
        ("auth_type", Value::from(0)),
        ("node_name", Value::from("")),
        ("uuid", Value::from("")),
        ("source_names", Value::Array(Vec::new())),
        ("destination_names", Value::Array(Vec::new())),
        ("Summary", Value::from("")),
    ] {
        m.entry(key).or_insert(zero);
    }
    for side in ["source", "destination"] {
        let e = m.entry(side).or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(e) = e {
            for (key, zero) in [
                ("ID", Value::from(0)),
                ("identity", Value::from(0)),
                ("cluster_name", Value::from("")),
                ("namespace", Value::from("")),
                ("labels", Value::Array(Vec::new())),
                ("pod_name", Value::from("")),
                ("workloads", Value::Array(Vec::new())),
            ] {
                e.entry(key).or_insert(zero);
            }
        }
    }
    let ip = m.entry("IP").or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(ip) = ip {
        enum_to_number(ip, "ipVersion", |s| {
            IpVersion::from_str_name(s).map(|e| e as i32)
        });
        for (key, zero) in [
            ("source", Value::from("")),
            ("source_xlated", Value::from("")),
            ("destination", Value::from("")),
            ("ipVersion", Value::from(0)),
            ("encrypted", Value::from(false)),
        ] {
            ip.entry(key).or_insert(zero);
        }
    }
    if let Some(Value::Object(l7)) = m.get_mut("l7") {
        enum_to_number(l7, "type", |s| {
            L7FlowType::from_str_name(s).map(|e| e as i32)
        });
    }
    v
}

fn enum_to_number(m: &mut Map<String, Value>, key: &str, parse: impl Fn(&str) -> Option<i32>) {
    if let Some(Value::String(s)) = m.get(key)
        && let Some(n) = parse(s)
    {
        m.insert(key.to_owned(), Value::from(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{EndpointData, Ip};

    fn matches(expr: &str, flow: &Flow) -> bool {
        CelFilter::compile(&[expr.to_owned()])
            .unwrap()
            .unwrap()
            .matches(flow)
    }

    #[test]
    fn expressions_see_the_flow_as_hubble_gives_it() {
        let flow = Flow {
            verdict: Verdict::Dropped as i32,
            ip: Some(Ip {
                source: "10.0.0.1".into(),
                ..Default::default()
            }),
            source: Some(
                EndpointData {
                    namespace: "shop".into(),
                    labels: vec!["k8s:app=cart".into()],
                    ..Default::default()
                }
                .into(),
            ),
            ..Default::default()
        };
        assert!(matches("_flow.verdict == Verdict.DROPPED", &flow));
        assert!(matches("_flow.verdict == flow.Verdict.DROPPED", &flow));
        assert!(!matches("_flow.verdict == Verdict.FORWARDED", &flow));
        assert!(matches(
            "_flow.source.namespace == 'shop' && 'k8s:app=cart' in _flow.source.labels",
            &flow
        ));
        assert!(matches("_flow.IP.source.startsWith('10.')", &flow));
        // Absent fields have their zero values, as on a protobuf message.
        assert!(matches("_flow.destination.pod_name == ''", &flow));
        assert!(matches(
            "_flow.traffic_direction == TrafficDirection.TRAFFIC_DIRECTION_UNKNOWN",
            &flow
        ));
        // A failing or non-boolean expression does not match.
        assert!(!matches("_flow.nope.deeper == 1", &flow));
        assert!(!matches("_flow.verdict", &flow));
        assert!(CelFilter::compile(&["_flow.verdict ==".into()]).is_err());
    }
}
