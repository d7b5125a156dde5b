//! The one-line protobuf text form of a `GetFlowsRequest`, as Hubble's `-D`
//! logs the request it sends (`number:20 whitelist:{source_pod:"shop/"}`):
//! fields in declaration order, zero values left out, enums by name.

use webb_proto::{
    flow::{DropReason, FlowFilter, IpVersion, TrafficDirection, Verdict},
    observer::GetFlowsRequest,
    wkt::Timestamp,
};

/// Writes `name:value` pairs separated by single spaces.
#[derive(Default)]
struct Text(String);

impl Text {
    fn field(&mut self, name: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        self.0.push_str(name);
        self.0.push(':');
        self.0.push_str(value);
    }
    fn string(&mut self, name: &str, v: &str) {
        self.field(name, &quote(v));
    }
    fn strings(&mut self, name: &str, vs: &[String]) {
        for v in vs {
            self.string(name, v);
        }
    }
    fn message(&mut self, name: &str, inner: Text) {
        self.field(name, &format!("{{{}}}", inner.0));
    }
    fn numbers<T: ToString>(&mut self, name: &str, vs: &[T]) {
        for v in vs {
            self.field(name, &v.to_string());
        }
    }
    fn enums(&mut self, name: &str, vs: &[i32], names: impl Fn(i32) -> Option<&'static str>) {
        for &v in vs {
            self.field(name, &names(v).map_or_else(|| v.to_string(), str::to_owned));
        }
    }
}

/// A protobuf text string: `"`, `\` and control bytes escaped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn timestamp(t: &Timestamp) -> Text {
    let mut x = Text::default();
    if t.seconds != 0 {
        x.field("seconds", &t.seconds.to_string());
    }
    if t.nanos != 0 {
        x.field("nanos", &t.nanos.to_string());
    }
    x
}

fn filter(f: &FlowFilter) -> Text {
    let mut x = Text::default();
    x.strings("uuid", &f.uuid);
    x.strings("source_ip", &f.source_ip);
    x.strings("source_ip_xlated", &f.source_ip_xlated);
    x.strings("source_pod", &f.source_pod);
    x.strings("source_fqdn", &f.source_fqdn);
    x.strings("source_label", &f.source_label);
    x.strings("source_service", &f.source_service);
    for w in &f.source_workload {
        x.message("source_workload", workload(&w.name, &w.kind));
    }
    x.strings("source_cluster_name", &f.source_cluster_name);
    x.strings("destination_ip", &f.destination_ip);
    x.strings("destination_pod", &f.destination_pod);
    x.strings("destination_fqdn", &f.destination_fqdn);
    x.strings("destination_label", &f.destination_label);
    x.strings("destination_service", &f.destination_service);
    for w in &f.destination_workload {
        x.message("destination_workload", workload(&w.name, &w.kind));
    }
    x.strings("destination_cluster_name", &f.destination_cluster_name);
    x.enums("traffic_direction", &f.traffic_direction, |v| {
        TrafficDirection::try_from(v).ok().map(|e| e.as_str_name())
    });
    x.enums("verdict", &f.verdict, |v| {
        Verdict::try_from(v).ok().map(|e| e.as_str_name())
    });
    x.enums("drop_reason_desc", &f.drop_reason_desc, |v| {
        DropReason::try_from(v).ok().map(|e| e.as_str_name())
    });
    for i in &f.interface {
        let mut y = Text::default();
        if i.index != 0 {
            y.field("index", &i.index.to_string());
        }
        if !i.name.is_empty() {
            y.string("name", &i.name);
        }
        x.message("interface", y);
    }
    for t in &f.event_type {
        let mut y = Text::default();
        if t.r#type != 0 {
            y.field("type", &t.r#type.to_string());
        }
        if t.match_sub_type {
            y.field("match_sub_type", "true");
        }
        if t.sub_type != 0 {
            y.field("sub_type", &t.sub_type.to_string());
        }
        x.message("event_type", y);
    }
    x.strings("http_status_code", &f.http_status_code);
    x.strings("protocol", &f.protocol);
    x.strings("source_port", &f.source_port);
    x.strings("destination_port", &f.destination_port);
    x.numbers("reply", &f.reply);
    x.strings("dns_query", &f.dns_query);
    x.numbers("source_identity", &f.source_identity);
    x.numbers("destination_identity", &f.destination_identity);
    x.strings("http_method", &f.http_method);
    x.strings("http_path", &f.http_path);
    x.strings("http_url", &f.http_url);
    for h in &f.http_header {
        let mut y = Text::default();
        if !h.key.is_empty() {
            y.string("key", &h.key);
        }
        if !h.value.is_empty() {
            y.string("value", &h.value);
        }
        x.message("http_header", y);
    }
    for t in &f.tcp_flags {
        let mut y = Text::default();
        for (set, name) in [
            (t.fin, "FIN"),
            (t.syn, "SYN"),
            (t.rst, "RST"),
            (t.psh, "PSH"),
            (t.ack, "ACK"),
            (t.urg, "URG"),
            (t.ece, "ECE"),
            (t.cwr, "CWR"),
            (t.ns, "NS"),
        ] {
            if set {
                y.field(name, "true");
            }
        }
        x.message("tcp_flags", y);
    }
    x.strings("node_name", &f.node_name);
    x.strings("node_labels", &f.node_labels);
    x.enums("ip_version", &f.ip_version, |v| {
        IpVersion::try_from(v).ok().map(|e| e.as_str_name())
    });
    x.strings("trace_id", &f.trace_id);
    x.numbers("ip_trace_id", &f.ip_trace_id);
    x.numbers("encrypted", &f.encrypted);
    x.strings("webb_tls_sni", &f.webb_tls_sni);
    x.strings("webb_tls_version", &f.webb_tls_version);
    if let Some(e) = f.experimental.as_ref() {
        let mut y = Text::default();
        y.strings("cel_expression", &e.cel_expression);
        x.message("experimental", y);
    }
    x
}

fn workload(name: &str, kind: &str) -> Text {
    let mut y = Text::default();
    if !name.is_empty() {
        y.string("name", name);
    }
    if !kind.is_empty() {
        y.string("kind", kind);
    }
    y
}

/// The request in protobuf text form.
pub fn request(r: &GetFlowsRequest) -> String {
    let mut x = Text::default();
    if r.number != 0 {
        x.field("number", &r.number.to_string());
    }
    if r.first {
        x.field("first", "true");
    }
    if r.follow {
        x.field("follow", "true");
    }
    for f in &r.blacklist {
        x.message("blacklist", filter(f));
    }
    for f in &r.whitelist {
        x.message("whitelist", filter(f));
    }
    if let Some(t) = &r.since {
        x.message("since", timestamp(t));
    }
    if let Some(t) = &r.until {
        x.message("until", timestamp(t));
    }
    if let Some(m) = &r.field_mask {
        let mut y = Text::default();
        y.strings("paths", &m.paths);
        x.message("field_mask", y);
    }
    x.0
}

#[cfg(test)]
mod tests {
    use webb_proto::wkt::FieldMask;

    use super::*;

    #[test]
    fn requests_read_as_hubble_logs_them() {
        let r = GetFlowsRequest {
            number: 3,
            first: true,
            whitelist: vec![FlowFilter {
                source_pod: vec!["shop/".into()],
                verdict: vec![Verdict::Dropped as i32],
                ..Default::default()
            }],
            since: Some(Timestamp {
                seconds: 1717236960,
                nanos: 0,
            }),
            field_mask: Some(FieldMask {
                paths: vec!["time".into(), "IP".into()],
            }),
            ..Default::default()
        };
        assert_eq!(
            request(&r),
            r#"number:3 first:true whitelist:{source_pod:"shop/" verdict:DROPPED} since:{seconds:1717236960} field_mask:{paths:"time" paths:"IP"}"#
        );
    }
}
