//! The demo's traffic generators: `webb-demo traffic ROLE`, run inside a
//! pod (or the world namespace) by [`super::up`]. Each role runs a few
//! loops of real requests with jittered pauses until it is killed at
//! tear-down: HTTP with 2xx, 4xx and 5xx answers at several latencies, DNS
//! lookups through the cluster resolver (NXDOMAIN included), connections
//! the policy denies, datagrams to a closed port, and pings.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs as _, UdpSocket},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{CLOSED_UDP_PORT, DB_PORT, HTTP_PORT, WORLD_NAME, pod_ip};

/// One recurring request of a traffic generator.
enum Call {
    /// An HTTP GET to `host:port` on a path drawn from `paths` (`{id}` is
    /// replaced by a number), sometimes with a bearer token.
    Http {
        host: &'static str,
        port: u16,
        paths: &'static [&'static str],
        bearer: bool,
    },
    /// A TCP connection that sends a line and closes.
    Tcp { host: &'static str, port: u16 },
    /// A datagram.
    Udp { host: &'static str, port: u16 },
    /// A name lookup only.
    Resolve { name: &'static str },
    /// One ICMP echo.
    Ping { host: &'static str },
}

const SHOP_PATHS: &[&str] = &[
    "/ok/items/{id}",
    "/ok/items/{id}",
    "/ok/items/{id}",
    "/ok/items/{id}",
    "/slow/items/{id}/reviews",
    "/missing/items/{id}",
    "/fail/cart",
];

const CHECKOUT_PATHS: &[&str] = &[
    "/ok/charge",
    "/ok/charge",
    "/ok/charge",
    "/slow/charge",
    "/fail/charge",
];

/// Each role's calls and their mean interval.
fn plan(role: &str) -> Option<Vec<(Call, Duration)>> {
    let ms = Duration::from_millis;
    Some(match role {
        // Outside users of the shop, by address (the world has no cluster
        // DNS).
        "world" => vec![(
            Call::Http {
                host: "frontend",
                port: HTTP_PORT,
                paths: SHOP_PATHS,
                bearer: false,
            },
            ms(400),
        )],
        "frontend" => vec![
            (
                Call::Http {
                    host: "cart",
                    port: HTTP_PORT,
                    paths: SHOP_PATHS,
                    bearer: false,
                },
                ms(700),
            ),
            (
                Call::Http {
                    host: "payments",
                    port: HTTP_PORT,
                    paths: CHECKOUT_PATHS,
                    bearer: true,
                },
                ms(1500),
            ),
            // Denied by the policy: only cart may talk to db.
            (
                Call::Tcp {
                    host: "db",
                    port: DB_PORT,
                },
                ms(3000),
            ),
            (
                Call::Resolve {
                    name: "recommendations",
                },
                ms(5000),
            ),
            (
                Call::Udp {
                    host: "cart",
                    port: CLOSED_UDP_PORT,
                },
                ms(2500),
            ),
        ],
        "cart" => vec![
            (
                Call::Tcp {
                    host: "db",
                    port: DB_PORT,
                },
                ms(1200),
            ),
            (Call::Ping { host: "payments" }, ms(4000)),
        ],
        "payments" => vec![
            (
                Call::Http {
                    host: WORLD_NAME,
                    port: 80,
                    paths: &[
                        "/ok/v1/charges",
                        "/ok/v1/charges",
                        "/slow/v1/charges",
                        "/missing/v1/refunds",
                    ],
                    bearer: true,
                },
                ms(2000),
            ),
            (Call::Ping { host: WORLD_NAME }, ms(5000)),
        ],
        _ => return None,
    })
}

/// Runs a traffic generator role until killed.
pub fn run(role: &str) -> anyhow::Result<()> {
    let Some(plan) = plan(role) else {
        bail!("unknown traffic role {role:?} (frontend, cart, payments, world)");
    };
    let world = role == "world";
    let threads: Vec<_> = plan
        .into_iter()
        .enumerate()
        .map(|(i, (call, every))| {
            std::thread::spawn(move || {
                let mut rng = Rng::new(i as u64 + 1);
                loop {
                    if let Err(e) = call.run(world, &mut rng) {
                        eprintln!("{e:#}");
                    }
                    std::thread::sleep(rng.jitter(every));
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// A small xorshift generator: the traffic needs variety, not quality.
struct Rng(u64);

impl Rng {
    fn new(stream: u64) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self((t ^ (stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Between half and one and a half times `mean`.
    fn jitter(&mut self, mean: Duration) -> Duration {
        mean / 2 + mean.mul_f64((self.next() % 1000) as f64 / 1000.0)
    }
}

/// Resolves a lab name: pods by short name through the cluster DNS (the
/// world has none and uses the pods' addresses).
fn resolve(host: &str, port: u16, world: bool) -> anyhow::Result<SocketAddr> {
    if world {
        return Ok(SocketAddr::from((pod_ip(host), port)));
    }
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("{host} has no IPv4 address"))
}

impl Call {
    fn run(&self, world: bool, rng: &mut Rng) -> anyhow::Result<()> {
        let timeout = Duration::from_secs(2);
        match self {
            Call::Http {
                host,
                port,
                paths,
                bearer,
            } => {
                let addr = resolve(host, *port, world)?;
                let path = paths[rng.below(paths.len())]
                    .replace("{id}", &(rng.below(400) + 1).to_string());
                let mut s = TcpStream::connect_timeout(&addr, timeout)
                    .with_context(|| format!("connecting to {host}:{port}"))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                let auth = if *bearer {
                    "Authorization: Bearer demo-token-not-a-secret\r\n"
                } else {
                    ""
                };
                // One write, as real clients send a head: the agent reads
                // L7 from the segment that starts it.
                let head = format!(
                    "GET {path}?session={} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: webb-demo\r\n{auth}Connection: close\r\n\r\n",
                    rng.below(1_000_000)
                );
                s.write_all(head.as_bytes())?;
                let mut answer = Vec::new();
                s.read_to_end(&mut answer)
                    .with_context(|| format!("reading the answer of {host}:{port}{path}"))?;
                Ok(())
            }
            Call::Tcp { host, port } => {
                let addr = resolve(host, *port, world)?;
                // Denied connections time out: that is the point.
                if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                    let _ = s.write_all(b"SELECT 1;\n");
                }
                Ok(())
            }
            Call::Udp { host, port } => {
                let addr = resolve(host, *port, world)?;
                let sock = UdpSocket::bind("0.0.0.0:0")?;
                sock.send_to(b"hello?\n", addr)?;
                Ok(())
            }
            Call::Resolve { name } => {
                // NXDOMAIN for every name in the search list is the point.
                let _ = (*name, 80).to_socket_addrs();
                Ok(())
            }
            Call::Ping { host } => {
                let addr = resolve(host, 0, world)?;
                Command::new("ping")
                    .args(["-c", "1", "-W", "1", &addr.ip().to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .context("running ping")?;
                Ok(())
            }
        }
    }
}
