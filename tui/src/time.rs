//! Times as `--since` and `--until` take them, and as the printers show them.
//!
//! Accepted exactly as Hubble accepts them (hubble/pkg/time's FromString):
//! a Go duration (`3s`, `4m`, `1h43m`, `1.5h`, `-5m`), meaning that long
//! before now (a negative one is after now); or a time in one of Hubble's
//! layouts, read as Go's time.Parse reads them: YearMonthDay
//! (`2024-01-02`), YearMonthDayHour (`2024-01-02T03Z`,
//! `2024-01-02T03+01:00`), YearMonthDayHourMinute (`2024-01-02T03:04Z`),
//! RFC 3339 with any fraction (`2024-01-02T03:04:05.123Z`) and RFC1123Z
//! (`Tue, 02 Jan 2024 03:04:05 +0000`). Anything else Hubble rejects, and so
//! does webb.

use std::sync::OnceLock;

use chrono::{
    DateTime, NaiveDate, TimeDelta, Utc,
    format::{Item, StrftimeItems},
};

pub const FORMATS_HELP: &str = "a duration before now (3s, 4m, 1h43m) or a time (2024-01-02, 2024-01-02T03Z, 2024-01-02T03:04Z, RFC 3339 like 2024-01-02T03:04:05.123+01:00, or RFC1123Z like Tue, 02 Jan 2024 03:04:05 +0000)";

/// Parses a Go duration with an optional sign (`1h43m`, `-3s`, `1.5h`).
pub fn parse_duration(s: &str) -> Option<TimeDelta> {
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.starts_with(['-', '+']) || rest.trim() != rest {
        return None;
    }
    let d = TimeDelta::from_std(webb_proto::duration::parse(rest)?).ok()?;
    Some(if neg { -d } else { d })
}

/// Parses a `--since`/`--until` value relative to `now`, as Hubble does: a
/// duration is subtracted from now (so `-5m` is five minutes ahead), else
/// the first of Hubble's layouts that reads the whole value wins.
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Some(d) = parse_duration(s) {
        return now.checked_sub_signed(d);
    }
    // Hubble's layouts (hubble/pkg/time), in Go's notation. RFC3339Milli,
    // Micro and Nano parse as RFC3339 does (any fraction after seconds).
    const LAYOUTS: [&str; 5] = [
        "2006-01-02",
        "2006-01-02T15Z07:00",
        "2006-01-02T15:04Z07:00",
        "2006-01-02T15:04:05Z07:00",
        "Mon, 02 Jan 2006 15:04:05 -0700",
    ];
    LAYOUTS.iter().find_map(|l| go_parse(&layout(l), s))
}

/// One element of a Go time layout, as far as Hubble's layouts use them.
#[derive(Debug, Clone, Copy)]
enum Elem {
    /// Text that must be there; a space matches one or more spaces.
    Lit(&'static str),
    /// `2006`: four digits.
    Year,
    /// `01`: two digits, 1 to 12.
    Month,
    /// `Jan`: a month's short name, in any case.
    MonthName,
    /// `Mon`: a weekday's short name, in any case; read and not checked.
    WeekdayName,
    /// `02`: two digits, a day of that month.
    Day,
    /// `15`: one or two digits, 0 to 23.
    Hour,
    /// `04`: two digits, 0 to 59.
    Minute,
    /// `05`: two digits, 0 to 59, then an optional fraction (`.` or `,`
    /// and any number of digits; Go keeps nine).
    Second,
    /// `Z07:00`: `Z`, or a sign, two digits, `:`, two digits.
    ColonZone,
    /// `-0700`: a sign and four digits.
    NumZone,
}

/// A Go layout as its elements: the reference time's parts Hubble's
/// layouts use, and the text between them.
fn layout(l: &'static str) -> Vec<Elem> {
    const PARTS: [(&str, Elem); 10] = [
        ("2006", Elem::Year),
        ("Z07:00", Elem::ColonZone),
        ("-0700", Elem::NumZone),
        ("Mon", Elem::WeekdayName),
        ("Jan", Elem::MonthName),
        ("01", Elem::Month),
        ("02", Elem::Day),
        ("15", Elem::Hour),
        ("04", Elem::Minute),
        ("05", Elem::Second),
    ];
    let mut out = Vec::new();
    let (mut i, mut lit) = (0, 0);
    while i < l.len() {
        match PARTS.iter().find(|(p, _)| l[i..].starts_with(p)) {
            Some((p, e)) => {
                if lit < i {
                    out.push(Elem::Lit(&l[lit..i]));
                }
                out.push(*e);
                i += p.len();
                lit = i;
            }
            None => i += 1,
        }
    }
    if lit < l.len() {
        out.push(Elem::Lit(&l[lit..]));
    }
    out
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// Go's getnum: one or two leading digits (exactly two when `fixed`).
fn go_num(v: &str, fixed: bool) -> Option<(u32, &str)> {
    let b = v.as_bytes();
    let digit = |i: usize| {
        b.get(i)
            .filter(|c| c.is_ascii_digit())
            .map(|c| u32::from(c - b'0'))
    };
    let first = digit(0)?;
    match digit(1) {
        Some(second) => Some((first * 10 + second, &v[2..])),
        None if fixed => None,
        None => Some((first, &v[1..])),
    }
}

/// A short name from `names` at the start of `v`, compared without case.
fn go_name<'a>(names: &[&str], v: &'a str) -> Option<(usize, &'a str)> {
    names
        .iter()
        .position(|n| v.get(..n.len()).is_some_and(|p| p.eq_ignore_ascii_case(n)))
        .map(|i| (i, &v[names[i].len()..]))
}

/// A zone offset `+hh:mm` (colon) or `+hhmm` at the start of `v`, in
/// seconds east of UTC; Go takes hours up to 24 and minutes up to 60.
fn go_zone(v: &str, colon: bool) -> Option<(i32, &str)> {
    let len = if colon { 6 } else { 5 };
    let z = v.get(..len)?;
    let sign = match z.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (hh, mm) = if colon {
        if z.as_bytes()[3] != b':' {
            return None;
        }
        (&z[1..3], &z[4..6])
    } else {
        (&z[1..3], &z[3..5])
    };
    let (h, _) = go_num(hh, true)?;
    let (m, _) = go_num(mm, true)?;
    if h > 24 || m > 60 {
        return None;
    }
    Some((sign * (h as i32 * 3600 + m as i32 * 60), &v[len..]))
}

/// Go's time.Parse of `value` by `layout`, for the elements above; the
/// whole value must be read.
fn go_parse(layout: &[Elem], value: &str) -> Option<DateTime<Utc>> {
    let (mut year, mut month, mut day) = (None, None, None);
    let (mut hour, mut minute, mut second, mut nanos, mut offset) = (0, 0, 0, 0u32, 0i32);
    let mut v = value;
    for e in layout {
        match *e {
            Elem::Lit(lit) => {
                let mut l = lit;
                while let Some(c) = l.chars().next() {
                    if c == ' ' {
                        if !v.is_empty() && !v.starts_with(' ') {
                            return None;
                        }
                        l = l.trim_start_matches(' ');
                        v = v.trim_start_matches(' ');
                        continue;
                    }
                    v = v.strip_prefix(c)?;
                    l = &l[c.len_utf8()..];
                }
            }
            Elem::Year => {
                let y = v
                    .get(..4)
                    .filter(|y| y.bytes().all(|c| c.is_ascii_digit()))?;
                year = Some(y.parse::<i32>().ok()?);
                v = &v[4..];
            }
            Elem::Month => {
                let (m, rest) = go_num(v, true)?;
                if !(1..=12).contains(&m) {
                    return None;
                }
                month = Some(m);
                v = rest;
            }
            Elem::MonthName => {
                let (i, rest) = go_name(&MONTHS, v)?;
                month = Some(i as u32 + 1);
                v = rest;
            }
            Elem::WeekdayName => v = go_name(&WEEKDAYS, v)?.1,
            Elem::Day => {
                let (d, rest) = go_num(v, true)?;
                day = Some(d);
                v = rest;
            }
            Elem::Hour => {
                let (h, rest) = go_num(v, false)?;
                if h > 23 {
                    return None;
                }
                hour = h;
                v = rest;
            }
            Elem::Minute | Elem::Second => {
                let (n, rest) = go_num(v, true)?;
                if n > 59 {
                    return None;
                }
                v = rest;
                if matches!(e, Elem::Minute) {
                    minute = n;
                    continue;
                }
                second = n;
                let b = v.as_bytes();
                if b.len() >= 2 && matches!(b[0], b'.' | b',') && b[1].is_ascii_digit() {
                    let digits = b[1..].iter().take_while(|c| c.is_ascii_digit()).count();
                    let mut frac: String = v[1..1 + digits].chars().take(9).collect();
                    while frac.len() < 9 {
                        frac.push('0');
                    }
                    nanos = frac.parse().ok()?;
                    v = &v[1 + digits..];
                }
            }
            Elem::ColonZone => {
                if let Some(rest) = v.strip_prefix('Z') {
                    v = rest;
                } else {
                    (offset, v) = go_zone(v, true)?;
                }
            }
            Elem::NumZone => (offset, v) = go_zone(v, false)?,
        }
    }
    if !v.is_empty() {
        return None;
    }
    // Go checks the day against the month (in that year).
    let date = NaiveDate::from_ymd_opt(year?, month?, day?)?;
    let t = date
        .and_hms_nano_opt(hour, minute, second, nanos)?
        .and_utc();
    t.checked_sub_signed(TimeDelta::seconds(i64::from(offset)))
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
        // Hubble subtracts the duration, so a negative one is ahead of now.
        assert_eq!(t("-4m").as_deref(), Some("2024-01-02T03:08:05+00:00"));
        assert_eq!(
            t("2024-01-01T00:00:00.5+01:00").as_deref(),
            Some("2023-12-31T23:00:00.500+00:00")
        );
        assert_eq!(
            t("2024-01-01T00:00:00,25Z").as_deref(),
            Some("2024-01-01T00:00:00.250+00:00")
        );
        assert_eq!(
            t("2024-01-01T10:11Z").as_deref(),
            Some("2024-01-01T10:11:00+00:00")
        );
        assert_eq!(
            t("2024-01-01T10-02:00").as_deref(),
            Some("2024-01-01T12:00:00+00:00")
        );
        assert_eq!(
            t("2024-01-01T9:11:12Z").as_deref(),
            Some("2024-01-01T09:11:12+00:00")
        );
        assert_eq!(
            t("2024-01-01").as_deref(),
            Some("2024-01-01T00:00:00+00:00")
        );
        assert_eq!(
            t("wed, 03 jan 2024 10:11:12 -0130").as_deref(),
            Some("2024-01-03T11:41:12+00:00")
        );
        assert_eq!(
            t("Mon,   03 Jan 2024 10:11:12 +0000").as_deref(),
            Some("2024-01-03T10:11:12+00:00")
        );
        // What Go's time.Parse refuses for every one of Hubble's layouts.
        for bad in [
            "yesterday",
            "2024-13-01",
            "2024-02-30",
            "2024-01-01T10:11",
            "2024-01-01 10:11:12",
            "1704164645",
            " 5m",
            "2024-01-01T24Z",
            "2024-01-01T10:11:12+0100",
            "2024-01-01t10:11:12Z",
            "24-01-01",
            "2024-1-01",
            "2024-01-01T10:11:12.Z",
            "Mar 14 21:40:30.000",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
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
