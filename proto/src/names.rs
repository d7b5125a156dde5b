//! Cilium monitor event type numbers (`flow.event_type.type`) and their names,
//! as `hubble observe --type NAME` and the printers use them.

/// A packet dropped (by policy or by the kernel).
pub const EVENT_DROP: i32 = 1;
pub const EVENT_DEBUG: i32 = 2;
pub const EVENT_CAPTURE: i32 = 3;
/// A forwarded L3/L4 observation at a trace observation point.
pub const EVENT_TRACE: i32 = 4;
pub const EVENT_POLICY_VERDICT: i32 = 5;
pub const EVENT_TRACE_SOCK: i32 = 7;
/// An L7 (DNS, HTTP) record; Cilium calls it an access log.
pub const EVENT_L7: i32 = 129;
pub const EVENT_AGENT: i32 = 130;

/// `(name, number)` for every event type `--type` accepts, in Hubble's order.
pub const EVENT_TYPES: &[(&str, i32)] = &[
    ("drop", EVENT_DROP),
    ("debug", EVENT_DEBUG),
    ("capture", EVENT_CAPTURE),
    ("trace", EVENT_TRACE),
    ("policy-verdict", EVENT_POLICY_VERDICT),
    ("trace-sock", EVENT_TRACE_SOCK),
    ("l7", EVENT_L7),
    ("agent", EVENT_AGENT),
];

/// The number of an event type name (`"drop"` -> 1), case-insensitively.
pub fn event_type_number(name: &str) -> Option<i32> {
    EVENT_TYPES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, v)| v)
}

/// The name of an event type number (1 -> `"drop"`).
pub fn event_type_name(number: i32) -> Option<&'static str> {
    EVENT_TYPES
        .iter()
        .find(|&&(_, v)| v == number)
        .map(|&(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &(name, number) in EVENT_TYPES {
            assert_eq!(event_type_number(name), Some(number));
            assert_eq!(event_type_name(number), Some(name));
        }
        assert_eq!(event_type_number("DROP"), Some(1));
        assert_eq!(event_type_number("nope"), None);
    }
}
