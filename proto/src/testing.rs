//! Generated flows for tests that compare two ways of doing one thing
//! (the JSON writer against serde, the decoder against prost).

use crate::{
    flow::{
        AuthType, CiliumEventType, DebugCapturePoint, DropReason, Emitter, EndpointData, Ethernet,
        Flow, FlowType, IcmPv4, IcmPv6, Ip, IpVersion, Layer4, NetworkInterface,
        SocketTranslationPoint, Tcp, TcpFlags, TraceObservationPoint, TraceReason,
        TrafficDirection, Udp, Verdict, WebbEmitReason, Workload, layer4::Protocol,
    },
    wkt::{BoolValue, Timestamp},
};

/// xorshift64: small and deterministic.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }

    /// Mostly plain text; sometimes empty, quotes, backslashes, control
    /// characters or non-ASCII.
    pub(crate) fn text(&mut self) -> String {
        const PIECES: [&str; 10] = [
            "",
            "shop",
            "frontend-7d9c",
            "k8s:app=cart",
            "a\"b",
            "c\\d",
            "tab\there",
            "nl\n",
            "\u{1}",
            "naïve ☃",
        ];
        (0..self.next() % 3)
            .map(|_| PIECES[(self.next() % 10) as usize])
            .collect()
    }

    pub(crate) fn number(&mut self) -> u32 {
        match self.next() % 4 {
            0 => 0,
            1 => (self.next() % 100) as u32,
            2 => (self.next() % 70_000) as u32,
            _ => self.next() as u32,
        }
    }

    pub(crate) fn texts(&mut self) -> Vec<String> {
        (0..self.next() % 3).map(|_| self.text()).collect()
    }

    /// A value below `max` that `valid` accepts (0 always is).
    pub(crate) fn enumeration(&mut self, max: u64, valid: impl Fn(i32) -> bool) -> i32 {
        let v = (self.next() % max) as i32;
        if valid(v) { v } else { 0 }
    }
}

/// A flow with arbitrary values in the fields flows carry: any of them may
/// be unset, empty, odd text or an unknown enum value.
pub(crate) fn generated(r: &mut Rng) -> Flow {
    let mut f = Flow::default();
    if !r.chance(5) {
        f.time = Some(Timestamp {
            seconds: (r.next() % 4_000_000_000) as i64,
            nanos: [0, 1_000_000, 123_456_000, 999_999_999][(r.next() % 4) as usize],
        });
    }
    f.uuid = r.text();
    if r.chance(2) {
        f.emitter = Some(Emitter {
            name: r.text(),
            version: r.text(),
        });
    }
    f.verdict = r.enumeration(12, |v| Verdict::try_from(v).is_ok());
    #[allow(deprecated)]
    {
        f.drop_reason = r.number();
        f.reply = r.chance(2);
        f.summary = r.text();
    }
    if r.chance(2) {
        f.ethernet = Some(Ethernet {
            source: r.text(),
            destination: r.text(),
        });
    }
    if !r.chance(4) {
        f.ip = Some(Ip {
            source: r.text(),
            source_xlated: r.text(),
            destination: r.text(),
            ip_version: r.enumeration(4, |v| IpVersion::try_from(v).is_ok()),
            encrypted: r.chance(3),
        });
    }
    f.l4 = match r.next() % 6 {
        0 => None,
        1 => Some(Layer4 { protocol: None }),
        2 => Some(Layer4 {
            protocol: Some(Protocol::Tcp(Tcp {
                source_port: r.number(),
                destination_port: r.number(),
                flags: r.chance(4).then_some(()).map_or_else(
                    || {
                        Some(TcpFlags {
                            fin: r.chance(2),
                            syn: r.chance(2),
                            rst: r.chance(2),
                            psh: r.chance(2),
                            ack: r.chance(2),
                            urg: r.chance(2),
                            ece: r.chance(2),
                            cwr: r.chance(2),
                            ns: r.chance(2),
                        })
                    },
                    |_| None,
                ),
            })),
        }),
        3 => Some(Layer4 {
            protocol: Some(Protocol::Udp(Udp {
                source_port: r.number(),
                destination_port: r.number(),
            })),
        }),
        4 => Some(Layer4 {
            protocol: Some(Protocol::IcmPv4(IcmPv4 {
                r#type: r.number(),
                code: r.number(),
            })),
        }),
        _ => Some(Layer4 {
            protocol: Some(Protocol::IcmPv6(IcmPv6 {
                r#type: r.number(),
                code: r.number(),
            })),
        }),
    };
    for side in [&mut f.source, &mut f.destination] {
        if !r.chance(4) {
            *side = Some(
                EndpointData {
                    id: r.number(),
                    identity: r.number(),
                    cluster_name: r.text(),
                    namespace: r.text(),
                    labels: r.texts(),
                    pod_name: r.text(),
                    workloads: (0..r.next() % 3)
                        .map(|_| Workload {
                            name: r.text(),
                            kind: r.text(),
                        })
                        .collect(),
                }
                .into(),
            );
        }
    }
    f.r#type = r.enumeration(8, |v| FlowType::try_from(v).is_ok());
    f.node_name = r.text();
    f.node_labels = r.texts();
    f.source_names = r.texts();
    f.destination_names = r.texts();
    if r.chance(2) {
        f.event_type = Some(CiliumEventType {
            r#type: r.number() as i32,
            sub_type: r.number() as i32 - 5,
        });
    }
    f.traffic_direction = r.enumeration(4, |v| TrafficDirection::try_from(v).is_ok());
    f.policy_match_type = r.number();
    f.trace_observation_point = r.enumeration(110, |v| TraceObservationPoint::try_from(v).is_ok());
    f.trace_reason = r.enumeration(10, |v| TraceReason::try_from(v).is_ok());
    f.drop_reason_desc = r.enumeration(200, |v| DropReason::try_from(v).is_ok());
    if r.chance(2) {
        f.is_reply = Some(BoolValue { value: r.chance(2) });
    }
    if r.chance(2) {
        f.interface = Some(NetworkInterface {
            index: r.number(),
            name: r.text(),
        });
    }
    f.proxy_port = r.number();
    f.socket_cookie = if r.chance(2) { r.next() } else { 0 };
    f.cgroup_id = if r.chance(2) { r.next() } else { 0 };
    f.policy_log = r.texts();
    f.webb_kernel_drop_reason = r.text();
    f.webb_packets = if r.chance(2) { r.next() % 1000 } else { 0 };
    f.webb_bytes = if r.chance(2) { r.next() } else { 0 };
    f.webb_emit_reason = r.enumeration(8, |v| WebbEmitReason::try_from(v).is_ok());
    f.auth_type = r.enumeration(5, |v| AuthType::try_from(v).is_ok());
    f.debug_capture_point = r.enumeration(30, |v| DebugCapturePoint::try_from(v).is_ok());
    f.sock_xlate_point = r.enumeration(8, |v| SocketTranslationPoint::try_from(v).is_ok());
    f
}
