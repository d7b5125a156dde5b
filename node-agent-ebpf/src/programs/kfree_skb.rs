//! The skb:kfree_skb tracepoint: packets the kernel itself drops (no socket,
//! netfilter, no route, ...) that involve a local endpoint become drop events
//! with the kernel's reason number. Userspace names the reason from BTF.

use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::tracepoint, programs::TracePointContext};
use node_agent_ebpf::{FlowKey, Packet, Parsed, emit, endpoint_flags, kind, parse_packet, point};

use super::{ENDPOINTS, Meta, Report, config, flow_kind, lookup, send_report};

/// `SKB_NOT_DROPPED_YET` and `SKB_CONSUMED` are not drops.
const FIRST_DROP_REASON: u32 = 2;

/// Packet bytes read through bpf_probe_read_kernel from the network header.
struct KernelPacket {
    base: u64,
}

impl Packet for KernelPacket {
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // SAFETY: probe reads fault safely; an error is a failed load.
        unsafe { bpf_probe_read_kernel((self.base + offset as u64) as *const [u8; N]).ok() }
    }
}

#[tracepoint]
pub fn webb_kfree_skb(ctx: TracePointContext) -> u32 {
    let _ = try_kfree_skb(&ctx);
    0
}

#[inline(always)]
fn try_kfree_skb(ctx: &TracePointContext) -> Result<(), i32> {
    let cfg = config().ok_or(0)?;
    if cfg.kfree_enabled == 0 {
        return Ok(());
    }
    // SAFETY: offsets come from the tracepoint's format file and BTF; probe
    // reads fault safely.
    let (skb, reason, protocol) = unsafe {
        (
            ctx.read_at::<u64>(cfg.tp_skbaddr_off as usize)?,
            ctx.read_at::<u32>(cfg.tp_reason_off as usize)?,
            ctx.read_at::<u16>(cfg.tp_protocol_off as usize)?,
        )
    };
    if reason < FIRST_DROP_REASON || reason == cfg.kfree_skip[0] || reason == cfg.kfree_skip[1] {
        return Ok(());
    }
    let (head, network_header) = unsafe {
        (
            bpf_probe_read_kernel((skb + u64::from(cfg.skb_head_off)) as *const u64)?,
            bpf_probe_read_kernel((skb + u64::from(cfg.skb_network_header_off)) as *const u16)?,
        )
    };
    if network_header == u16::MAX || head == 0 {
        return Ok(());
    }
    let pkt = KernelPacket {
        base: head + u64::from(network_header),
    };
    let mut parsed = Parsed::default();
    if parse_packet(&pkt, false, protocol, &mut parsed).is_err() {
        return Ok(());
    }
    let src = lookup(&ENDPOINTS, &parsed.src);
    let dst = lookup(&ENDPOINTS, &parsed.dst);
    let src_local = src.is_some_and(|e| e.flags & endpoint_flags::LOCAL != 0);
    let dst_local = dst.is_some_and(|e| e.flags & endpoint_flags::LOCAL != 0);
    let ours = if cfg.kfree_shared_kernel != 0 {
        dst_local || (src_local && dst.is_none())
    } else {
        src_local || dst_local
    };
    if !ours {
        return Ok(());
    }
    let mut key = FlowKey {
        src: parsed.src,
        dst: parsed.dst,
        sport: parsed.sport,
        dport: parsed.dport,
        proto: parsed.proto,
        point: point::TC_INGRESS,
        _pad: [0; 2],
    };
    // Packets webb's own policy dropped at TC were reported already.
    for p in [point::TC_INGRESS, point::TC_EGRESS] {
        key.point = p;
        if flow_kind(&key) == Some(kind::POLICY_DROP) {
            return Ok(());
        }
    }
    key.point = point::KFREE_SKB;
    let meta = Meta {
        point: point::KFREE_SKB,
        len: 0,
        ifindex: 0,
        enforce: false,
        cgroup: false,
        skb: core::ptr::null_mut(),
    };
    let report = Report {
        packets: 1,
        bytes: 0,
        kind: kind::KERNEL_DROP,
        flags: 0,
        emit: emit::DROP,
        drop_reason: reason,
    };
    send_report(&key, &report, &parsed, &meta, cfg);
    Ok(())
}
