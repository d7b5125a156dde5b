//! The relay's own metrics, served on `--metrics-listen` as OpenMetrics
//! text: nodes by state, clients, flows forwarded, flows slow clients lost,
//! and the merge delay (a flow's age when the merge releases it).

use std::sync::{Arc, LazyLock};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, text::encode},
    metrics::{
        MetricType, counter::Counter, gauge::ConstGauge, gauge::Gauge, histogram::Histogram,
    },
    registry::Registry,
};
use webb_proto::relay::NodeState;

use crate::pool::Pool;

pub struct RelayMetrics {
    pub clients: Gauge,
    pub forwarded: Counter,
    pub lost: Counter,
    pub merge_delay: Histogram,
}

/// Counted always (atomics); served only with `--metrics-listen`.
pub static METRICS: LazyLock<RelayMetrics> = LazyLock::new(|| RelayMetrics {
    clients: Gauge::default(),
    forwarded: Counter::default(),
    lost: Counter::default(),
    merge_delay: Histogram::new([
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]),
});

/// Nodes by state, read from the pool at each scrape.
#[derive(Debug)]
struct Nodes(Arc<Pool>);

impl Collector for Nodes {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let nodes = self.0.nodes();
        let connected = nodes
            .iter()
            .filter(|n| n.state == NodeState::NodeConnected)
            .count();
        let mut m = enc.encode_descriptor(
            "webb_relay_nodes",
            "Node agents the relay knows, by state",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in [
            ("connected", connected),
            ("unavailable", nodes.len() - connected),
        ] {
            ConstGauge::new(n as i64).encode(m.encode_family(&[("state", state)])?)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

/// The OpenMetrics text of the relay's metrics.
pub fn encode_all(pool: &Arc<Pool>) -> String {
    let m = &*METRICS;
    let mut r = Registry::default();
    r.register(
        "webb_relay_clients",
        "GetFlows streams being served",
        m.clients.clone(),
    );
    r.register(
        "webb_relay_flows_forwarded",
        "Flows, lost-event reports and node status sent to clients",
        m.forwarded.clone(),
    );
    r.register(
        "webb_relay_lost_events",
        "Flows slow clients could not take, reported to them as lost_events",
        m.lost.clone(),
    );
    r.register(
        "webb_relay_merge_delay_seconds",
        "Age of a flow when the merge released it to a client",
        m.merge_delay.clone(),
    );
    r.register_collector(Box::new(Nodes(pool.clone())));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}
