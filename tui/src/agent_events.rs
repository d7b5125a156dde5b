//! `webb observe agent-events`: what the agents learned and did (endpoints,
//! interfaces, the IP cache, policies, Services), printed as `hubble observe
//! agent-events` prints them.

use webb_proto::{
    flow::{AgentEvent, AgentEventType, ServiceUpsertNotificationAddr, agent_event::Notification},
    observer::{GetAgentEventsRequest, GetAgentEventsResponse},
    wkt::Timestamp,
};

use crate::{
    conn::ConfigFile,
    events::{self, Event, EventsArgs},
    observe::Selectors,
    time::TimeFormat,
};

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

pub async fn run(args: EventsArgs, config: &ConfigFile) -> anyhow::Result<()> {
    let req = request(&args.selectors);
    events::run(&args, config, "GetAgentEvents", |mut c| async move {
        c.get_agent_events(req).await
    })
    .await
}

impl Event for GetAgentEventsResponse {
    const TABLE_HEADER: &'static [&'static str] = &["TYPE", "DETAILS"];

    fn time(&self) -> Option<&Timestamp> {
        self.time.as_ref()
    }

    fn node_name(&self) -> &str {
        &self.node_name
    }

    fn present(&self) -> bool {
        self.agent_event.is_some()
    }

    fn fields(&self, tf: TimeFormat) -> Vec<(&'static str, String)> {
        let Some(e) = &self.agent_event else {
            return Vec::new();
        };
        vec![("TYPE", type_name(e.r#type)), ("DETAILS", details(e, tf))]
    }

    fn compact(fields: &[(&'static str, String)]) -> String {
        match fields {
            [(_, ty), (_, details)] => format!("{ty} ({details})"),
            _ => String::new(),
        }
    }

    fn table_cells(fields: Vec<(&'static str, String)>) -> Vec<String> {
        fields.into_iter().map(|(_, v)| v).collect()
    }

    fn json(&self) -> String {
        webb_proto::json::to_go_string(self)
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
    use crate::printer::Format;
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
        events::tests::printed(format, node, events)
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
            "Nov 14 22:13:20.123 [kind-worker]: ENDPOINT_CREATED (id: 1234, namespace: shop, pod name: web-1^[[2J)\n\
             Nov 14 22:13:20.123 [kind-worker]: IPCACHE_UPSERTED (cidr: 10.0.0.7/32, identity: 5001, old identity: 5000, encrypt key: 0)\n"
        );
        assert_eq!(
            out(Format::Dict, false, &[ipcache(), ipcache()]),
            "  TIMESTAMP: Nov 14 22:13:20.123\n       TYPE: IPCACHE_UPSERTED\n    DETAILS: cidr: 10.0.0.7/32, identity: 5001, old identity: 5000, encrypt key: 0\n\
             ------------  TIMESTAMP: Nov 14 22:13:20.123\n       TYPE: IPCACHE_UPSERTED\n    DETAILS: cidr: 10.0.0.7/32, identity: 5001, old identity: 5000, encrypt key: 0\n"
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
