//! Well-known protobuf types as the generated code uses them.
//!
//! Everything comes from `pbjson_types` except [`Timestamp`]: Hubble (Go's
//! protojson) writes times in UTC with a `Z` and 0, 3, 6 or 9 fractional digits,
//! and jq scripts compare those strings, so webb writes exactly that.

use std::fmt;

use chrono::{DateTime, Datelike as _, Timelike as _, Utc};
pub use pbjson_types::{
    Any, BoolValue, BytesValue, DoubleValue, Duration, FieldMask, FloatValue, Int32Value,
    Int64Value, StringValue, UInt32Value, UInt64Value,
};

/// `google.protobuf.Timestamp`, with protojson's string form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// Nanoseconds since the Unix epoch (saturating outside i64's range).
    pub fn as_nanos(&self) -> i128 {
        i128::from(self.seconds) * 1_000_000_000 + i128::from(self.nanos)
    }

    pub fn from_nanos(nanos: i128) -> Self {
        let seconds = nanos.div_euclid(1_000_000_000);
        let nanos = nanos.rem_euclid(1_000_000_000);
        Self {
            seconds: seconds.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            nanos: nanos as i32,
        }
    }

    pub fn to_datetime(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.seconds, self.nanos.clamp(0, 999_999_999) as u32)
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Self {
        Self {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        }
    }
}

impl From<std::time::SystemTime> for Timestamp {
    fn from(t: std::time::SystemTime) -> Self {
        DateTime::<Utc>::from(t).into()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(t) = self.to_datetime() else {
            return write!(f, "invalid timestamp {}s {}ns", self.seconds, self.nanos);
        };
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )?;
        let n = t.nanosecond();
        if n == 0 {
        } else if n % 1_000_000 == 0 {
            write!(f, ".{:03}", n / 1_000_000)?;
        } else if n % 1_000 == 0 {
            write!(f, ".{:06}", n / 1_000)?;
        } else {
            write!(f, ".{n:09}")?;
        }
        f.write_str("Z")
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let t = DateTime::parse_from_rfc3339(&s).map_err(|e| {
            serde::de::Error::custom(format!("invalid RFC 3339 timestamp {s:?}: {e}"))
        })?;
        Ok(t.with_timezone(&Utc).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_protojson_digits() {
        let cases = [
            (0, "2024-01-02T03:04:05Z"),
            (123_000_000, "2024-01-02T03:04:05.123Z"),
            (123_456_000, "2024-01-02T03:04:05.123456Z"),
            (123_456_789, "2024-01-02T03:04:05.123456789Z"),
        ];
        for (nanos, want) in cases {
            let t = Timestamp {
                seconds: 1_704_164_645,
                nanos,
            };
            assert_eq!(t.to_string(), want);
            let back: Timestamp = serde_json::from_str(&format!("\"{want}\"")).unwrap();
            assert_eq!(back, t);
        }
    }

    #[test]
    fn reads_offsets() {
        let t: Timestamp = serde_json::from_str("\"2024-01-02T04:04:05+01:00\"").unwrap();
        assert_eq!(t.to_string(), "2024-01-02T03:04:05Z");
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
