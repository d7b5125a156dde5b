//! Plain explanations of drop reasons for the drop panel: what the reason
//! means and what to check. Keys are Hubble's `DropReason` names and the
//! kernel's `enum skb_drop_reason` names (as the agent reports them in
//! `webb_kernel_drop_reason`).

pub struct Explanation {
    pub meaning: &'static str,
    pub check: &'static str,
}

const fn e(meaning: &'static str, check: &'static str) -> Explanation {
    Explanation { meaning, check }
}

const NO_ROUTE: Explanation = e(
    "The kernel had no route for the destination address.",
    "`ip route get <destination>` inside the sender's namespace; a missing default route or a deleted interface route.",
);
const NEIGHBOUR: Explanation = e(
    "The next hop's link-layer address could not be resolved (ARP or neighbour discovery failed or its queue overflowed).",
    "Is the next hop up? `ip neigh` in the sender's namespace shows FAILED or INCOMPLETE entries.",
);
const BAD_PACKET: Explanation = e(
    "The packet was malformed: too short, truncated headers or a bad checksum.",
    "A broken sender, a middlebox rewriting packets, or offload bugs; capture it with tcpdump on both ends.",
);
const TCP_STATE: Explanation = e(
    "TCP discarded a segment that did not fit the connection's state (old data, outside the window, bad flags or sequence).",
    "Usually harmless retransmits; many of them point at a conntrack or NAT table that forgot the connection, or asymmetric routing.",
);
const POLICY: Explanation = e(
    "A network policy denied the packet.",
    "The policy named in the pair's POLICY column (or `webb observe --verdict DROPPED -o json | jq '.flow.ingress_denied_by, .flow.egress_denied_by'`); allow the peer, or fix the label selector.",
);
const TC_FILTER: Explanation = e(
    "A traffic-control (tc/tcx) program or filter dropped the packet.",
    "`tc filter show dev <interface> ingress|egress` and `bpftool net` list what is attached; webb's own policy map reports POLICY_DENIED instead.",
);
const SOURCE: Explanation = e(
    "The source address failed validation (reverse-path filter, or a source that cannot be valid here).",
    "`sysctl net.ipv4.conf.<interface>.rp_filter`; asymmetric routes or a spoofed / misconfigured source address.",
);
const FRAGMENT: Explanation = e(
    "IP fragments could not be reassembled (duplicates, timeouts, or too many).",
    "Path MTU problems: lower the MTU or make sure ICMP 'fragmentation needed' reaches the sender.",
);

/// The explanation of a drop reason, if there is one for it.
pub fn explain(reason: &str) -> Option<&'static Explanation> {
    Some(match reason {
        "POLICY_DENIED" | "POLICY_DENY" | "AUTH_REQUIRED" => &POLICY,
        "NETFILTER_DROP" => {
            &const {
                e(
                    "An iptables or nftables rule dropped the packet.",
                    "`nft list ruleset` or `iptables-save` on the node; look for DROP/REJECT rules matching the pair.",
                )
            }
        }
        "TC_INGRESS" | "TC_EGRESS" | "TCX_INGRESS" | "TCX_EGRESS" => &TC_FILTER,
        "NO_SOCKET" | "SOCKET_LOOKUP_FAILED" => {
            &const {
                e(
                    "The packet reached the host but no socket was listening on that port (or the connection is gone).",
                    "Is the server running and listening on the destination port (`ss -ltnup` in its namespace)? A wrong port in the client, or a server that restarted.",
                )
            }
        }
        "SOCKET_FILTER" => {
            &const {
                e(
                    "A socket filter (SO_ATTACH_FILTER / a cgroup or socket BPF program) rejected the packet.",
                    "The receiving program's socket filters and `bpftool cgroup tree`.",
                )
            }
        }
        "SOCKET_RCVBUFF" | "SOCKET_BACKLOG" | "PROTO_MEM" | "TCP_LISTEN_OVERFLOW" => {
            &const {
                e(
                    "The receiving socket was full: the application is not reading fast enough, or its accept queue overflowed.",
                    "The server's CPU and its read loop; `ss -ltn` (Recv-Q vs Send-Q) and raising the listen backlog or socket buffers.",
                )
            }
        }
        "IP_NOROUTE" | "IP_INNOROUTES" | "IP_OUTNOROUTES" | "FIB_LOOKUP_FAILED" => &NO_ROUTE,
        "NEIGH_FAILED"
        | "NEIGH_CREATEFAIL"
        | "NEIGH_DEAD"
        | "NEIGH_QUEUEFULL"
        | "LOCAL_HOST_IS_UNREACHABLE" => &NEIGHBOUR,
        "PKT_TOO_SMALL"
        | "HDR_TRUNC"
        | "IP_INHDR"
        | "IP_CSUM"
        | "TCP_CSUM"
        | "UDP_CSUM"
        | "ICMP_CSUM"
        | "SKB_CSUM"
        | "INVALID_PROTO"
        | "INVALID_PACKET_DROPPED"
        | "CT_TRUNCATED_OR_INVALID_HEADER" => &BAD_PACKET,
        "PKT_TOO_BIG" | "FRAG_NEEDED" => {
            &const {
                e(
                    "The packet was larger than the MTU and could not be fragmented.",
                    "The MTU of each hop (`ip link`); make sure ICMP 'packet too big' reaches the sender, or lower the MTU / MSS.",
                )
            }
        }
        "DUP_FRAG" | "FRAG_REASM_TIMEOUT" | "FRAG_TOO_FAR" => &FRAGMENT,
        "TCP_INVALID_SEQUENCE"
        | "TCP_OLD_DATA"
        | "TCP_OVERWINDOW"
        | "TCP_FLAGS"
        | "TCP_INVALID_SYN"
        | "TCP_OLD_SEQUENCE"
        | "TCP_OLD_ACK"
        | "TCP_TOO_OLD_ACK"
        | "TCP_ACK_UNSENT_DATA"
        | "TCP_RFC7323_PAWS"
        | "TCP_ZEROWINDOW"
        | "TCP_OFOMERGE"
        | "TCP_CLOSE"
        | "TCP_RESET"
        | "UNKNOWN_CONNECTION_TRACKING_STATE" => &TCP_STATE,
        "IP_RPFILTER" | "IP_INVALID_SOURCE" | "INVALID_SOURCE_IP" | "IP_LOCAL_SOURCE" => &SOURCE,
        "IP_INADDRERRORS" | "IP_INVALID_DEST" | "UNKNOWN_L3_TARGET_ADDRESS" => {
            &const {
                e(
                    "The destination address was not valid for this host (not local, not routable, or a martian).",
                    "The destination IP in the pair: a stale DNS answer or a pod IP that no longer exists.",
                )
            }
        }
        "OTHERHOST" => {
            &const {
                e(
                    "The frame was addressed to another host's MAC address and was not for this one.",
                    "Normal on shared segments; many of them mean a stale ARP/neighbour entry pointing here.",
                )
            }
        }
        "UNHANDLED_PROTO" | "IP_NOPROTO" | "UNKNOWN_L4_PROTOCOL" | "UNKNOWN_L3_PROTOCOL" => {
            &const {
                e(
                    "Nothing on the host handles this protocol.",
                    "A missing kernel module (e.g. SCTP) or traffic that should not reach this host.",
                )
            }
        }
        "QDISC_DROP" | "CPU_BACKLOG" | "DEV_READY" | "FULL_RING" | "TXQUEUE_FULL" => {
            &const {
                e(
                    "A queue was full: the interface's queueing discipline or a CPU's receive backlog.",
                    "`tc -s qdisc` drops and `/proc/net/softnet_stat`; a traffic burst or a too-small queue (`net.core.netdev_max_backlog`).",
                )
            }
        }
        "IPV6DISABLED" => {
            &const {
                e(
                    "IPv6 is disabled on the receiving interface.",
                    "`sysctl net.ipv6.conf.<interface>.disable_ipv6`; a client preferring an AAAA answer.",
                )
            }
        }
        "XDP" => {
            &const {
                e(
                    "An XDP program dropped the packet.",
                    "`bpftool net` lists XDP programs on the interfaces.",
                )
            }
        }
        "NOT_SPECIFIED" | "UNKNOWN" => {
            &const {
                e(
                    "The kernel freed the packet without giving a specific reason.",
                    "The node's kernel may predate a precise reason for this path; the pair and the interface narrow it down.",
                )
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_agent_reports_is_explained() {
        for r in [
            "POLICY_DENIED",
            "NO_SOCKET",
            "NETFILTER_DROP",
            "TCP_INVALID_SEQUENCE",
            "IP_NOROUTE",
            "NEIGH_FAILED",
            "PKT_TOO_SMALL",
            "SOCKET_RCVBUFF",
            "NOT_SPECIFIED",
        ] {
            let x = explain(r).unwrap_or_else(|| panic!("{r} has no explanation"));
            assert!(x.meaning.ends_with('.') && !x.check.is_empty());
        }
        assert!(explain("SOMETHING_NEW").is_none());
    }
}
