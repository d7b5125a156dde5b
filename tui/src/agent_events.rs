//! `webb observe agent-events`: what the agents learned and did (endpoints,
//! interfaces, the IP cache, policies, Services), printed as `hubble observe
//! agent-events` prints them.

use std::io::{self, Write};

use futures::StreamExt as _;
use webb_proto::{
    flow::{AgentEvent, AgentEventType, ServiceUpsertNotificationAddr, agent_event::Notification},
    observer::{GetAgentEventsRequest, GetAgentEventsResponse, observer_client::ObserverClient},
    wkt::Timestamp,
};

use crate::{
    conn::{ConfigFile, Server, ServerArgs},
    observe::{OutputArgs, Selectors},
    printer::Format,
    status::printable,
    time::TimeFormat,
};

#[derive(Debug, Clone, clap::Args)]
pub struct AgentEventsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub selectors: Selectors,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The request the selectors make, as for flows: the last 20 when nothing
/// selects.
pub fn request(s: &Selectors) -> GetAgentEventsRequest {
    let (number, first) = s.number_and_first();
    GetAgentEventsRequest {
        number,
        first,
        follow: s.follow,
        since: s.since.map(Timestamp::from),
        until: s.until.map(Timestamp::from),
    }
}

pub async fn run(args: AgentEventsArgs, config: &ConfigFile) -> anyhow::Result<()> {
    let (server, _forward) = Server::resolve_forwarded(&args.server, config).await?;
    let channel = server.connect().await?;
    let mut stream = ObserverClient::new(channel)
        .get_agent_events(request(&args.selectors))
        .await
        .map_err(|s| server.call_error("GetAgentEvents", &s))?
        .into_inner();
    let mut printer = EventPrinter::new(&args.output, io::BufWriter::new(io::stdout()));
    while let Some(item) = stream.next().await {
        let r = item.map_err(|s| server.call_error("GetAgentEvents stream", &s))?;
        match printer.write(&r) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
        if args.selectors.follow {
            printer.flush()?;
        }
    }
    match printer.finish() {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Prints agent events in the chosen format; `table` aligns its columns
/// when finished.
pub struct EventPrinter<W: Write> {
    format: Format,
    time_format: TimeFormat,
    node_name: bool,
    out: W,
    lines: u64,
    /// Table rows, aligned on finish.
    rows: Vec<Vec<String>>,
}

impl<W: Write> EventPrinter<W> {
    pub fn new(o: &OutputArgs, out: W) -> Self {
        Self {
            format: o.output,
            time_format: o.time_format,
            node_name: o.print_node_name,
            out,
            lines: 0,
            rows: Vec::new(),
        }
    }

    fn time(&self, t: Option<&Timestamp>) -> String {
        t.and_then(Timestamp::to_datetime)
            .map(|t| self.time_format.format(t))
            .unwrap_or_else(|| "N/A".to_owned())
    }

    pub fn write(&mut self, r: &GetAgentEventsResponse) -> io::Result<()> {
        let Some(e) = &r.agent_event else {
            // Hubble skips a response without an event.
            return Ok(());
        };
        let ts = self.time(r.time.as_ref());
        let ty = type_name(e.r#type);
        let details = printable(&details(e, self.time_format));
        let node = printable(&r.node_name);
        match self.format {
            Format::Json | Format::Jsonpb => {
                let json = webb_proto::json::to_go_string(r);
                writeln!(self.out, "{json}")?;
            }
            Format::Compact => {
                let node = if self.node_name {
                    format!(" [{node}]")
                } else {
                    String::new()
                };
                writeln!(self.out, "{ts}{node}: {ty} ({details})")?;
            }
            Format::Dict => {
                if self.lines != 0 {
                    self.out.write_all(b"------------\n")?;
                }
                writeln!(self.out, "  TIMESTAMP: {ts}")?;
                if self.node_name {
                    writeln!(self.out, "       NODE: {node}")?;
                }
                writeln!(self.out, "       TYPE: {ty}\n    DETAILS: {details}")?;
            }
            Format::Table => {
                if self.rows.is_empty() {
                    let mut h = vec!["TIMESTAMP".to_owned()];
                    if self.node_name {
                        h.push("NODE".to_owned());
                    }
                    h.extend(["TYPE".to_owned(), "DETAILS".to_owned()]);
                    self.rows.push(h);
                }
                let mut row = vec![ts];
                if self.node_name {
                    row.push(node);
                }
                row.extend([ty, details]);
                self.rows.push(row);
            }
        }
        self.lines += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if self.format == Format::Table {
            self.write_table()?;
        }
        self.out.flush()
    }

    pub fn finish(mut self) -> io::Result<()> {
        self.flush()
    }

    /// The rows through Go's tabwriter, as Hubble aligns them.
    fn write_table(&mut self) -> io::Result<()> {
        let mut t = crate::printer::tabwriter::TabWriter::new(&mut self.out, 2, 3);
        for r in std::mem::take(&mut self.rows) {
            t.write_all(r.join("\t").as_bytes())?;
            t.write_all(b"\n")?;
        }
        t.flush()
    }
}

fn type_name(t: i32) -> String {
    AgentEventType::try_from(t)
        .map(|t| t.as_str_name().to_owned())
        .unwrap_or_else(|_| t.to_string())
}

fn addr(a: &ServiceUpsertNotificationAddr) -> String {
    match a.ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(_)) => format!("[{}]:{}", a.ip, a.port),
        _ => format!("{}:{}", a.ip, a.port),
    }
}

/// The DETAILS text, field for field as Hubble writes it; UNKNOWN when the
/// notification does not match the type.
pub fn details(e: &AgentEvent, tf: TimeFormat) -> String {
    use AgentEventType as T;
    let t = AgentEventType::try_from(e.r#type).unwrap_or(T::AgentEventUnknown);
    let n = e.notification.as_ref();
    let text = match (t, n) {
        (T::AgentEventUnknown, Some(Notification::Unknown(u))) => Some(format!(
            "type: {}, notification: {}",
            u.r#type, u.notification
        )),
        (T::AgentStarted, Some(Notification::AgentStart(a))) => Some(format!(
            "start time: {}",
            a.time
                .as_ref()
                .and_then(Timestamp::to_datetime)
                .map(|t| tf.format(t))
                .unwrap_or_else(|| "N/A".to_owned())
        )),
        (T::PolicyUpdated | T::PolicyDeleted, Some(Notification::PolicyUpdate(p))) => {
            Some(format!(
                "labels: [{}], revision: {}, count: {}",
                p.labels.join(","),
                p.revision,
                p.rule_count
            ))
        }
        (
            T::EndpointRegenerateSuccess | T::EndpointRegenerateFailure,
            Some(Notification::EndpointRegenerate(r)),
        ) => {
            let mut s = format!("id: {}, labels: [{}]", r.id, r.labels.join(","));
            if !r.error.is_empty() {
                s.push_str(&format!(", error: {}", r.error));
            }
            Some(s)
        }
        (T::EndpointCreated | T::EndpointDeleted, Some(Notification::EndpointUpdate(u))) => {
            let mut s = format!("id: {}", u.id);
            if !u.namespace.is_empty() {
                s.push_str(&format!(", namespace: {}", u.namespace));
            }
            if !u.pod_name.is_empty() {
                s.push_str(&format!(", pod name: {}", u.pod_name));
            }
            Some(s)
        }
        (T::IpcacheUpserted | T::IpcacheDeleted, Some(Notification::IpcacheUpdate(i))) => {
            let mut s = format!("cidr: {}, identity: {}", i.cidr, i.identity);
            if let Some(o) = &i.old_identity {
                s.push_str(&format!(", old identity: {}", o.value));
            }
            if !i.host_ip.is_empty() {
                s.push_str(&format!(", host ip: {}", i.host_ip));
            }
            if !i.old_host_ip.is_empty() {
                s.push_str(&format!(", old host ip: {}", i.old_host_ip));
            }
            s.push_str(&format!(", encrypt key: {}", i.encrypt_key));
            Some(s)
        }
        (T::ServiceUpserted, Some(Notification::ServiceUpsert(v))) => {
            let mut s = format!("id: {}", v.id);
            if let Some(fe) = &v.frontend_address {
                s.push_str(&format!(", frontend: {}", addr(fe)));
            }
            if !v.backend_addresses.is_empty() {
                let b: Vec<String> = v.backend_addresses.iter().map(addr).collect();
                s.push_str(&format!(", backends: [{}]", b.join(",")));
            }
            if !v.r#type.is_empty() {
                s.push_str(&format!(", type: {}", v.r#type));
            }
            #[allow(deprecated)]
            if !v.traffic_policy.is_empty() {
                s.push_str(&format!(", traffic policy: {}", v.traffic_policy));
            }
            if !v.namespace.is_empty() {
                s.push_str(&format!(", namespace: {}", v.namespace));
            }
            if !v.name.is_empty() {
                s.push_str(&format!(", name: {}", v.name));
            }
            Some(s)
        }
        (T::ServiceDeleted, Some(Notification::ServiceDelete(d))) => Some(format!("id: {}", d.id)),
        _ => None,
    };
    text.unwrap_or_else(|| "UNKNOWN".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use webb_proto::flow::{EndpointUpdateNotification, IpCacheNotification};

    fn resp(e: AgentEvent) -> GetAgentEventsResponse {
        GetAgentEventsResponse {
            agent_event: Some(e),
            node_name: "kind-worker".into(),
            time: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_000_000,
            }),
        }
    }

    fn out(format: Format, node: bool, events: &[GetAgentEventsResponse]) -> String {
        let o = OutputArgs {
            output: format,
            time_format: TimeFormat::StampMilli,
            color: crate::observe::ColorWhen::Never,
            print_node_name: node,
            numeric: false,
            ip_translation: true,
            field_mask: Vec::new(),
            print_policy_names: false,
            silent: false,
            debug: false,
        };
        let mut p = EventPrinter::new(&o, Vec::new());
        for e in events {
            p.write(e).unwrap();
        }
        p.flush().unwrap();
        String::from_utf8(p.out).unwrap()
    }

    fn created() -> GetAgentEventsResponse {
        resp(AgentEvent {
            r#type: AgentEventType::EndpointCreated as i32,
            notification: Some(Notification::EndpointUpdate(EndpointUpdateNotification {
                id: 1234,
                namespace: "shop".into(),
                pod_name: "web-1\x1b[2J".into(),
                ..Default::default()
            })),
        })
    }

    fn ipcache() -> GetAgentEventsResponse {
        resp(AgentEvent {
            r#type: AgentEventType::IpcacheUpserted as i32,
            notification: Some(Notification::IpcacheUpdate(IpCacheNotification {
                cidr: "10.0.0.7/32".into(),
                identity: 5001,
                old_identity: Some(webb_proto::wkt::UInt32Value { value: 5000 }),
                ..Default::default()
            })),
        })
    }

    #[test]
    fn compact_dict_and_table_as_hubble_writes_them() {
        assert_eq!(
            out(Format::Compact, true, &[created(), ipcache()]),
            "Nov 14 22:13:20.123 [kind-worker]: ENDPOINT_CREATED (id: 1234, namespace: shop, pod name: web-1\\u{1b}[2J)\n\
             Nov 14 22:13:20.123 [kind-worker]: IPCACHE_UPSERTED (cidr: 10.0.0.7/32, identity: 5001, old identity: 5000, encrypt key: 0)\n"
        );
        assert_eq!(
            out(Format::Dict, false, &[ipcache(), ipcache()]),
            "  TIMESTAMP: Nov 14 22:13:20.123\n       TYPE: IPCACHE_UPSERTED\n    DETAILS: cidr: 10.0.0.7/32, identity: 5001, old identity: 5000, encrypt key: 0\n\
             ------------\n  TIMESTAMP: Nov 14 22:13:20.123\n       TYPE: IPCACHE_UPSERTED\n    DETAILS: cidr: 10.0.0.7/32, identity: 5001, old identity: 5000, encrypt key: 0\n"
        );
        let table = out(Format::Table, false, &[ipcache()]);
        assert_eq!(
            table,
            "TIMESTAMP             TYPE               DETAILS\n\
             Nov 14 22:13:20.123   IPCACHE_UPSERTED   cidr: 10.0.0.7/32, identity: 5001, old identity: 5000, encrypt key: 0\n"
        );
    }

    #[test]
    fn json_is_the_response_with_proto_names() {
        let j: serde_json::Value =
            serde_json::from_str(out(Format::Json, false, &[ipcache()]).trim()).unwrap();
        assert_eq!(j["agent_event"]["type"], "IPCACHE_UPSERTED");
        assert_eq!(j["agent_event"]["ipcache_update"]["cidr"], "10.0.0.7/32");
        assert_eq!(j["agent_event"]["ipcache_update"]["old_identity"], 5000);
        assert_eq!(j["node_name"], "kind-worker");
        assert_eq!(j["time"], "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn a_mismatched_or_unknown_event_says_unknown() {
        let e = AgentEvent {
            r#type: AgentEventType::ServiceDeleted as i32,
            notification: None,
        };
        assert_eq!(details(&e, TimeFormat::StampMilli), "UNKNOWN");
        assert_eq!(type_name(99), "99");
    }
}
