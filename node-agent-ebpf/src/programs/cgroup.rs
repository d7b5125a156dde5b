//! cgroup_skb ingress and egress on a cgroup v2 path: observes the packets of
//! the sockets in that cgroup, with the cgroup id for per-container
//! attribution. Packets here start at the IP header.

use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};
use node_agent_ebpf::{Packet, point};

use super::{Meta, handle_packet, load_direct};

const ALLOW: i32 = 1;

struct SkbPacket<'a>(&'a SkBuffContext);

impl Packet for SkbPacket<'_> {
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // SAFETY: the context's skb pointer is valid for the program's run;
        // cgroup_skb programs may read data and data_end (kernel >= 5.2).
        let (data, end) = unsafe {
            (
                (*self.0.skb.skb).data as usize,
                (*self.0.skb.skb).data_end as usize,
            )
        };
        load_direct(data, end, offset, || self.0.load::<[u8; N]>(offset).ok())
    }
}

#[cgroup_skb]
pub fn webb_cgroup_ingress(ctx: SkBuffContext) -> i32 {
    cgroup(&ctx, point::CGROUP_INGRESS)
}

#[cgroup_skb]
pub fn webb_cgroup_egress(ctx: SkBuffContext) -> i32 {
    cgroup(&ctx, point::CGROUP_EGRESS)
}

#[inline(always)]
fn cgroup(ctx: &SkBuffContext, point: u8) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: the context's skb pointer is valid for the program's run.
    let (len, ifindex, protocol) = unsafe {
        (
            (*skb).len,
            (*skb).ifindex,
            u16::from_be((*skb).protocol as u16),
        )
    };
    let meta = Meta {
        point,
        len,
        ifindex,
        enforce: false,
        cgroup: true,
        skb: skb.cast(),
    };
    handle_packet(&SkbPacket(ctx), false, protocol, &meta);
    // cgroup programs only observe; policy is enforced at TC.
    ALLOW
}
