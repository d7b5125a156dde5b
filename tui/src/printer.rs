//! Hubble's compact one-line flow format.

use std::io::{self, Write};

use webb_proto::{
    flow::{Endpoint, Flow, Verdict, layer4},
    names,
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
};

/// Cilium's trace observation point names by trace sub type.
fn trace_point(sub_type: i32) -> &'static str {
    match sub_type {
        0 => "to-endpoint",
        1 => "to-proxy",
        2 => "to-host",
        3 => "to-stack",
        4 => "to-overlay",
        5 => "from-endpoint",
        6 => "from-proxy",
        7 => "from-host",
        8 => "from-stack",
        9 => "from-overlay",
        10 => "from-network",
        11 => "to-network",
        _ => "unknown",
    }
}

fn ports(f: &Flow) -> (Option<u32>, Option<u32>) {
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(layer4::Protocol::Tcp(t)) => (Some(t.source_port), Some(t.destination_port)),
        Some(layer4::Protocol::Udp(u)) => (Some(u.source_port), Some(u.destination_port)),
        Some(layer4::Protocol::Sctp(s)) => (Some(s.source_port), Some(s.destination_port)),
        _ => (None, None),
    }
}

fn host_port(ip: &str, e: Option<&Endpoint>, port: Option<u32>) -> String {
    let name = match e {
        Some(e) if !e.pod_name.is_empty() => format!("{}/{}", e.namespace, e.pod_name),
        _ => ip.to_owned(),
    };
    let with_port = match port {
        Some(p) => format!("{name}:{p}"),
        None => name,
    };
    let id = match e {
        Some(e) if e.labels.iter().any(|l| l == "reserved:world") => "(world)".to_owned(),
        Some(e) if e.labels.iter().any(|l| l == "reserved:host") => "(host)".to_owned(),
        Some(e) if e.identity != 0 => format!("(ID:{})", e.identity),
        _ => String::new(),
    };
    if id.is_empty() {
        with_port
    } else {
        format!("{with_port} {id}")
    }
}

fn time(f: &GetFlowsResponse) -> String {
    f.time
        .and_then(|t| t.to_datetime())
        .map(|t| t.format("%b %e %H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| "N/A".to_owned())
}

#[allow(deprecated)] // Summary is deprecated but is what Hubble prints.
pub fn compact<W: Write>(out: &mut W, resp: &GetFlowsResponse) -> io::Result<()> {
    match &resp.response_types {
        Some(ResponseTypes::Flow(f)) => {
            let ip = f.ip.clone().unwrap_or_default();
            let (sp, dp) = ports(f);
            let mut src = host_port(&ip.source, f.source.as_ref(), sp);
            let mut dst = host_port(&ip.destination, f.destination.as_ref(), dp);
            let arrow = match f.is_reply {
                Some(r) if r.value => {
                    std::mem::swap(&mut src, &mut dst);
                    "<-"
                }
                Some(_) => "->",
                None => "<>",
            };
            let et = f.event_type.unwrap_or_default();
            let kind = match et.r#type {
                names::EVENT_TRACE => trace_point(et.sub_type).to_owned(),
                names::EVENT_DROP => {
                    let desc = webb_proto::flow::DropReason::try_from(f.drop_reason_desc)
                        .map(|d| d.as_str_name().to_owned())
                        .unwrap_or_default();
                    if f.webb_kernel_drop_reason.is_empty() {
                        desc
                    } else {
                        format!("{desc} (kernel: {})", f.webb_kernel_drop_reason)
                    }
                }
                other => names::event_type_name(other)
                    .unwrap_or("unknown")
                    .to_owned(),
            };
            let verdict = Verdict::try_from(f.verdict)
                .map(|v| v.as_str_name())
                .unwrap_or("UNKNOWN");
            writeln!(
                out,
                "{}: {src} {arrow} {dst} {kind} {verdict} ({})",
                time(resp),
                f.summary
            )
        }
        Some(ResponseTypes::LostEvents(l)) => writeln!(
            out,
            "EVENTS LOST: {} {}",
            webb_proto::flow::LostEventSource::try_from(l.source)
                .map(|s| s.as_str_name())
                .unwrap_or("UNKNOWN"),
            l.num_events_lost
        ),
        Some(ResponseTypes::NodeStatus(n)) => {
            eprintln!("{}: {:?} {}", time(resp), n.node_names, n.message);
            Ok(())
        }
        None => Ok(()),
    }
}
