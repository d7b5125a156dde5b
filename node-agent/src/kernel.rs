//! Facts about the running kernel that the kfree_skb program needs and that
//! change between kernels: `struct sk_buff` field offsets and the names of
//! `enum skb_drop_reason`, both read from BTF at run time (never hard-coded),
//! and the field offsets of the `skb:kfree_skb` tracepoint record.

use std::{collections::HashMap, fs, path::Path};

use anyhow::{Context as _, anyhow, bail};
use btf_rs::{Btf, Type};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
pub const TRACEFS: &str = "/sys/kernel/tracing";
const KFREE_SKB_FORMAT: &str = "events/skb/kfree_skb/format";

/// Byte offsets inside `struct sk_buff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkbOffsets {
    pub head: u32,
    pub network_header: u32,
    pub transport_header: u32,
}

/// Byte offsets inside the `skb:kfree_skb` tracepoint record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TracepointOffsets {
    pub skbaddr: u32,
    pub protocol: u32,
    pub reason: u32,
}

/// The kernel's drop reasons by number, named without the
/// `SKB_DROP_REASON_` prefix (`NO_SOCKET`, `NETFILTER_DROP`, ...).
#[derive(Debug, Clone, Default)]
pub struct DropReasons {
    names: HashMap<u32, String>,
}

impl DropReasons {
    pub fn from_names(names: impl IntoIterator<Item = (u32, String)>) -> Self {
        Self {
            names: names.into_iter().collect(),
        }
    }

    pub fn name(&self, reason: u32) -> String {
        self.names
            .get(&reason)
            .cloned()
            .unwrap_or_else(|| format!("UNKNOWN_{reason}"))
    }

    /// The number of a reason named without its prefix, if this kernel has it.
    pub fn number(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(k, _)| *k)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Reads sk_buff offsets and drop reason names from the kernel's BTF.
pub fn read_btf(path: &Path) -> anyhow::Result<(SkbOffsets, DropReasons)> {
    let btf =
        Btf::from_file(path).with_context(|| format!("reading BTF from {}", path.display()))?;
    let skb = btf
        .resolve_types_by_name("sk_buff")
        .context("BTF has no struct sk_buff")?
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) => Some(s),
            _ => None,
        })
        .ok_or_else(|| anyhow!("sk_buff in BTF is not a struct"))?;
    let find = |name: &str| -> anyhow::Result<u32> {
        member_offset(&btf, &skb, name, 0)?
            .map(|bits| bits / 8)
            .ok_or_else(|| anyhow!("struct sk_buff has no member {name}"))
    };
    let offsets = SkbOffsets {
        head: find("head")?,
        network_header: find("network_header")?,
        transport_header: find("transport_header")?,
    };

    let mut names = Vec::new();
    for t in btf
        .resolve_types_by_name("skb_drop_reason")
        .unwrap_or_default()
    {
        if let Type::Enum(e) = t {
            for m in &e.members {
                let name = btf.resolve_name(m)?;
                // SKB_DROP_REASON_SKB_CSUM is SKB_CSUM; SKB_CONSUMED is
                // CONSUMED.
                let short = name
                    .strip_prefix("SKB_DROP_REASON_")
                    .or_else(|| name.strip_prefix("SKB_"))
                    .unwrap_or(&name);
                names.push((m.val(), short.to_owned()));
            }
        }
    }
    Ok((offsets, DropReasons::from_names(names)))
}

/// Finds a member's bit offset, descending into anonymous structs and unions
/// (sk_buff keeps its header offsets inside a `struct_group`).
fn member_offset(
    btf: &Btf,
    s: &btf_rs::Struct,
    name: &str,
    base_bits: u32,
) -> anyhow::Result<Option<u32>> {
    for m in &s.members {
        let mname = btf.resolve_name(m).unwrap_or_default();
        if mname == name {
            return Ok(Some(base_bits + m.bit_offset()));
        }
        if mname.is_empty() {
            let mut t = btf.resolve_chained_type(m)?;
            // Skip typedefs and qualifiers to the aggregate.
            for _ in 0..8 {
                match t {
                    Type::Struct(_) | Type::Union(_) => break,
                    ref other => match other.as_btf_type() {
                        Some(bt) => t = btf.resolve_chained_type(bt)?,
                        None => break,
                    },
                }
            }
            if let Type::Struct(inner) | Type::Union(inner) = &t
                && let Some(off) = member_offset(btf, inner, name, base_bits + m.bit_offset())?
            {
                return Ok(Some(off));
            }
        }
    }
    Ok(None)
}

/// Parses a tracepoint `format` file for the kfree_skb record offsets.
pub fn parse_kfree_skb_format(text: &str) -> anyhow::Result<TracepointOffsets> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = "";
        let mut offset = None;
        for part in rest.split(';') {
            let part = part.trim();
            if let Some(o) = part.strip_prefix("offset:") {
                offset = o.trim().parse::<u32>().ok();
            } else if decl.is_empty() {
                decl = part;
            }
        }
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or("");
        if let Some(o) = offset {
            fields.insert(name.to_owned(), o);
        }
    }
    let get = |n: &str| {
        fields
            .get(n)
            .copied()
            .ok_or_else(|| anyhow!("skb:kfree_skb format has no field {n}"))
    };
    Ok(TracepointOffsets {
        skbaddr: get("skbaddr")?,
        protocol: get("protocol")?,
        reason: get("reason")?,
    })
}

/// tracefs, mounted by us if it was not mounted, and unmounted again when
/// dropped so the machine is left as it was found.
pub struct Tracefs {
    mounted_by_us: bool,
}

impl Tracefs {
    pub fn ensure() -> anyhow::Result<Self> {
        if Path::new(TRACEFS).join("events").exists() {
            return Ok(Self {
                mounted_by_us: false,
            });
        }
        let status = std::process::Command::new("mount")
            .args(["-t", "tracefs", "tracefs", TRACEFS])
            .status()
            .context("running mount for tracefs")?;
        if !status.success() {
            bail!("cannot mount tracefs at {TRACEFS} (needs CAP_SYS_ADMIN)");
        }
        Ok(Self {
            mounted_by_us: true,
        })
    }

    pub fn kfree_skb_offsets(&self) -> anyhow::Result<TracepointOffsets> {
        let path = Path::new(TRACEFS).join(KFREE_SKB_FORMAT);
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        parse_kfree_skb_format(&text)
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if self.mounted_by_us {
            let _ = std::process::Command::new("umount").arg(TRACEFS).status();
        }
    }
}

/// The closest Hubble `DropReason` for a kernel drop reason name, where one
/// exists (0, DROP_REASON_UNKNOWN, otherwise). The kernel's own name always
/// travels in the flow's `webb_kernel_drop_reason` field.
pub fn hubble_drop_reason(kernel_name: &str) -> i32 {
    use webb_proto::flow::DropReason as D;
    let d = match kernel_name {
        "NETFILTER_DROP" | "TC_INGRESS" | "TC_EGRESS" | "TCX_INGRESS" | "TCX_EGRESS" => {
            D::PolicyDenied
        }
        "NO_SOCKET" | "SOCKET_FILTER" => D::SocketLookupFailed,
        "IP_NOROUTE" | "IP_INNOROUTES" | "IP_OUTNOROUTES" => D::FibLookupFailed,
        "IP_RPFILTER" | "IP_INVALID_SOURCE" => D::InvalidSourceIp,
        "IP_INADDRERRORS" | "IP_LOCAL_SOURCE" | "IP_INVALID_DEST" => D::UnknownL3TargetAddress,
        "PKT_TOO_SMALL" | "HDR_TRUNC" | "IP_INHDR" | "IP_CSUM" | "TCP_CSUM" | "UDP_CSUM"
        | "ICMP_CSUM" | "SKB_CSUM" | "PKT_TOO_BIG" | "INVALID_PROTO" => D::InvalidPacketDropped,
        "UNHANDLED_PROTO" | "IP_NOPROTO" => D::UnknownL4Protocol,
        "NEIGH_FAILED" | "NEIGH_CREATEFAIL" | "NEIGH_DEAD" | "NEIGH_QUEUEFULL" => {
            D::LocalHostIsUnreachable
        }
        "IP_TUNNEL_ECN" | "VXLAN_INVALID_HDR" | "VXLAN_VNI_NOT_FOUND" => D::InvalidVni,
        // A segment the connection's state does not take.
        "TCP_INVALID_SEQUENCE"
        | "TCP_INVALID_END_SEQUENCE"
        | "TCP_INVALID_ACK_SEQUENCE"
        | "TCP_OLD_SEQUENCE"
        | "TCP_OLD_DATA"
        | "TCP_OLD_ACK"
        | "TCP_TOO_OLD_ACK"
        | "TCP_ACK_UNSENT_DATA"
        | "TCP_OVERWINDOW"
        | "TCP_ZEROWINDOW"
        | "TCP_FLAGS"
        | "TCP_RESET"
        | "TCP_INVALID_SYN"
        | "TCP_CLOSE"
        | "TCP_ABORT_ON_DATA"
        | "TCP_FASTOPEN"
        | "TCP_OFOMERGE"
        | "TCP_OFO_DROP"
        | "TCP_RFC7323_PAWS"
        | "TCP_RFC7323_PAWS_ACK"
        | "TCP_RFC7323_TW_PAWS"
        | "TCP_RFC7323_TSECR" => D::UnknownConnectionTrackingState,
        // Another program or hook than webb's denied it.
        "BPF_CGROUP_EGRESS" | "SECURITY_HOOK" | "XFRM_POLICY" => D::PolicyDenied,
        "TCP_AUTH_HDR" | "TCP_MD5NOTFOUND" | "TCP_MD5UNEXPECTED" | "TCP_MD5FAILURE"
        | "TCP_AONOTFOUND" | "TCP_AOUNEXPECTED" | "TCP_AOKEYNOTFOUND" | "TCP_AOFAILURE" => {
            D::AuthRequired
        }
        "TCP_MINTTL" => D::TtlExceeded,
        "OTHERHOST" | "IP_LOCALNET" | "IPV6_NDISC_NS_OTHERHOST" => D::UnknownL3TargetAddress,
        "IPV6DISABLED" => D::UnsupportedL3Protocol,
        "IPV6_BAD_EXTHDR" | "IPV6_TOO_MANY_EXTHDRS" => D::InvalidIpv6ExtensionHeader,
        "MAC_INVALID_SOURCE" | "LOCAL_MAC" => D::InvalidSourceMac,
        "FRAG_REASM_TIMEOUT" => D::FirstLogicalDatagramFragmentNotFound,
        "DUP_FRAG" | "FRAG_TOO_FAR" | "SKB_GSO_SEG" | "DEV_HDR" => D::InvalidPacketDropped,
        "IPV6_NDISC_BAD_CODE" => D::UnknownIcmpv6Code,
        "IPV6_NDISC_FRAG" | "IPV6_NDISC_HOP_LIMIT" | "IPV6_NDISC_BAD_OPTIONS" => {
            D::ForbiddenIcmpv6Message
        }
        "FQ_HORIZON_LIMIT" => D::ReachedEdtRateLimitingDropHorizon,
        // A queue or a memory limit was reached: the closest Cilium has is
        // its rate limiter's drop.
        "SOCKET_RCVBUFF"
        | "SOCKET_BACKLOG"
        | "PROTO_MEM"
        | "TCP_LISTEN_OVERFLOW"
        | "TCP_OFO_QUEUE_PRUNE"
        | "CPU_BACKLOG"
        | "QDISC_DROP"
        | "QDISC_OVERLIMIT"
        | "QDISC_CONGESTED"
        | "CAKE_FLOOD"
        | "FQ_BAND_LIMIT"
        | "FQ_FLOW_LIMIT"
        | "FULL_RING"
        | "NOMEM"
        | "PFMEMALLOC" => D::DropRateLimited,
        _ => D::Unknown,
    };
    d as i32
}

/// Run time and run count of a loaded program, from the kernel's own
/// accounting (`bpf_prog_info.run_time_ns` and `run_cnt`), which counts only
/// while `kernel.bpf_stats_enabled` is 1.
pub fn program_run_stats(fd: std::os::fd::BorrowedFd<'_>) -> Option<(u64, u64)> {
    use std::os::fd::AsRawFd as _;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // struct bpf_prog_info is 232 bytes on current kernels; a larger, zeroed
    // buffer is accepted by older and newer ones alike.
    #[repr(C, align(8))]
    struct Info([u8; 256]);
    #[repr(C)]
    struct Attr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = Info([0; 256]);
    let mut attr = Attr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<Info>() as u32,
        info: (&raw mut info) as u64,
    };
    // SAFETY: the attribute points at a buffer we own of the length it
    // states; the kernel writes at most that much.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if r != 0 || attr.info_len < 208 {
        return None;
    }
    let u64_at = |off: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&info.0[off..off + 8]);
        u64::from_ne_bytes(b)
    };
    // Offsets of run_time_ns and run_cnt in struct bpf_prog_info (uapi).
    Some((u64_at(192), u64_at(200)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: &str = "name: kfree_skb
ID: 1650
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;
";

    #[test]
    fn parses_tracepoint_format() {
        let o = parse_kfree_skb_format(FORMAT).unwrap();
        assert_eq!(
            o,
            TracepointOffsets {
                skbaddr: 8,
                protocol: 32,
                reason: 36
            }
        );
        assert!(parse_kfree_skb_format("field:int x;\toffset:0;").is_err());
    }

    #[test]
    fn maps_kernel_reasons() {
        use webb_proto::flow::DropReason as D;
        assert_eq!(
            hubble_drop_reason("NO_SOCKET"),
            D::SocketLookupFailed as i32
        );
        assert_eq!(hubble_drop_reason("SOMETHING_NEW"), 0);
        // A late segment to a closing socket: not "Success" in Hubble's text.
        assert_eq!(
            hubble_drop_reason("TCP_ABORT_ON_DATA"),
            D::UnknownConnectionTrackingState as i32
        );
        assert_eq!(
            hubble_drop_reason("SOCKET_RCVBUFF"),
            D::DropRateLimited as i32
        );
        // Every code given has Cilium's text, which Hubble's printers show.
        for name in [
            "TCP_MINTTL",
            "TCP_MD5FAILURE",
            "OTHERHOST",
            "IPV6_BAD_EXTHDR",
            "LOCAL_MAC",
        ] {
            let code = hubble_drop_reason(name) as u32;
            assert!(
                code != 0 && webb_proto::names::drop_reason_text(code).is_some(),
                "{name}"
            );
        }
    }

    /// Reads the running kernel's BTF when it has one (the test machines do).
    #[test]
    fn reads_running_kernel_btf() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipped: {VMLINUX_BTF} not present on this kernel");
            return;
        }
        let (offsets, reasons) = read_btf(path).unwrap();
        assert!(offsets.head > 0 && offsets.network_header > 0);
        assert_ne!(offsets.network_header, offsets.transport_header);
        assert!(reasons.len() > 10, "only {} drop reasons", reasons.len());
        assert!((0..200).any(|r| reasons.name(r) == "NO_SOCKET"));
        // Only the enum's own prefix is cut: SKB_DROP_REASON_SKB_CSUM.
        assert!((0..400).any(|r| reasons.name(r) == "SKB_CSUM"));
        // Most of this kernel's reasons have a Cilium code; list the rest.
        let names: Vec<String> = (0..400)
            .map(|r| reasons.name(r))
            .filter(|n| !n.starts_with("UNKNOWN_"))
            .collect();
        let unmapped: Vec<&String> = names
            .iter()
            .filter(|n| hubble_drop_reason(n) == 0)
            .collect();
        eprintln!(
            "{} of {} kernel drop reasons have no Cilium code: {unmapped:?}",
            unmapped.len(),
            names.len()
        );
        assert!(unmapped.len() * 2 < names.len(), "{unmapped:?}");
    }
}
