//! TC ingress and egress on watched interfaces (the host side of pod veths):
//! observes every packet and enforces the policy map.

use aya_ebpf::{macros::classifier, programs::TcContext};
use node_agent_ebpf::{Packet, point};

use super::{Meta, handle_packet, load_direct};

/// Let the next TC program (or the stack) decide: webb only observes, unless
/// policy denies.
const TCX_NEXT: i32 = -1;
const TC_ACT_SHOT: i32 = 2;

struct TcPacket<'a>(&'a TcContext);

impl Packet for TcPacket<'_> {
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        load_direct(self.0.data(), self.0.data_end(), offset, || {
            self.0.load::<[u8; N]>(offset).ok()
        })
    }
}

#[classifier]
pub fn webb_tc_ingress(ctx: TcContext) -> i32 {
    tc(&ctx, point::TC_INGRESS)
}

#[classifier]
pub fn webb_tc_egress(ctx: TcContext) -> i32 {
    tc(&ctx, point::TC_EGRESS)
}

#[inline(always)]
fn tc(ctx: &TcContext, point: u8) -> i32 {
    // SAFETY: the context's skb pointer is valid for the program's run.
    let (len, ifindex) = unsafe { ((*ctx.skb.skb).len, (*ctx.skb.skb).ifindex) };
    let meta = Meta {
        point,
        len,
        ifindex,
        enforce: true,
        cgroup: false,
        skb: ctx.skb.skb.cast(),
    };
    if handle_packet(&TcPacket(ctx), true, 0, &meta) {
        TCX_NEXT
    } else {
        TC_ACT_SHOT
    }
}
