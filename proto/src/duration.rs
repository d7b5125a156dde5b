//! Durations as every webb command line writes them, in Go's syntax (the
//! one Hubble's flags use): `250ms`, `5s`, `1h43m`, `1.5h`, `10us`, `0`.
//! One parser for the agent's, the relay's and the CLI's flags.

use std::time::Duration;

/// Parses a non-negative Go duration; `None` when it is not one.
pub fn parse(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_ns += n * unit;
    }
    if !total_ns.is_finite() || total_ns > i64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(total_ns.round() as u64))
}

/// The error a flag parser returns for a value that is not a duration.
pub fn error(s: &str) -> String {
    format!("{s:?} is not a duration (e.g. 500ms, 5s, 2m, 1h43m)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse("1h43m"), Some(Duration::from_secs(103 * 60)));
        assert_eq!(parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("10us"), Some(Duration::from_micros(10)));
        for bad in ["", "3", "h", "3x", "-3s", "10parsecs", "1h-2m"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
