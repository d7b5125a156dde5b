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
//! An expression is type-checked first, as Hubble checks it
//! ([`check`]): one that Hubble refuses (a field the flow does not have, a
//! uint port against an int literal, a result that is not a bool) is an
//! error here too.
//!
//! Cost: the flow is converted for every evaluation (tens of microseconds
//! per flow); the filter is opt-in and says so in `--help`.

mod check;

use std::{collections::HashMap, fmt, sync::Arc};

use cel::{Context, Program, Value as CelValue};
use serde_json::Value;

use crate::flow::Flow;

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
            let program = Program::compile(e).map_err(|err| err.to_string())?;
            check::check(program.expression())?;
            programs.push(program);
        }
        Ok(Some(Self {
            programs: Arc::new(programs),
        }))
    }

    pub(super) fn matches(&self, flow: &Flow) -> bool {
        let mut ctx = Context::default();
        ctx.add_variable_from_value("_flow", flow_value(flow));
        let enums = enums();
        for (name, values) in &enums.each {
            ctx.add_variable_from_value(*name, values.clone());
        }
        ctx.add_variable_from_value("flow", enums.container.clone());
        self.programs
            .iter()
            .any(|p| matches!(p.execute(&ctx), Ok(CelValue::Bool(true))))
    }
}

/// The enums of the `flow` package as CEL values, built once: each by
/// name (`Verdict`, nested ones as `Parent.Name`) as `{ VALUE: number }`,
/// and all of them in the `flow` container (`flow.Verdict.DROPPED`).
struct Enums {
    each: Vec<(&'static str, CelValue)>,
    container: CelValue,
}

fn enums() -> &'static Enums {
    static ENUMS: std::sync::OnceLock<Enums> = std::sync::OnceLock::new();
    ENUMS.get_or_init(|| {
        let each: Vec<(&'static str, CelValue)> = check::schema::CEL_ENUMS
            .iter()
            .filter_map(|(name, values)| {
                let name = name.strip_prefix("flow.")?;
                let m: HashMap<String, CelValue> = values
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), CelValue::Int(i64::from(*v))))
                    .collect();
                Some((name, m.into()))
            })
            .collect();
        let container: HashMap<String, CelValue> = each
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect();
        Enums {
            each,
            container: container.into(),
        }
    })
}

/// The number of an enum value by name (None when the name is unknown).
fn enum_number(enum_name: &str, value: &str) -> Option<i64> {
    check::schema::CEL_ENUMS
        .iter()
        .find(|(e, _)| *e == enum_name)
        .and_then(|(_, values)| values.iter().find(|(n, _)| *n == value))
        .map(|(_, v)| i64::from(*v))
}

/// The flow as CEL over its protobuf message sees it: Hubble's JSON read
/// by the schema, so that every scalar and repeated field of a message
/// that is there has a value (its zero when unset), wrappers are their
/// value or null, enums and 64-bit integers are numbers, times are
/// timestamps; a message field that is not set stays absent (`has()` is
/// false for it), but for the endpoints and the IP header.
fn flow_value(flow: &Flow) -> CelValue {
    let mut json = serde_json::to_value(flow).unwrap_or(Value::Null);
    // The endpoints and the IP header read as empty messages when unset
    // (`_flow.destination.pod_name == ''` on a flow to the world), as on
    // the protobuf message; `has()` on them is then true.
    if let Value::Object(m) = &mut json {
        for key in ["source", "destination", "IP"] {
            m.entry(key)
                .or_insert_with(|| Value::Object(Default::default()));
        }
    }
    message_value(&json, "flow.Flow")
}

fn message_value(json: &Value, message: &str) -> CelValue {
    let Some(fields) = check::messages().get(message) else {
        return json_value(json);
    };
    let obj = json.as_object();
    let mut out: HashMap<String, CelValue> = HashMap::with_capacity(fields.len());
    for (name, ty) in fields {
        match obj.and_then(|o| o.get(*name)) {
            Some(v) if !v.is_null() => {
                out.insert((*name).to_owned(), typed_value(v, ty));
            }
            _ => {
                if let Some(zero) = zero_value(ty) {
                    out.insert((*name).to_owned(), zero);
                }
            }
        }
    }
    out.into()
}

/// The value an unset field reads as; None for a message (left out).
fn zero_value(ty: &str) -> Option<CelValue> {
    Some(match ty {
        "bool" => CelValue::Bool(false),
        "int" => CelValue::Int(0),
        "uint" => CelValue::UInt(0),
        "double" => CelValue::Float(0.0),
        "string" => CelValue::String(Arc::new(String::new())),
        "bytes" => CelValue::Bytes(Arc::new(Vec::new())),
        "map" => HashMap::<String, CelValue>::new().into(),
        t if t.starts_with("enum:") => CelValue::Int(0),
        t if t.starts_with("list:") => CelValue::List(Arc::new(Vec::new())),
        t if t.starts_with("wrapper:") => CelValue::Null,
        _ => return None,
    })
}

fn typed_value(v: &Value, ty: &str) -> CelValue {
    if let Some(elem) = ty.strip_prefix("list:") {
        let items = v.as_array().map_or(&[][..], Vec::as_slice);
        return CelValue::List(Arc::new(
            items.iter().map(|x| typed_value(x, elem)).collect(),
        ));
    }
    if let Some(inner) = ty.strip_prefix("wrapper:") {
        return typed_value(v, inner);
    }
    if let Some(m) = ty.strip_prefix("msg:") {
        return message_value(v, m);
    }
    if let Some(e) = ty.strip_prefix("enum:") {
        return match v {
            Value::String(name) => CelValue::Int(enum_number(e, name).unwrap_or(0)),
            _ => CelValue::Int(v.as_i64().unwrap_or(0)),
        };
    }
    // protojson writes 64-bit integers as strings.
    let number = |v: &Value| match v {
        Value::String(s) => s.parse::<f64>().ok(),
        _ => v.as_f64(),
    };
    match ty {
        "int" => match v {
            Value::String(s) => CelValue::Int(s.parse().unwrap_or(0)),
            _ => CelValue::Int(v.as_i64().unwrap_or(0)),
        },
        "uint" => match v {
            Value::String(s) => CelValue::UInt(s.parse().unwrap_or(0)),
            _ => CelValue::UInt(v.as_u64().unwrap_or(0)),
        },
        "double" => CelValue::Float(number(v).unwrap_or(0.0)),
        "timestamp" => v
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map_or(CelValue::Null, CelValue::Timestamp),
        "duration" => v
            .as_str()
            .and_then(|s| s.strip_suffix('s'))
            .and_then(|s| s.parse::<f64>().ok())
            .map_or(CelValue::Null, |secs| {
                CelValue::Duration(chrono::Duration::nanoseconds((secs * 1e9) as i64))
            }),
        _ => json_value(v),
    }
}

/// A JSON value with no schema to read it by.
fn json_value(v: &Value) -> CelValue {
    match v {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map(CelValue::Int)
            .or_else(|| n.as_u64().map(CelValue::UInt))
            .unwrap_or_else(|| CelValue::Float(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(a) => CelValue::List(Arc::new(a.iter().map(json_value).collect())),
        Value::Object(o) => {
            let m: HashMap<String, CelValue> =
                o.iter().map(|(k, v)| (k.clone(), json_value(v))).collect();
            m.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{EndpointData, Ip, Verdict};

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
        // What Hubble's type check refuses is an error, not a non-match.
        for bad in [
            "_flow.nope.deeper == 1",
            "_flow.verdict",
            "_flow.verdict ==",
        ] {
            assert!(CelFilter::compile(&[bad.into()]).is_err(), "{bad}");
        }
        // An expression that fails at run time does not match.
        assert!(!matches("_flow.source.labels[5] == ''", &flow));
    }
}
