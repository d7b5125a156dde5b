//! Real traffic in lab pods: listeners and clients (socat, ping) run inside
//! the pods' namespaces and cgroups.

use std::{
    process::{Child, Command, Stdio},
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

/// A DNS server (dnsmasq) in a pod, authoritative for `domain`: `records`
/// are `--host-record`/`--cname` style arguments, names under `domain` it
/// does not know get NXDOMAIN, and answers carry a 30 s TTL.
pub fn dns_server(pod: &Pod, domain: &str, records: &[String]) -> Background {
    let child = dns_server_command(pod, domain, records)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dnsmasq");
    wait_for_port(pod, 53);
    Background(child)
}

/// The command [`dns_server`] runs, for callers that manage the process.
pub fn dns_server_command(pod: &Pod, domain: &str, records: &[String]) -> Command {
    let mut args = vec![
        "--no-daemon".to_owned(),
        "--conf-file=/dev/null".to_owned(),
        "--no-resolv".to_owned(),
        "--no-hosts".to_owned(),
        "--pid-file=".to_owned(),
        "--bind-interfaces".to_owned(),
        format!("--listen-address={}", pod.ip),
        "--local-ttl=30".to_owned(),
        format!("--local=/{domain}/"),
    ];
    args.extend(records.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    pod.cmd("dnsmasq", &args)
}

/// The lab's HTTP server (`tests/data/http_server.py`, Python's http.server):
/// 200 on `/ok...` after `delay_ms`, 404 on `/missing...`, 500 on `/fail...`.
pub fn http_server(pod: &Pod, port: u16, delay_ms: u32) -> Background {
    let child = http_server_command(pod, port, delay_ms)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 http server");
    wait_for_port(pod, port);
    Background(child)
}

/// The command [`http_server`] runs, for callers that manage the process.
pub fn http_server_command(pod: &Pod, port: u16, delay_ms: u32) -> Command {
    pod.cmd(
        "python3",
        &[
            HTTP_SERVER_SCRIPT,
            &port.to_string(),
            "--delay-ms",
            &delay_ms.to_string(),
        ],
    )
}

/// The lab's HTTP server script.
pub const HTTP_SERVER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/http_server.py");

/// Waits (up to 5 s) until something listens on `port` in the pod.
fn wait_for_port(pod: &Pod, port: u16) {
    for _ in 0..50 {
        if is_listening(pod, port) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on port {port} in {}", pod.name);
}

/// True when a TCP or UDP socket listens on `port` in the pod.
pub fn is_listening(pod: &Pod, port: u16) -> bool {
    let out = pod.run("ss", &["-Hltnu", &format!("sport = :{port}")]);
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// Points the pod's resolver at `server`: `ip netns exec` bind-mounts
/// `/etc/netns/<netns>/resolv.conf` over `/etc/resolv.conf`. Removed on drop.
pub struct Resolver(std::path::PathBuf);

impl Resolver {
    pub fn new(pod: &Pod, server: &str, search: &str) -> Self {
        let dir = write_resolv_conf(&pod.netns, server, search, "timeout:2 attempts:1")
            .expect("write /etc/netns/<pod>/resolv.conf");
        Self(dir)
    }
}

/// Writes the resolv.conf `ip netns exec` mounts over `/etc/resolv.conf` in
/// `netns`; returns its directory.
pub fn write_resolv_conf(
    netns: &str,
    server: &str,
    search: &str,
    options: &str,
) -> std::io::Result<std::path::PathBuf> {
    let dir = std::path::Path::new("/etc/netns").join(netns);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("resolv.conf"),
        format!("nameserver {server}\nsearch {search}\noptions {options}\n"),
    )?;
    Ok(dir)
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
