//! `webb observe debug-events`: the datapath's debug messages, printed as
//! `hubble observe debug-events` prints them. webb's own kernel programs
//! write none (its agent answers with an empty stream); a Cilium agent's
//! Hubble server does, and this reads it.

use webb_proto::{
    flow::{DebugEventType, Endpoint},
    observer::{GetDebugEventsRequest, GetDebugEventsResponse},
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
pub fn request(s: &Selectors) -> GetDebugEventsRequest {
    let (number, first) = s.number_and_first();
    GetDebugEventsRequest {
        number,
        first,
        follow: s.follow,
        since: s.since.map(Timestamp::from),
        until: s.until.filter(|_| !s.follow).map(Timestamp::from),
    }
}

pub async fn run(args: EventsArgs, config: &ConfigFile) -> anyhow::Result<()> {
    let req = request(&args.selectors);
    events::run(&args, config, "GetDebugEvents", |mut c| async move {
        c.get_debug_events(req).await
    })
    .await
}

/// An endpoint as Hubble's debug-event printer names it: `ns/pod (ID: n)`,
/// a lone reserved label with its ID, or the ID alone; N/A when absent.
fn endpoint_short(e: Option<&Endpoint>) -> String {
    let Some(e) = e else {
        return "N/A".to_owned();
    };
    let id = format!("ID: {}", e.id);
    if !e.namespace.is_empty() && !e.pod_name.is_empty() {
        format!("{}/{} ({id})", e.namespace, e.pod_name)
    } else if let [label] = e.labels.as_slice()
        && label.starts_with("reserved:")
    {
        format!("{label} ({id})")
    } else {
        id
    }
}

impl Event for GetDebugEventsResponse {
    const TABLE_HEADER: &'static [&'static str] = &["FROM", "", "TYPE", "CPU/MARK", "MESSAGE"];

    fn time(&self) -> Option<&Timestamp> {
        self.time.as_ref()
    }

    fn node_name(&self) -> &str {
        &self.node_name
    }

    fn present(&self) -> bool {
        self.debug_event.is_some()
    }

    fn fields(&self, _: TimeFormat) -> Vec<(&'static str, String)> {
        let Some(e) = &self.debug_event else {
            return Vec::new();
        };
        let ty = DebugEventType::try_from(e.r#type)
            .map(|t| t.as_str_name().to_owned())
            .unwrap_or_else(|_| e.r#type.to_string());
        let mark = e
            .hash
            .map(|h| format!("{:#x}", h.value))
            .unwrap_or_else(|| "N/A".to_owned());
        let cpu = e
            .cpu
            .map(|c| format!("{:02}", c.value))
            .unwrap_or_else(|| "N/A".to_owned());
        vec![
            ("TYPE", ty),
            ("FROM", endpoint_short(e.source.as_ref())),
            ("MARK", mark),
            ("CPU", cpu),
            ("MESSAGE", e.message.clone()),
        ]
    }

    fn compact(f: &[(&'static str, String)]) -> String {
        match f {
            [(_, ty), (_, from), (_, mark), (_, cpu), (_, message)] => {
                format!("{from} {ty} MARK: {mark} CPU: {cpu} ({message})")
            }
            _ => String::new(),
        }
    }

    fn table_cells(f: Vec<(&'static str, String)>) -> Vec<String> {
        match f.as_slice() {
            [(_, ty), (_, from), (_, mark), (_, cpu), (_, message)] => vec![
                from.clone(),
                String::new(),
                ty.clone(),
                format!("{cpu} {mark}"),
                message.clone(),
            ],
            _ => Vec::new(),
        }
    }

    fn json(&self) -> String {
        webb_proto::json::to_go_string(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printer::Format;
    use webb_proto::{
        flow::{DebugEvent, EndpointData},
        wkt::{Int32Value, UInt32Value},
    };

    fn resp(source: Option<Endpoint>, ty: i32, message: &str) -> GetDebugEventsResponse {
        GetDebugEventsResponse {
            debug_event: Some(DebugEvent {
                r#type: ty,
                source,
                hash: Some(UInt32Value { value: 0x2a3b }),
                cpu: Some(Int32Value { value: 1 }),
                message: message.into(),
                ..Default::default()
            }),
            node_name: "kind-worker".into(),
            time: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_000_000,
            }),
        }
    }

    fn pod() -> Option<Endpoint> {
        Some(
            EndpointData {
                id: 1234,
                namespace: "shop".into(),
                pod_name: "web-1".into(),
                ..Default::default()
            }
            .into(),
        )
    }

    #[test]
    fn compact_dict_and_table_as_hubble_writes_them() {
        let host = Some(
            EndpointData {
                id: 7,
                labels: vec!["reserved:host".into()],
                ..Default::default()
            }
            .into(),
        );
        let events = [
            resp(pod(), DebugEventType::DbgCtLookup4 as i32, "sport=80"),
            resp(host, 999, "x\x1b[2J"),
        ];
        assert_eq!(
            events::tests::printed(Format::Compact, true, &events),
            "Nov 14 22:13:20.123 [kind-worker]: shop/web-1 (ID: 1234) DBG_CT_LOOKUP4 MARK: 0x2a3b CPU: 01 (sport=80)\n\
             Nov 14 22:13:20.123 [kind-worker]: reserved:host (ID: 7) 999 MARK: 0x2a3b CPU: 01 (x^[[2J)\n"
        );
        assert_eq!(
            events::tests::printed(Format::Dict, false, &events[..1]),
            "  TIMESTAMP: Nov 14 22:13:20.123\n       TYPE: DBG_CT_LOOKUP4\n       FROM: shop/web-1 (ID: 1234)\n       MARK: 0x2a3b\n        CPU: 01\n    MESSAGE: sport=80\n"
        );
        assert_eq!(
            events::tests::printed(Format::Table, false, &events[..1]),
            "TIMESTAMP             FROM                       TYPE             CPU/MARK    MESSAGE\n\
             Nov 14 22:13:20.123   shop/web-1 (ID: 1234)      DBG_CT_LOOKUP4   01 0x2a3b   sport=80\n"
        );
    }

    #[test]
    fn absent_parts_are_na_and_an_empty_response_prints_nothing() {
        let mut r = resp(None, 0, "");
        if let Some(e) = &mut r.debug_event {
            e.hash = None;
            e.cpu = None;
        }
        assert_eq!(
            events::tests::printed(Format::Compact, false, &[r]),
            "Nov 14 22:13:20.123: N/A DBG_EVENT_UNKNOWN MARK: N/A CPU: N/A ()\n"
        );
        let empty = GetDebugEventsResponse::default();
        assert_eq!(events::tests::printed(Format::Compact, false, &[empty]), "");
    }

    #[test]
    fn json_is_the_response_with_proto_names() {
        let out = events::tests::printed(Format::Json, false, &[resp(pod(), 6, "m")]);
        let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(j["debug_event"]["type"], "DBG_CT_LOOKUP");
        assert_eq!(j["debug_event"]["source"]["pod_name"], "web-1");
        assert_eq!(j["debug_event"]["cpu"], 1);
        assert_eq!(j["node_name"], "kind-worker");
    }

    #[test]
    fn the_request_follows_the_selectors() {
        let s = Selectors {
            all: false,
            first: None,
            last: None,
            follow: false,
            since: None,
            until_arg: None,
            until: None,
        };
        assert_eq!(request(&s).number, 20);
    }
}
