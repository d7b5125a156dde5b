//! Times as `--since` and `--until` take them, and as the printers show them.
//!
//! Accepted, like Hubble: a relative duration in Go's syntax (`3s`, `4m`,
//! `1h43m`, `1.5h`, `250ms`), meaning that long before now; RFC 3339 with any
//! fraction and offset (`2024-01-02T03:04:05.123Z`, `...+02:00`); and the
//! shorter forms `2024-01-02T03:04:05`, `2024-01-02T03:04`, `2024-01-02`,
//! `2024-01-02 03:04:05` (UTC when no offset is given); and a Unix time in
//! seconds (`1704164645` or `1704164645.5`).

use std::sync::OnceLock;

use chrono::{
    DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc,
    format::{Item, StrftimeItems},
};

pub const FORMATS_HELP: &str = "a duration before now (3s, 4m, 1h43m) or a time (RFC 3339 like 2024-01-02T03:04:05Z, 2024-01-02T03:04, 2024-01-02, or Unix seconds)";

/// Parses a Go duration with an optional sign (`1h43m`, `-3s`, `1.5h`).
pub fn parse_duration(s: &str) -> Option<TimeDelta> {
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.starts_with(['-', '+']) {
        return None;
    }
    let d = TimeDelta::from_std(webb_proto::duration::parse(rest)?).ok()?;
    Some(if neg { -d } else { d })
}

/// Parses a `--since`/`--until` value relative to `now`.
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Some(d) = parse_duration(s) {
        return now.checked_sub_signed(d.abs());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for layout in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, layout) {
            return Some(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    if let Ok(secs) = s.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        let whole = secs.trunc() as i64;
        let nanos = ((secs - secs.trunc()) * 1e9).round() as u32;
        return DateTime::from_timestamp(whole, nanos);
    }
    None
}

/// `--time-format`: Hubble's names, matched without regard to case; a name
/// Hubble does not know falls back to its default, StampMilli, as Hubble's
/// does (so `--time-format Kitchen` prints what `hubble` prints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeFormat {
    /// `2006-01-02`
    YearMonthDay,
    /// `2006-01-02T15Z07:00`
    YearMonthDayHour,
    /// `2006-01-02T15:04Z07:00`
    YearMonthDayHourMinute,
    /// `Jan _2 15:04:05.000`
    #[default]
    StampMilli,
    /// `2006-01-02T15:04:05Z07:00`
    Rfc3339,
    /// `2006-01-02T15:04:05.999Z07:00` (trailing zeros dropped)
    Rfc3339Milli,
    /// `2006-01-02T15:04:05.999999Z07:00`
    Rfc3339Micro,
    /// `2006-01-02T15:04:05.999999999Z07:00`
    Rfc3339Nano,
    /// `Mon, 02 Jan 2006 15:04:05 -0700`
    Rfc1123z,
}

/// The names `--time-format` documents, as Hubble lists them.
pub const TIME_FORMAT_NAMES: &[&str] = &[
    "YearMonthDay",
    "YearMonthDayHour",
    "YearMonthDayHourMinute",
    "StampMilli",
    "RFC3339",
    "RFC3339Milli",
    "RFC3339Micro",
    "RFC3339Nano",
    "RFC1123Z",
];

impl TimeFormat {
    const ALL: [TimeFormat; 9] = [
        Self::YearMonthDay,
        Self::YearMonthDayHour,
        Self::YearMonthDayHourMinute,
        Self::StampMilli,
        Self::Rfc3339,
        Self::Rfc3339Milli,
        Self::Rfc3339Micro,
        Self::Rfc3339Nano,
        Self::Rfc1123z,
    ];

    /// The format a `--time-format` value names; never fails (see the type).
    pub fn from_name(name: &str) -> Self {
        TIME_FORMAT_NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name.trim()))
            .map_or(Self::StampMilli, |i| Self::ALL[i])
    }

    /// A clap value parser for [`TimeFormat::from_name`].
    pub fn parse(name: &str) -> Result<Self, std::convert::Infallible> {
        Ok(Self::from_name(name))
    }

    pub fn format(self, t: DateTime<Utc>) -> String {
        // Go's `.999...` fractions drop trailing zeros, and the point with
        // them when none is left; the digits are cut, never rounded.
        let digits = match self {
            Self::Rfc3339Milli => 3,
            Self::Rfc3339Micro => 6,
            Self::Rfc3339Nano => 9,
            _ => 0,
        };
        if digits > 0 {
            let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
            let nanos = format!("{:09}", t.timestamp_subsec_nanos().min(999_999_999));
            let frac = nanos[..digits].trim_end_matches('0');
            if !frac.is_empty() {
                s.push('.');
                s.push_str(frac);
            }
            s.push('Z');
            return s;
        }
        // Parsed once per format: parsing the layout for every flow cost
        // more than formatting the time.
        static ITEMS: [OnceLock<Vec<Item<'static>>>; 9] = [const { OnceLock::new() }; 9];
        let items = ITEMS[self as usize].get_or_init(|| {
            StrftimeItems::new(self.layout())
                .parse_to_owned()
                .unwrap_or_default()
        });
        t.format_with_items(items.iter()).to_string()
    }

    fn layout(self) -> &'static str {
        match self {
            Self::YearMonthDay => "%Y-%m-%d",
            Self::YearMonthDayHour => "%Y-%m-%dT%HZ",
            Self::YearMonthDayHourMinute => "%Y-%m-%dT%H:%MZ",
            Self::StampMilli => "%b %e %H:%M:%S%.3f",
            Self::Rfc3339 => "%Y-%m-%dT%H:%M:%SZ",
            // Written by hand in `format`.
            Self::Rfc3339Milli | Self::Rfc3339Micro | Self::Rfc3339Nano => "",
            Self::Rfc1123z => "%a, %d %b %Y %H:%M:%S +0000",
        }
    }
}

/// Go's `time.Duration.String()` shape, truncated to seconds, as `hubble
/// list nodes` shows ages: `45s`, `3m7s`, `2h17m3s`.
pub fn age(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3s"), Some(TimeDelta::seconds(3)));
        assert_eq!(parse_duration("1h43m"), Some(TimeDelta::minutes(103)));
        assert_eq!(parse_duration("1.5h"), Some(TimeDelta::minutes(90)));
        assert_eq!(parse_duration("250ms"), Some(TimeDelta::milliseconds(250)));
        assert_eq!(parse_duration("-4m"), Some(TimeDelta::minutes(-4)));
        for bad in ["", "3", "h", "3x", "1h-2m", "--3s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn times() {
        let t = |s| parse_time(s, now()).map(|t| t.to_rfc3339());
        assert_eq!(t("4m").as_deref(), Some("2024-01-02T03:00:05+00:00"));
        assert_eq!(
            t("2024-01-01T00:00:00.5+01:00").as_deref(),
            Some("2023-12-31T23:00:00.500+00:00")
        );
        assert_eq!(
            t("2024-01-01T10:11").as_deref(),
            Some("2024-01-01T10:11:00+00:00")
        );
        assert_eq!(
            t("2024-01-01 10:11:12").as_deref(),
            Some("2024-01-01T10:11:12+00:00")
        );
        assert_eq!(
            t("2024-01-01").as_deref(),
            Some("2024-01-01T00:00:00+00:00")
        );
        assert_eq!(
            t("1704164645").as_deref(),
            Some("2024-01-02T03:04:05+00:00")
        );
        assert_eq!(t("yesterday"), None);
        assert_eq!(t("2024-13-01"), None);
    }

    #[test]
    fn formats_and_ages() {
        assert_eq!(TimeFormat::StampMilli.format(now()), "Jan  2 03:04:05.000");
        // Go's RFC3339Nano trims the fraction's trailing zeros.
        assert_eq!(
            TimeFormat::Rfc3339Nano.format(now()),
            "2024-01-02T03:04:05Z"
        );
        let at = |nanos| now() + chrono::TimeDelta::nanoseconds(nanos);
        assert_eq!(
            TimeFormat::Rfc3339Nano.format(at(745_958_340)),
            "2024-01-02T03:04:05.74595834Z"
        );
        assert_eq!(
            TimeFormat::Rfc3339Nano.format(at(1)),
            "2024-01-02T03:04:05.000000001Z"
        );
        assert_eq!(
            TimeFormat::Rfc3339Milli.format(at(500_250_000)),
            "2024-01-02T03:04:05.5Z"
        );
        assert_eq!(
            TimeFormat::Rfc3339Micro.format(at(250_000)),
            "2024-01-02T03:04:05.00025Z"
        );
        assert_eq!(
            TimeFormat::from_name("yearmonthdayhour").format(now()),
            "2024-01-02T03Z"
        );
        assert_eq!(
            TimeFormat::from_name("YearMonthDay").format(now()),
            "2024-01-02"
        );
        assert_eq!(
            TimeFormat::from_name("YEARMONTHDAYHOURMINUTE").format(now()),
            "2024-01-02T03:04Z"
        );
        // A name Hubble does not know is its default.
        assert_eq!(TimeFormat::from_name("Kitchen"), TimeFormat::StampMilli);
        assert_eq!(
            TimeFormat::from_name("rfc3339nano"),
            TimeFormat::Rfc3339Nano
        );
        assert_eq!(
            TimeFormat::Rfc1123z.format(now()),
            "Tue, 02 Jan 2024 03:04:05 +0000"
        );
        assert_eq!(age(std::time::Duration::from_secs(8223)), "2h17m3s");
        assert_eq!(age(std::time::Duration::from_secs(45)), "45s");
    }
}
