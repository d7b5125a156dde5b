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
    static NOTE: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn note(what: impl FnOnce() -> String) {
    NOTE.with(|n| {
        let mut n = n.borrow_mut();
        if n.is_none() {
            *n = Some(what());
        }
    });
}

/// The first note since the last call.
pub(crate) fn take() -> Option<String> {
    NOTE.with(|n| n.borrow_mut().take())
}

/// A field name the message does not have.
pub(crate) fn unknown_field(name: &str) {
    note(|| format!("unknown field {name:?}"));
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
                note(|| format!("invalid value for enum field {}: {v:?}", self.field));
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
