//! How the relay learns its nodes besides --peer: from another server's Peer
//! service, and from DNS. Unprivileged: the nodes are addresses where nothing
//! listens, so they show up as known but unavailable.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use webb_tests::{
    agent::{binary, free_port},
    block_on, client,
    relay::RelayProcess,
};

/// Waits until the relay's status lists these unavailable nodes.
fn wait_unavailable(r: &RelayProcess, want: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut st = block_on(client::status(&r.addr));
        st.unavailable_nodes.sort();
        if st.unavailable_nodes == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "unavailable nodes {:?}, want {want:?}",
            st.unavailable_nodes
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn peers_come_from_a_peer_service_and_from_dns() {
    let dead = format!("127.0.0.1:{}", free_port());
    // A first relay knows the node statically and re-serves it on Peer.
    let first = RelayProcess::start(&["--peer", &dead]);
    wait_unavailable(&first, std::slice::from_ref(&dead));
    // A second relay learns it from the first one's Peer service.
    let second = RelayProcess::start(&["--peer-service", &first.addr]);
    wait_unavailable(&second, std::slice::from_ref(&dead));
    // A third resolves a name (an IP literal resolves to itself).
    let third = RelayProcess::start(&["--peer-dns", &dead, "--peer-dns-interval", "1s"]);
    wait_unavailable(&third, std::slice::from_ref(&dead));
}

#[test]
fn bad_peer_arguments_are_clear_errors() {
    for (args, want) in [
        (&["--listen", "127.0.0.1:0"][..], "no nodes to relay"),
        (
            &["--listen", "127.0.0.1:0", "--peer", "host:port"][..],
            "is not an address",
        ),
        (
            &["--listen", "127.0.0.1:0", "--peer-dns", "nameonly"][..],
            "is not NAME:PORT",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--peer",
                "x:1",
                "--sort-delay",
                "soon",
            ][..],
            "not a duration",
        ),
    ] {
        let out = Command::new(binary("webb-relay"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
