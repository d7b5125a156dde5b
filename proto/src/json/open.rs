//! Reading as Hubble's reader reads, for the generated readers (build.rs
//! rewrites pbjson's output to call these): an enum field takes any number
//! (a value from a newer Hubble is kept as its number, as protojson keeps
//! it) and a name this build does not know is noted and left at zero (as
//! protojson's DiscardUnknown leaves it); an unknown field is noted and
//! skipped. The first note of a parse is kept for the caller to report
//! ([`super::parse_line_noting`]).

use std::{cell::RefCell, fmt, marker::PhantomData};

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Unexpected,
    Visitor,
};

thread_local! {
    static NOTE: RefCell<Option<Note>> = const { RefCell::new(None) };
}

/// What a line held that this build does not know.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Note {
    UnknownField(String),
    /// An enum field (by its JSON name) with a value name it does not have.
    BadEnum {
        field: &'static str,
        value: String,
    },
}

impl Note {
    /// protojson's error for it, with the position of the token in `line`
    /// as Go writes it (`(line 1:COL): `, COL counting characters from 1)
    /// and the token as it is written there.
    pub(crate) fn describe(&self, line: &str) -> String {
        match self {
            Note::UnknownField(name) => match find_key(line, &[name.as_str()]) {
                Some((col, raw, _)) => format!("(line 1:{col}): unknown field {raw}"),
                None => format!("unknown field {name:?}"),
            },
            Note::BadEnum { field, value } => {
                let snake = camel_to_snake(field);
                let found = find_key(line, &[field, snake.as_str()])
                    .and_then(|(_, _, after)| string_token_equal_to(line, after, value));
                match found {
                    Some((col, raw)) => {
                        format!("(line 1:{col}): invalid value for enum field {field}: {raw}")
                    }
                    None => format!("invalid value for enum field {field}: {value:?}"),
                }
            }
        }
    }
}

/// `trafficDirection` -> `traffic_direction`.
fn camel_to_snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The raw JSON string token starting at byte `at` of `line` (quotes
/// included), if one starts there.
fn string_token(line: &str, at: usize) -> Option<&str> {
    let b = line.as_bytes();
    if b.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(&line[at..=i]),
            _ => i += 1,
        }
    }
    None
}

fn column(line: &str, at: usize) -> usize {
    line[..at].chars().count() + 1
}

/// The first object key in `line` that is one of `names`: its column, its
/// raw token, and the byte offset of its value.
fn find_key<'a>(line: &'a str, names: &[&str]) -> Option<(usize, &'a str, usize)> {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            let tok = string_token(line, i)?;
            let end = i + tok.len();
            let mut j = end;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if b.get(j) == Some(&b':') {
                let decoded: Option<String> = serde_json::from_str(tok).ok();
                if decoded.is_some_and(|d| names.contains(&d.as_str())) {
                    let mut v = j + 1;
                    while v < b.len() && b[v].is_ascii_whitespace() {
                        v += 1;
                    }
                    return Some((column(line, i), tok, v));
                }
            }
            i = end;
        } else {
            i += 1;
        }
    }
    None
}

/// The first string token at or after byte `from` (the value, or in a
/// list the element) that decodes to `value`: its column and raw text.
fn string_token_equal_to<'a>(line: &'a str, from: usize, value: &str) -> Option<(usize, &'a str)> {
    let b = line.as_bytes();
    let mut i = from;
    while i < b.len() {
        if b[i] == b'"' {
            let tok = string_token(line, i)?;
            if serde_json::from_str::<String>(tok).is_ok_and(|d| d == value) {
                return Some((column(line, i), tok));
            }
            i += tok.len();
        } else {
            i += 1;
        }
    }
    None
}

fn note(what: impl FnOnce() -> Note) {
    NOTE.with(|n| {
        let mut n = n.borrow_mut();
        if n.is_none() {
            *n = Some(what());
        }
    });
}

/// The first note since the last call.
pub(crate) fn take() -> Option<Note> {
    NOTE.with(|n| n.borrow_mut().take())
}

/// A field name the message does not have.
pub(crate) fn unknown_field(name: &str) {
    note(|| Note::UnknownField(name.to_owned()));
}

/// One enum field's value, by name or number.
pub(crate) fn enum_value<'de, T, A>(map: &mut A, field: &'static str) -> Result<i32, A::Error>
where
    T: DeserializeOwned + Into<i32>,
    A: MapAccess<'de>,
{
    map.next_value_seed(Enum::<T> {
        field,
        _t: PhantomData,
    })
}

/// A repeated enum field's values.
pub(crate) fn enum_values<'de, T, A>(map: &mut A, field: &'static str) -> Result<Vec<i32>, A::Error>
where
    T: DeserializeOwned + Into<i32>,
    A: MapAccess<'de>,
{
    map.next_value_seed(Enums::<T> {
        field,
        _t: PhantomData,
    })
}

struct Enum<T> {
    field: &'static str,
    _t: PhantomData<T>,
}

impl<T> Clone for Enum<T> {
    fn clone(&self) -> Self {
        Self {
            field: self.field,
            _t: PhantomData,
        }
    }
}

impl<'de, T: DeserializeOwned + Into<i32>> DeserializeSeed<'de> for Enum<T> {
    type Value = i32;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<i32, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: DeserializeOwned + Into<i32>> Visitor<'de> for Enum<T> {
    type Value = i32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an enum value name or number for {}", self.field)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i32, E> {
        match T::deserialize(de::value::StrDeserializer::<E>::new(v)) {
            Ok(t) => Ok(t.into()),
            Err(_) => {
                note(|| Note::BadEnum {
                    field: self.field,
                    value: v.to_owned(),
                });
                Ok(0)
            }
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i32, E> {
        i32::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i32, E> {
        i32::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_unit<E: de::Error>(self) -> Result<i32, E> {
        Ok(0)
    }
}

struct Enums<T> {
    field: &'static str,
    _t: PhantomData<T>,
}

impl<'de, T: DeserializeOwned + Into<i32>> DeserializeSeed<'de> for Enums<T> {
    type Value = Vec<i32>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<i32>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: DeserializeOwned + Into<i32>> Visitor<'de> for Enums<T> {
    type Value = Vec<i32>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of enum values for {}", self.field)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<i32>, A::Error> {
        let one = Enum::<T> {
            field: self.field,
            _t: PhantomData,
        };
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(one.clone())? {
            out.push(v);
        }
        Ok(out)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<i32>, E> {
        Ok(Vec::new())
    }
}

/// An enum value as protojson writes it: its name, or its number when this
/// build has no name for it (a value from a newer Hubble). build.rs makes
/// pbjson's generated writers use it.
pub(crate) enum EnumOut<T> {
    Name(T),
    Number(i32),
}

impl<T: serde::Serialize> serde::Serialize for EnumOut<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Name(t) => t.serialize(s),
            Self::Number(n) => s.serialize_i32(*n),
        }
    }
}

/// A number field as protojson reads it: a JSON number (an integer field
/// takes `12.0` and `1e3`, not `1.5`), or a string holding one, read as Go
/// reads it: the string's first JSON token, so `"12.0"`, `"1e3"` and
/// `"12\n7"` are 12, 1000 and 12, while `" 12"`, `"12abc"`, `"007"` and
/// `"+5"` are refused; a float field also takes `"NaN"`, `"Infinity"` and
/// `"-Infinity"`. build.rs makes pbjson's readers use it.
pub(crate) struct GoNumber<T>(pub T);

pub(crate) trait GoNum: Sized {
    const NAME: &'static str;
    /// From the text of a JSON number literal.
    fn from_literal(lit: &str) -> Option<Self>;
    fn from_f64(v: f64) -> Option<Self>;
    fn from_special(_s: &str) -> Option<Self> {
        None
    }
}

/// The length of the JSON number at the start of `s` (Go's parseNumber:
/// the byte after it must not continue a word).
fn number_len(s: &[u8]) -> Option<usize> {
    let digit = |i: usize| s.get(i).is_some_and(u8::is_ascii_digit);
    let mut n = usize::from(s.first() == Some(&b'-'));
    match s.get(n) {
        Some(b'0') => n += 1,
        Some(b'1'..=b'9') => {
            while digit(n) {
                n += 1;
            }
        }
        _ => return None,
    }
    if s.get(n) == Some(&b'.') && digit(n + 1) {
        n += 1;
        while digit(n) {
            n += 1;
        }
    }
    if matches!(s.get(n), Some(b'e' | b'E')) && s.len() >= n + 2 {
        n += 1;
        if matches!(s.get(n), Some(b'+' | b'-')) {
            n += 1;
            if n >= s.len() {
                return None;
            }
        }
        while digit(n) {
            n += 1;
        }
    }
    match s.get(n) {
        Some(&c) if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.' | b'_') => None,
        _ => Some(n),
    }
}

/// Go's normalizeToIntString: the integer a number literal spells, as
/// decimal text (with its sign), or None when it has a fraction.
fn integer_text(lit: &str) -> Option<String> {
    let (neg, rest) = match lit.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, lit),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i32>().ok()?),
        None => (rest, 0),
    };
    let (intp, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let frac = frac.trim_end_matches('0');
    let mut num = String::new();
    if intp.is_empty() && frac.is_empty() {
        num.push('0');
    } else if exp >= 0 {
        let exp = exp as usize;
        if frac.len() > exp || intp.len() + exp > 20 {
            return None;
        }
        num.push_str(intp);
        num.push_str(frac);
        num.extend(std::iter::repeat_n('0', exp - frac.len()));
    } else {
        if !frac.is_empty() {
            return None;
        }
        let index = intp.len().checked_sub(exp.unsigned_abs() as usize)?;
        if intp[index..].bytes().any(|c| c != b'0') {
            return None;
        }
        num.push_str(&intp[..index]);
    }
    // A negative zero is zero, even for an unsigned field.
    let zero = num.bytes().all(|c| c == b'0');
    Some(if neg && !zero { format!("-{num}") } else { num })
}

macro_rules! go_int {
    ($t:ty, $name:literal) => {
        impl GoNum for $t {
            const NAME: &'static str = $name;
            fn from_literal(lit: &str) -> Option<Self> {
                integer_text(lit)?.parse().ok()
            }
            fn from_f64(v: f64) -> Option<Self> {
                (v.fract() == 0.0 && v >= <$t>::MIN as f64 && v <= <$t>::MAX as f64)
                    .then_some(v as $t)
            }
        }
    };
}
go_int!(i32, "int32");
go_int!(i64, "int64");
go_int!(u32, "uint32");
go_int!(u64, "uint64");

macro_rules! go_float {
    ($t:ty, $name:literal) => {
        impl GoNum for $t {
            const NAME: &'static str = $name;
            fn from_literal(lit: &str) -> Option<Self> {
                let v: f64 = lit.parse().ok()?;
                Self::from_f64(v)
            }
            fn from_f64(v: f64) -> Option<Self> {
                let t = v as $t;
                (t.is_finite() || !v.is_finite()).then_some(t)
            }
            fn from_special(s: &str) -> Option<Self> {
                match s {
                    "NaN" => Some(<$t>::NAN),
                    "Infinity" => Some(<$t>::INFINITY),
                    "-Infinity" => Some(<$t>::NEG_INFINITY),
                    _ => None,
                }
            }
        }
    };
}
go_float!(f32, "float");
go_float!(f64, "double");

impl<'de, T: GoNum> serde::Deserialize<'de> for GoNumber<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: GoNum> Visitor<'de> for V<T> {
            type Value = GoNumber<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a {} as a number or a string", T::NAME)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::from_literal(&v.to_string())
                    .map(GoNumber)
                    .ok_or_else(|| E::invalid_value(Unexpected::Unsigned(v), &self))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::from_literal(&v.to_string())
                    .map(GoNumber)
                    .ok_or_else(|| E::invalid_value(Unexpected::Signed(v), &self))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                T::from_f64(v)
                    .map(GoNumber)
                    .ok_or_else(|| E::invalid_value(Unexpected::Float(v), &self))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                let bad = || E::invalid_value(Unexpected::Str(s), &self);
                if s.trim() != s {
                    return Err(bad());
                }
                if let Some(t) = T::from_special(s) {
                    return Ok(GoNumber(t));
                }
                let n = number_len(s.as_bytes()).ok_or_else(bad)?;
                T::from_literal(&s[..n]).map(GoNumber).ok_or_else(bad)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_say_where_as_protojson_does() {
        let line =
            r#"{"flow":{"time":"2025-03-14T21:40:00Z","verdict":"NEWVERDICT","new_field":1}}"#;
        let bad = Note::BadEnum {
            field: "verdict",
            value: "NEWVERDICT".into(),
        };
        assert_eq!(
            bad.describe(line),
            r#"(line 1:50): invalid value for enum field verdict: "NEWVERDICT""#
        );
        let line = r#"{"flow":{"time":"x", "new_field":{"a":1}}}"#;
        assert_eq!(
            Note::UnknownField("new_field".into()).describe(line),
            r#"(line 1:22): unknown field "new_field""#
        );
        // The snake-case key of a camel-case JSON name, the token as
        // written (escapes kept), the column in characters.
        let line = r#"{"node_name":"é","flow":{"traffic_direction" : "IN\u001bGRESS"}}"#;
        let bad = Note::BadEnum {
            field: "trafficDirection",
            value: "IN\u{1b}GRESS".into(),
        };
        assert_eq!(
            bad.describe(line),
            r#"(line 1:48): invalid value for enum field trafficDirection: "IN\u001bGRESS""#
        );
    }

    #[test]
    fn numbers_as_protojson_reads_them() {
        let u = |s: &str| serde_json::from_str::<GoNumber<u64>>(s).ok().map(|n| n.0);
        assert_eq!(u("12"), Some(12));
        assert_eq!(u("12.0"), Some(12));
        assert_eq!(u("1e3"), Some(1000));
        assert_eq!(u("1.5"), None);
        assert_eq!(u(r#""12""#), Some(12));
        assert_eq!(u(r#""12\n7""#), Some(12));
        assert_eq!(u(r#""12}""#), Some(12));
        assert_eq!(u(r#""50e-1""#), Some(5));
        assert_eq!(u(r#""-0""#), Some(0));
        for bad in [
            r#"" 12""#,
            r#""12 ""#,
            r#""12abc""#,
            r#""007""#,
            r#""+5""#,
            r#""""#,
            r#""-1""#,
        ] {
            assert_eq!(u(bad), None, "{bad}");
        }
        let i = |s: &str| serde_json::from_str::<GoNumber<i32>>(s).ok().map(|n| n.0);
        assert_eq!(i(r#""-7""#), Some(-7));
        assert_eq!(i("4294967296"), None);
        let f = |s: &str| serde_json::from_str::<GoNumber<f64>>(s).ok().map(|n| n.0);
        assert_eq!(f(r#""Infinity""#), Some(f64::INFINITY));
        assert_eq!(f(r#""0.5""#), Some(0.5));
    }
}
