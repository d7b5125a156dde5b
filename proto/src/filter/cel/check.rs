//! The type check Hubble runs on a CEL expression before it accepts it
//! (cel-go's checker over the `flow.Flow` descriptors, in the container
//! `flow`, with `_flow` declared as a `flow.Flow`): the expression must be
//! of type `bool`, every field it selects must exist, and every operator
//! and function must have an overload for its operands' types. cel-go has
//! no cross-type numeric comparisons by default, so `_flow.l4.TCP.
//! destination_port == 8080` (a uint against an int) is refused, as in
//! Hubble; `8080u` is accepted.
//!
//! What is checked is the part of cel-go's standard environment a flow
//! filter uses: field selection, `has`, the comprehension macros, the
//! operators, `size`, the string functions, conversions and the time
//! accessors. The interpreter (the `cel` crate) then runs what passes.

use std::{collections::HashMap, fmt, sync::OnceLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};

pub(super) mod schema {
    include!(concat!(env!("OUT_DIR"), "/cel_schema.rs"));
}

/// A CEL type, as far as the check needs one.
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Null,
    Timestamp,
    Duration,
    Type,
    /// Anything: the check lets it through.
    Dyn,
    Msg(&'static str),
    List(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
    /// google.protobuf.BoolValue and the like: the value or null.
    Wrapper(Box<Ty>),
}

impl fmt::Display for Ty {
    /// cel-go's names, as its errors print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Bool => f.write_str("bool"),
            Ty::Int => f.write_str("int"),
            Ty::Uint => f.write_str("uint"),
            Ty::Double => f.write_str("double"),
            Ty::String => f.write_str("string"),
            Ty::Bytes => f.write_str("bytes"),
            Ty::Null => f.write_str("null_type"),
            Ty::Timestamp => f.write_str("google.protobuf.Timestamp"),
            Ty::Duration => f.write_str("google.protobuf.Duration"),
            Ty::Type => f.write_str("type"),
            Ty::Dyn => f.write_str("dyn"),
            Ty::Msg(m) => f.write_str(m),
            Ty::List(t) => write!(f, "list({t})"),
            Ty::Map(k, v) => write!(f, "map({k}, {v})"),
            Ty::Wrapper(t) => write!(f, "wrapper({t})"),
        }
    }
}

impl Ty {
    /// A field's type as build.rs writes it into the schema.
    fn from_schema(s: &'static str) -> Ty {
        if let Some(t) = s.strip_prefix("list:") {
            return Ty::List(Box::new(Ty::from_schema(t)));
        }
        if let Some(t) = s.strip_prefix("wrapper:") {
            return Ty::Wrapper(Box::new(Ty::from_schema(t)));
        }
        if let Some(m) = s.strip_prefix("msg:") {
            return Ty::Msg(m);
        }
        if s.starts_with("enum:") {
            return Ty::Int;
        }
        match s {
            "bool" => Ty::Bool,
            "int" => Ty::Int,
            "uint" => Ty::Uint,
            "double" => Ty::Double,
            "string" => Ty::String,
            "bytes" => Ty::Bytes,
            "timestamp" => Ty::Timestamp,
            "duration" => Ty::Duration,
            "map" => Ty::Map(Box::new(Ty::Dyn), Box::new(Ty::Dyn)),
            _ => Ty::Dyn,
        }
    }

    /// A wrapper is its value when an operator takes it.
    fn value(&self) -> &Ty {
        match self {
            Ty::Wrapper(t) => t,
            t => t,
        }
    }

    fn is(&self, want: &Ty) -> bool {
        matches!(self.value(), Ty::Dyn) || self.value() == want
    }
}

/// Message name -> field name -> CEL type.
pub(super) fn messages() -> &'static HashMap<&'static str, HashMap<&'static str, &'static str>> {
    static M: OnceLock<HashMap<&'static str, HashMap<&'static str, &'static str>>> =
        OnceLock::new();
    M.get_or_init(|| {
        schema::CEL_SCHEMA
            .iter()
            .map(|(m, fields)| (*m, fields.iter().copied().collect()))
            .collect()
    })
}

/// Whether `name` (qualified, in the container `flow`) is an enum value.
fn enum_constant(name: &str) -> bool {
    let Some((enum_name, value)) = name.rsplit_once('.') else {
        return false;
    };
    let full = if enum_name.starts_with("flow.") {
        enum_name.to_owned()
    } else {
        format!("flow.{enum_name}")
    };
    schema::CEL_ENUMS
        .iter()
        .any(|(e, values)| *e == full && values.iter().any(|(v, _)| *v == value))
}

/// Whether `name` names a message type of the schema.
fn message_type(name: &str) -> bool {
    let full = if name.starts_with("flow.") {
        name.to_owned()
    } else {
        format!("flow.{name}")
    };
    messages().contains_key(full.as_str())
}

/// `a.b.c` when the expression is a chain of plain selections on an ident.
fn qualified_name(e: &IdedExpr) -> Option<String> {
    match &e.expr {
        Expr::Ident(n) => Some(n.clone()),
        Expr::Select(s) if !s.test => Some(format!("{}.{}", qualified_name(&s.operand)?, s.field)),
        _ => None,
    }
}

/// Checks an expression as Hubble does before accepting it.
pub(super) fn check(e: &IdedExpr) -> Result<(), String> {
    let t = Checker { scopes: Vec::new() }.ty(e)?;
    if t != Ty::Bool {
        return Err(format!("got \"{t}\", wanted \"bool\" result type"));
    }
    Ok(())
}

struct Checker {
    /// Comprehension variables, innermost last.
    scopes: Vec<(String, Ty)>,
}

fn no_overload(f: &str, args: &[Ty]) -> String {
    let args: Vec<String> = args.iter().map(Ty::to_string).collect();
    format!(
        "found no matching overload for '{f}' applied to '({})'",
        args.join(", ")
    )
}

/// Whether `==` has an overload for the two (cel-go: the same type, or
/// null against a message, wrapper, timestamp or duration).
fn equatable(a: &Ty, b: &Ty) -> bool {
    match (a, b) {
        (Ty::Dyn, _) | (_, Ty::Dyn) => true,
        (Ty::Null, Ty::Null | Ty::Msg(_) | Ty::Wrapper(_) | Ty::Timestamp | Ty::Duration)
        | (Ty::Msg(_) | Ty::Wrapper(_) | Ty::Timestamp | Ty::Duration, Ty::Null) => true,
        (Ty::Wrapper(x), y) | (y, Ty::Wrapper(x)) => equatable(x, y.value()),
        (Ty::List(x), Ty::List(y)) => equatable(x, y),
        (Ty::Map(k1, v1), Ty::Map(k2, v2)) => equatable(k1, k2) && equatable(v1, v2),
        (x, y) => x == y,
    }
}

impl Checker {
    fn ty(&mut self, e: &IdedExpr) -> Result<Ty, String> {
        match &e.expr {
            Expr::Literal(l) => Ok(match l {
                LiteralValue::Boolean(_) => Ty::Bool,
                LiteralValue::Bytes(_) => Ty::Bytes,
                LiteralValue::Double(_) => Ty::Double,
                LiteralValue::Int(_) => Ty::Int,
                LiteralValue::Null => Ty::Null,
                LiteralValue::String(_) => Ty::String,
                LiteralValue::UInt(_) => Ty::Uint,
            }),
            Expr::Ident(name) => self.ident(name),
            Expr::Select(s) => {
                if !s.test
                    && let Some(name) = qualified_name(e)
                    && self
                        .scopes
                        .iter()
                        .all(|(v, _)| !name.starts_with(v.as_str()))
                    && name != "_flow"
                    && !name.starts_with("_flow.")
                {
                    if enum_constant(&name) {
                        return Ok(Ty::Int);
                    }
                    if message_type(&name) {
                        return Ok(Ty::Type);
                    }
                }
                let operand = self.ty(&s.operand)?;
                let t = match operand.value() {
                    Ty::Msg(m) => match messages().get(m).and_then(|f| f.get(s.field.as_str())) {
                        Some(t) => Ty::from_schema(t),
                        None => return Err(format!("undefined field '{}'", s.field)),
                    },
                    Ty::Map(_, v) => (**v).clone(),
                    Ty::Dyn => Ty::Dyn,
                    _ => {
                        return Err(format!("type '{operand}' does not support field selection"));
                    }
                };
                Ok(if s.test { Ty::Bool } else { t })
            }
            Expr::Call(c) => {
                let mut args = Vec::with_capacity(c.args.len() + 1);
                if let Some(t) = &c.target {
                    args.push(self.ty(t)?);
                }
                for a in &c.args {
                    args.push(self.ty(a)?);
                }
                call(&c.func_name, &args)
            }
            Expr::Comprehension(c) => {
                let range = self.ty(&c.iter_range)?;
                let elem = match range.value() {
                    Ty::List(t) => (**t).clone(),
                    Ty::Map(k, _) => (**k).clone(),
                    Ty::Dyn => Ty::Dyn,
                    t => {
                        return Err(format!(
                            "expression of type '{t}' cannot be range of a comprehension"
                        ));
                    }
                };
                let accu = self.ty(&c.accu_init)?;
                let depth = self.scopes.len();
                self.scopes.push((c.iter_var.clone(), elem));
                self.scopes.push((c.accu_var.clone(), accu.clone()));
                let step = self.ty(&c.loop_step);
                let step = match step {
                    Ok(s) => s,
                    Err(e) => {
                        self.scopes.truncate(depth);
                        return Err(e);
                    }
                };
                // An empty list to start with takes the type the steps add.
                if accu == Ty::List(Box::new(Ty::Dyn))
                    && let Some(last) = self.scopes.last_mut()
                {
                    last.1 = step;
                }
                let result = self.ty(&c.loop_cond).and_then(|_| self.ty(&c.result));
                self.scopes.truncate(depth);
                result
            }
            Expr::List(l) => {
                let mut elem: Option<Ty> = None;
                for x in &l.elements {
                    let t = self.ty(x)?;
                    elem = Some(match elem {
                        None => t,
                        Some(e) if e == t => e,
                        Some(_) => Ty::Dyn,
                    });
                }
                Ok(Ty::List(Box::new(elem.unwrap_or(Ty::Dyn))))
            }
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        self.ty(&me.key)?;
                        self.ty(&me.value)?;
                    }
                }
                Ok(Ty::Map(Box::new(Ty::Dyn), Box::new(Ty::Dyn)))
            }
            Expr::Struct(_) => Ok(Ty::Dyn),
            Expr::Unspecified => Ok(Ty::Dyn),
        }
    }

    fn ident(&self, name: &str) -> Result<Ty, String> {
        if let Some((_, t)) = self.scopes.iter().rev().find(|(v, _)| v == name) {
            return Ok(t.clone());
        }
        match name {
            "_flow" => Ok(Ty::Msg("flow.Flow")),
            "int" | "uint" | "double" | "string" | "bytes" | "bool" | "list" | "map"
            | "null_type" | "type" | "dyn" => Ok(Ty::Type),
            _ if message_type(name) => Ok(Ty::Type),
            _ => Err(format!(
                "undeclared reference to '{name}' (in container 'flow')"
            )),
        }
    }
}

/// The result of a function or operator, or why it has no overload.
fn call(f: &str, args: &[Ty]) -> Result<Ty, String> {
    let err = || Err(no_overload(f, args));
    let one = |want: &[Ty], out: Ty| -> Result<Ty, String> {
        if args.len() == want.len() && args.iter().zip(want).all(|(a, w)| a.is(w)) {
            Ok(out)
        } else {
            Err(no_overload(f, args))
        }
    };
    match (f, args) {
        ("_==_" | "_!=_", [a, b]) => {
            if equatable(a, b) {
                Ok(Ty::Bool)
            } else {
                err()
            }
        }
        ("_<_" | "_<=_" | "_>_" | "_>=_", [a, b]) => {
            let (a, b) = (a.value(), b.value());
            let ordered = matches!(
                a,
                Ty::Int
                    | Ty::Uint
                    | Ty::Double
                    | Ty::String
                    | Ty::Bytes
                    | Ty::Bool
                    | Ty::Timestamp
                    | Ty::Duration
            );
            if *a == Ty::Dyn || *b == Ty::Dyn || (ordered && a == b) {
                Ok(Ty::Bool)
            } else {
                err()
            }
        }
        ("_&&_" | "_||_", [_, _]) => one(&[Ty::Bool, Ty::Bool], Ty::Bool),
        ("!_" | "@not_strictly_false", [_]) => one(&[Ty::Bool], Ty::Bool),
        ("-_", [a]) => match a.value() {
            Ty::Int | Ty::Double | Ty::Duration | Ty::Dyn => Ok(a.value().clone()),
            _ => err(),
        },
        ("_+_" | "_-_" | "_*_" | "_/_" | "_%_", [a, b]) => {
            let (a, b) = (a.value(), b.value());
            match (f, a, b) {
                (_, Ty::Dyn, t) | (_, t, Ty::Dyn) => Ok(t.clone()),
                ("_+_", Ty::Timestamp, Ty::Duration) | ("_+_", Ty::Duration, Ty::Timestamp) => {
                    Ok(Ty::Timestamp)
                }
                ("_-_", Ty::Timestamp, Ty::Timestamp) => Ok(Ty::Duration),
                ("_-_", Ty::Timestamp, Ty::Duration) => Ok(Ty::Timestamp),
                ("_+_" | "_-_", Ty::Duration, Ty::Duration) => Ok(Ty::Duration),
                ("_+_", Ty::String | Ty::Bytes | Ty::List(_), _) if a == b => Ok(a.clone()),
                ("_+_", Ty::List(_), Ty::List(_)) => Ok(Ty::List(Box::new(Ty::Dyn))),
                ("_%_", Ty::Int | Ty::Uint, _) if a == b => Ok(a.clone()),
                ("_+_" | "_-_" | "_*_" | "_/_", Ty::Int | Ty::Uint | Ty::Double, _) if a == b => {
                    Ok(a.clone())
                }
                _ => err(),
            }
        }
        ("_[_]", [c, i]) => match (c.value(), i.value()) {
            (Ty::List(t), Ty::Int | Ty::Dyn) => Ok((**t).clone()),
            (Ty::Map(k, v), i) if equatable(k, i) => Ok((**v).clone()),
            (Ty::Dyn, _) => Ok(Ty::Dyn),
            _ => err(),
        },
        ("@in", [x, c]) => match c.value() {
            Ty::List(t) if equatable(x, t) => Ok(Ty::Bool),
            Ty::Map(k, _) if equatable(x, k) => Ok(Ty::Bool),
            Ty::Dyn => Ok(Ty::Bool),
            _ => err(),
        },
        ("_?_:_", [c, a, b]) => {
            if !c.is(&Ty::Bool) {
                return err();
            }
            if a == b || *b == Ty::Dyn {
                Ok(a.clone())
            } else if *a == Ty::Dyn {
                Ok(b.clone())
            } else {
                err()
            }
        }
        ("size", [x]) => match x.value() {
            Ty::String | Ty::Bytes | Ty::List(_) | Ty::Map(..) | Ty::Dyn => Ok(Ty::Int),
            _ => err(),
        },
        ("startsWith" | "endsWith" | "contains" | "matches", [_, _]) => {
            one(&[Ty::String, Ty::String], Ty::Bool)
        }
        ("int", [_]) => Ok(Ty::Int),
        ("uint", [_]) => Ok(Ty::Uint),
        ("double", [_]) => Ok(Ty::Double),
        ("string", [_]) => Ok(Ty::String),
        ("bytes", [_]) => Ok(Ty::Bytes),
        ("bool", [_]) => Ok(Ty::Bool),
        ("dyn", [_]) => Ok(Ty::Dyn),
        ("type", [_]) => Ok(Ty::Type),
        ("timestamp", [_]) => Ok(Ty::Timestamp),
        ("duration", [_]) => Ok(Ty::Duration),
        (
            "getFullYear" | "getMonth" | "getDate" | "getDayOfMonth" | "getDayOfWeek"
            | "getDayOfYear" | "getHours" | "getMinutes" | "getSeconds" | "getMilliseconds",
            [t, ..],
        ) => match t.value() {
            Ty::Timestamp | Ty::Duration | Ty::Dyn => Ok(Ty::Int),
            _ => err(),
        },
        (
            "_==_"
            | "_!=_"
            | "_<_"
            | "_<=_"
            | "_>_"
            | "_>=_"
            | "_&&_"
            | "_||_"
            | "!_"
            | "-_"
            | "_+_"
            | "_-_"
            | "_*_"
            | "_/_"
            | "_%_"
            | "_[_]"
            | "@in"
            | "_?_:_"
            | "size"
            | "startsWith"
            | "endsWith"
            | "contains"
            | "matches"
            | "int"
            | "uint"
            | "double"
            | "string"
            | "bytes"
            | "bool"
            | "dyn"
            | "type"
            | "timestamp"
            | "duration"
            | "@not_strictly_false",
            _,
        ) => err(),
        _ => Err(format!(
            "undeclared reference to '{f}' (in container 'flow')"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(expr: &str) -> Result<(), String> {
        let p = cel::Program::compile(expr).map_err(|e| e.to_string())?;
        check(p.expression())
    }

    #[test]
    fn what_hubble_accepts() {
        for ok in [
            "_flow.verdict == Verdict.DROPPED",
            "_flow.verdict == flow.Verdict.DROPPED",
            "_flow.verdict == 2",
            "_flow.l4.TCP.destination_port == 8080u",
            "_flow.l7.http.code >= 500u",
            "has(_flow.l7.http)",
            "_flow.source.namespace == 'shop' && 'k8s:app=cart' in _flow.source.labels",
            "_flow.source.labels.exists(l, l.startsWith('k8s:app='))",
            "_flow.source.workloads.all(w, w.kind == 'Deployment')",
            "size(_flow.destination_names) > 0",
            "_flow.IP.source.matches('^10\\\\.')",
            "_flow.is_reply == true",
            "!_flow.is_reply",
            "_flow.is_reply == null",
            "_flow.time > timestamp('2024-01-01T00:00:00Z')",
            "_flow.traffic_direction == TrafficDirection.INGRESS || _flow.Type == FlowType.L7",
            "_flow.l7.dns.query.endsWith('.cluster.local.')",
            "_flow.l4.UDP.destination_port in [53u, 5353u]",
            "_flow.source.identity > 100u ? true : false",
            "_flow.drop_reason_desc == DropReason.POLICY_DENIED",
        ] {
            assert_eq!(checked(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn what_hubble_refuses() {
        for (bad, why) in [
            (
                "_flow.l4.TCP.destination_port == 8080",
                "no matching overload for '_==_' applied to '(uint, int)'",
            ),
            ("_flow.l7.http.code >= 500", "'(uint, int)'"),
            ("_flow.nope == 1", "undefined field 'nope'"),
            ("_flow.is_reply.value", "does not support field selection"),
            ("_flow.is_reply", "got \"wrapper(bool)\""),
            ("'a'", "got \"string\""),
            ("_flow.verdict", "got \"int\""),
            ("flows.verdict == 1", "undeclared reference to 'flows'"),
            ("Verdict.NOPE == 1", "undeclared reference"),
            ("_flow.source.labels.exists(l, l == 1)", "'(string, int)'"),
            (
                "lowerAscii(_flow.uuid) == ''",
                "undeclared reference to 'lowerAscii'",
            ),
            ("_flow.uuid && true", "'_&&_'"),
        ] {
            let err = checked(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
