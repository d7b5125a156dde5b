//! The datapath's packet parser (the same code the kernel runs) on arbitrary
//! bytes: it must never panic, and what it accepts must be consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_agent_ebpf::{ETH_P_IP, ETH_P_IPV6, Parsed, parse_packet};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, frame)) = data.split_first() else { return };
    let with_eth = mode & 1 == 1;
    let l3 = if mode & 2 == 2 { ETH_P_IPV6 } else { ETH_P_IP };
    let mut p = Parsed::default();
    if parse_packet(&frame, with_eth, l3, &mut p).is_ok() {
        assert!(p.ip_version == 4 || p.ip_version == 6);
        assert_eq!(p.has_eth, with_eth);
    }
});
