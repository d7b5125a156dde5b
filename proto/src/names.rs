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

/// Cilium's trace observation point names by trace sub type, as the compact
/// printer shows them (`to-endpoint`) and `--type trace:NAME` accepts them.
pub const TRACE_POINTS: &[(&str, i32)] = &[
    ("to-endpoint", 0),
    ("to-proxy", 1),
    ("to-host", 2),
    ("to-stack", 3),
    ("to-overlay", 4),
    ("from-endpoint", 5),
    ("from-proxy", 6),
    ("from-host", 7),
    ("from-stack", 8),
    ("from-overlay", 9),
    ("from-network", 10),
    ("to-network", 11),
    ("from-crypto", 12),
    ("to-crypto", 13),
];

/// The name of a trace sub type (3 -> `"to-stack"`).
pub fn trace_point_name(sub_type: i32) -> Option<&'static str> {
    TRACE_POINTS
        .iter()
        .find(|&&(_, v)| v == sub_type)
        .map(|&(n, _)| n)
}

/// Cilium's reserved identities, printed as `(world)` instead of `(ID:2)`.
pub fn reserved_identity_name(identity: u32) -> Option<&'static str> {
    Some(match identity {
        0 => "unknown",
        1 => "host",
        2 => "world",
        3 => "unmanaged",
        4 => "health",
        5 => "init",
        6 => "remote-node",
        7 => "kube-apiserver",
        8 => "ingress",
        9 => "world-ipv4",
        10 => "world-ipv6",
        _ => return None,
    })
}

/// Cilium's description of a drop reason code (the `drop` event sub type and
/// `flow.drop_reason`), which Hubble's printers show: 133 -> "Policy denied".
pub fn drop_reason_text(code: u32) -> Option<&'static str> {
    Some(match code {
        0 => "Success",
        2 | 134 => "Invalid packet",
        // Cilium's table has its notification codes too, and Hubble's
        // printers name a drop event's sub type from that table.
        3 => "Interface",
        4 => "Interface Decrypted",
        5 => "LB, sock cgroup: No backend slot entry found",
        6 => "LB, sock cgroup: No backend entry found",
        7 => "LB, sock cgroup: Reverse entry update failed",
        8 => "LB, sock cgroup: Reverse entry stale",
        9 => "Fragmented packet",
        10 => "Fragmented packet entry update failed",
        11 => "Missed tail call to custom program",
        12 => "Interface Decrypting",
        13 => "Interface Encrypting",
        14 => "LB: sock cgroup: Reverse entry delete succeeded",
        15 => "MTU error message",
        130 => "Invalid source mac",
        131 => "Invalid destination mac",
        132 => "Invalid source ip",
        133 => "Policy denied",
        135 => "CT: Truncated or invalid header",
        136 => "Fragmentation needed",
        137 => "CT: Unknown L4 protocol",
        138 => "CT: Can't create entry from packet",
        139 => "Unsupported L3 protocol",
        140 => "Missed tail call",
        141 => "Error writing to packet",
        142 => "Unknown L4 protocol",
        143 => "Unknown ICMPv4 code",
        144 => "Unknown ICMPv4 type",
        145 => "Unknown ICMPv6 code",
        146 => "Unknown ICMPv6 type",
        147 => "Error retrieving tunnel key",
        148 => "Error retrieving tunnel options",
        149 => "Invalid Geneve option",
        150 => "Unknown L3 target address",
        151 => "Stale or unroutable IP",
        152 => "No matching local container found",
        153 => "Error while correcting L3 checksum",
        154 => "Error while correcting L4 checksum",
        155 => "CT: Map insertion failed",
        156 => "Invalid IPv6 extension header",
        157 => "IP fragmentation not supported",
        158 => "Service backend not found",
        160 => "No tunnel/encapsulation endpoint (datapath BUG!)",
        161 => "NAT 46/64 not enabled",
        162 => "Reached EDT rate-limiting drop horizon",
        163 => "Unknown connection tracking state",
        164 => "Local host is unreachable",
        165 => "No configuration available to perform policy decision",
        166 => "Unsupported L2 protocol",
        167 => "No mapping for NAT masquerade",
        168 => "Unsupported protocol for NAT masquerade",
        169 => "FIB lookup failed",
        170 => "Encapsulation traffic is prohibited",
        171 => "Invalid identity",
        172 => "Unknown sender",
        173 => "NAT not needed",
        174 => "Is a ClusterIP",
        175 => "First logical datagram fragment not found",
        176 => "Forbidden ICMPv6 message",
        177 => "Denied by LB src range check",
        178 => "Socket lookup failed",
        179 => "Socket assign failed",
        180 => "Proxy redirection not supported for protocol",
        181 => "Policy denied by denylist",
        182 => "VLAN traffic disallowed by VLAN filter",
        183 => "Incorrect VNI from VTEP",
        184 => "Failed to update or lookup TC buffer",
        185 => "No SID was found for the IP address",
        186 => "SRv6 state was removed during tail call",
        187 => "L3 translation from IPv4 to IPv6 failed (NAT46)",
        188 => "L3 translation from IPv6 to IPv4 failed (NAT64)",
        189 => "Authentication required",
        190 => "No conntrack map found",
        191 => "No nat map found",
        192 => "Invalid ClusterID",
        193 => "Unsupported packet protocol for DSR encapsulation",
        194 => "No egress gateway found",
        195 => "Traffic is unencrypted",
        196 => "TTL exceeded",
        197 => "No node ID found",
        198 => "Rate limited",
        199 => "IGMP handled",
        200 => "IGMP subscribed",
        201 => "Multicast handled",
        202 => "Host datapath not ready",
        203 => "Endpoint policy program not available",
        204 => "No Egress IP configured",
        205 => "Punt to proxy",
        _ => return None,
    })
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

    #[test]
    fn every_drop_reason_enum_value_has_a_text() {
        for code in 130..=205u32 {
            if crate::flow::DropReason::try_from(code as i32).is_ok() {
                assert!(drop_reason_text(code).is_some(), "{code}");
            }
        }
        assert_eq!(drop_reason_text(133), Some("Policy denied"));
        assert_eq!(trace_point_name(3), Some("to-stack"));
        assert_eq!(reserved_identity_name(2), Some("world"));
    }
}
