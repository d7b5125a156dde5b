//! Real traffic in lab pods: listeners and clients (socat, ping) run inside
//! the pods' namespaces and cgroups.

use std::{
    process::{Child, Stdio},
    time::Duration,
};

use crate::lab::Pod;

/// A background process in a pod, killed when dropped.
pub struct Background(pub Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn listen_tcp(pod: &Pod, port: u16) -> Background {
    let child = pod
        .cmd(
            "socat",
            &[
                "-u",
                &format!("TCP-LISTEN:{port},reuseaddr,fork"),
                "OPEN:/dev/null",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat listener");
    // Let the listener bind.
    std::thread::sleep(Duration::from_millis(300));
    Background(child)
}

pub fn tcp_send(pod: &Pod, ip: &str, port: u16, timeout_s: u32) -> bool {
    let out = pod.run(
        "socat",
        // Not SYSTEM: its child's SIGCHLD would interrupt a pending connect.
        &[
            "-u",
            "OPEN:/dev/null",
            &format!("TCP:{ip}:{port},connect-timeout={timeout_s}"),
        ],
    );
    if !out.status.success() {
        eprintln!(
            "tcp send to {ip}:{port} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

pub fn udp_send(pod: &Pod, ip: &str, port: u16) {
    let out = pod.run(
        "socat",
        &["-u", "SYSTEM:echo hi", &format!("UDP:{ip}:{port}")],
    );
    assert!(
        out.status.success(),
        "udp send: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn ping(pod: &Pod, ip: &str, count: u32) -> bool {
    pod.run(
        "ping",
        &["-c", &count.to_string(), "-i", "0.2", "-W", "1", ip],
    )
    .status
    .success()
}
