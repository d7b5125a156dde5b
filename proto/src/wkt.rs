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
        // The common case (1677-2262) without 128-bit division, which a
        // query over a big ring otherwise spends a tenth of its time in.
        if let Ok(n) = i64::try_from(nanos) {
            return Self {
                seconds: n.div_euclid(1_000_000_000),
                nanos: n.rem_euclid(1_000_000_000) as i32,
            };
        }
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

impl Timestamp {
    /// protojson's text, `2006-01-02T15:04:05[.000[000[000]]]Z`, in a stack
    /// buffer; None for a time outside years 0-9999 (or chrono's range).
    pub fn rfc3339(&self) -> Option<([u8; 30], usize)> {
        let t = self.to_datetime()?;
        (0..=9999).contains(&t.year()).then(|| digits(&t))
    }
}

/// The RFC 3339 text of `t`, its year's last four digits first: 0, 3, 6 or
/// 9 fractional digits, as many as the nanoseconds need, then `Z`.
fn digits(t: &DateTime<Utc>) -> ([u8; 30], usize) {
    fn put(out: &mut [u8], mut v: u32) {
        for d in out.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    let mut b = *b"0000-00-00T00:00:00.000000000Z";
    put(&mut b[0..4], t.year().rem_euclid(10_000) as u32);
    put(&mut b[5..7], t.month());
    put(&mut b[8..10], t.day());
    put(&mut b[11..13], t.hour());
    put(&mut b[14..16], t.minute());
    put(&mut b[17..19], t.second());
    let n = t.nanosecond().min(999_999_999);
    let len = if n == 0 {
        19
    } else if n.is_multiple_of(1_000_000) {
        put(&mut b[20..23], n / 1_000_000);
        23
    } else if n.is_multiple_of(1_000) {
        put(&mut b[20..26], n / 1_000);
        26
    } else {
        put(&mut b[20..29], n);
        29
    };
    b[len] = b'Z';
    (b, len + 1)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(t) = self.to_datetime() else {
            return write!(f, "invalid timestamp {}s {}ns", self.seconds, self.nanos);
        };
        let (b, len) = digits(&t);
        // Only ASCII digits and punctuation were written.
        let text = std::str::from_utf8(&b[..len]).unwrap_or_default();
        if (0..=9999).contains(&t.year()) {
            f.write_str(text)
        } else {
            // Beyond four digits the year is written whole.
            write!(f, "{:04}{}", t.year(), &text[4..])
        }
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
    fn the_fast_digits_match_chrono() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let t = Timestamp {
                // Years 1970 to ~2500, and a few beyond 9999 (the slow path).
                seconds: if i % 1000 == 0 {
                    300_000_000_000
                } else {
                    (x % 16_000_000_000) as i64
                },
                nanos: match i % 4 {
                    0 => 0,
                    1 => (x % 1000) as i32 * 1_000_000,
                    2 => (x % 1_000_000) as i32 * 1000,
                    _ => (x % 1_000_000_000) as i32,
                },
            };
            let dt = t.to_datetime().unwrap();
            if dt.year() > 9999 {
                // Beyond protojson's range: the slow path, as before.
                assert!(t.rfc3339().is_none());
                assert!(t.to_string().starts_with("11476-"));
                continue;
            }
            let want = dt.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            assert_eq!(t.to_string(), want);
        }
    }

    #[test]
    fn reads_offsets() {
        let t: Timestamp = serde_json::from_str("\"2024-01-02T04:04:05+01:00\"").unwrap();
        assert_eq!(t.to_string(), "2024-01-02T03:04:05Z");
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
