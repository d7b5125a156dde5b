//! The merge against mock nodes: the generated Observer server trait served
//! over in-memory duplex transports, each node scripted (what it sends, when,
//! whether it heartbeats, fails or stays silent).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tonic::{Status, transport::Channel};
use webb_proto::{
    flow::{Flow, FlowFilter, Verdict},
    observer::{
        GetFlowsRequest, GetFlowsResponse, get_flows_response::ResponseTypes,
        observer_server::ObserverServer,
    },
    relay::NodeState,
    wkt::Timestamp,
};
use webb_tests::synthetic::{FlowStream, Script, SyntheticNode, heartbeat};

use super::{Options, start};
use crate::pool::Pool;

/// One scripted step of a mock node's GetFlows stream.
#[derive(Clone)]
enum Step {
    /// Wait, then send a flow with this time (ms after the test's epoch).
    Flow { wait_ms: u64, at_ms: i64 },
    /// Wait, then send a heartbeat with this watermark.
    Beat { wait_ms: u64, at_ms: i64 },
    /// Wait, then fail the stream.
    Fail { wait_ms: u64 },
}

#[derive(Clone)]
struct Mock {
    epoch_ns: i128,
    /// Flows in the node's ring, answered to non-follow requests (times in ms).
    history: Vec<i64>,
    /// What a follow stream sends after the history.
    live: Vec<Step>,
    /// Like a webb agent: asked for heartbeats, the first one comes right
    /// after the history (its watermark, the newest flow of it).
    marks_history: bool,
    seen: Arc<Mutex<Vec<GetFlowsRequest>>>,
}

fn flow(node: &str, epoch_ns: i128, at_ms: i64) -> GetFlowsResponse {
    let t = Timestamp::from_nanos(epoch_ns + i128::from(at_ms) * 1_000_000);
    GetFlowsResponse {
        time: Some(t),
        node_name: node.to_owned(),
        response_types: Some(ResponseTypes::Flow(Box::new(Flow {
            time: Some(t),
            node_name: node.to_owned(),
            verdict: Verdict::Forwarded as i32,
            ..Default::default()
        }))),
    }
}

impl Script for Mock {
    fn get_flows(&self, name: &str, req: GetFlowsRequest) -> FlowStream {
        self.seen.lock().unwrap().push(req.clone());
        let mut history: Vec<i64> = self.history.clone();
        if req.number > 0 && (req.number as usize) < history.len() {
            history = if req.first {
                history[..req.number as usize].to_vec()
            } else {
                history[history.len() - req.number as usize..].to_vec()
            };
        }
        let (name, epoch) = (name.to_owned(), self.epoch_ns);
        let newest = history.iter().copied().max().unwrap_or(0);
        let head = futures::stream::iter(history.into_iter().map({
            let name = name.clone();
            move |t| Ok(flow(&name, epoch, t))
        }));
        if !req.follow {
            return Box::pin(head);
        }
        let marker = (self.marks_history && req.webb_heartbeat_ms > 0).then(|| {
            let t = Timestamp::from_nanos(epoch + i128::from(newest) * 1_000_000);
            Ok(heartbeat(&name, t))
        });
        let head = head.chain(futures::stream::iter(marker));
        let live = futures::stream::iter(self.live.clone()).then(move |step| {
            let name = name.clone();
            async move {
                match step {
                    Step::Flow { wait_ms, at_ms } => {
                        if wait_ms > 0 {
                            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                        }
                        Ok(flow(&name, epoch, at_ms))
                    }
                    Step::Beat { wait_ms, at_ms } => {
                        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                        let t = Timestamp::from_nanos(epoch + i128::from(at_ms) * 1_000_000);
                        Ok(heartbeat(&name, t))
                    }
                    Step::Fail { wait_ms } => {
                        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                        Err(Status::unavailable("node went away"))
                    }
                }
            }
        });
        // After its script a live node stays open and silent.
        let forever = futures::stream::pending();
        Box::pin(head.chain(live).chain(forever))
    }

    fn num_flows(&self) -> u64 {
        self.history.len() as u64
    }
}

/// Serves a mock over in-memory duplex pipes and returns a channel to it.
fn in_memory(mock: SyntheticNode<Mock>) -> Channel {
    let (conn_tx, conn_rx) = mpsc::unbounded_channel::<tokio::io::DuplexStream>();
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::UnboundedReceiverStream::new(conn_rx)
            .map(Ok::<_, std::io::Error>);
        let _ = tonic::transport::Server::builder()
            .add_service(ObserverServer::new(mock))
            .serve_with_incoming(incoming)
            .await;
    });
    tonic::transport::Endpoint::from_static("http://mock.invalid").connect_with_connector_lazy(
        tower::service_fn(move |_: tonic::transport::Uri| {
            let conn_tx = conn_tx.clone();
            async move {
                let (client, server) = tokio::io::duplex(1 << 20);
                conn_tx
                    .send(server)
                    .map_err(|_| std::io::Error::other("mock server gone"))?;
                Ok::<_, std::io::Error>(TokioIo::new(client))
            }
        }),
    )
}

struct Cluster {
    pool: Arc<Pool>,
    seen: Vec<Arc<Mutex<Vec<GetFlowsRequest>>>>,
    epoch_ns: i128,
}

async fn cluster(nodes: Vec<(&str, Vec<i64>, Vec<Step>)>) -> Cluster {
    cluster_of(nodes, false).await
}

/// With `webb_agents`, the mock nodes mark the end of their history.
async fn cluster_of(nodes: Vec<(&str, Vec<i64>, Vec<Step>)>, webb_agents: bool) -> Cluster {
    let epoch_ns = Timestamp::from(std::time::SystemTime::now()).as_nanos();
    let pool = Pool::new(None, Duration::from_secs(1));
    let mut seen = Vec::new();
    for (name, history, live) in nodes {
        let s = Arc::new(Mutex::new(Vec::new()));
        seen.push(s.clone());
        let mock = SyntheticNode {
            name: name.to_owned(),
            script: Mock {
                epoch_ns,
                history,
                live,
                marks_history: webb_agents,
                seen: s,
            },
        };
        pool.add_channel(name, in_memory(mock));
    }
    let n = seen.len();
    let start = Instant::now();
    while pool.connected().len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "mock nodes not connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Cluster {
        pool,
        seen,
        epoch_ns,
    }
}

const OPTS: Options = Options {
    delay: Duration::from_millis(100),
    node_name: "test-relay",
};

/// A live (follow) query through the merge.
fn follow(c: &Cluster) -> mpsc::Receiver<Result<crate::raw::Raw, Status>> {
    start(
        c.pool.clone(),
        GetFlowsRequest {
            follow: true,
            ..Default::default()
        },
        OPTS,
    )
}

fn ms(c: &Cluster, r: &GetFlowsResponse) -> i64 {
    ((r.time.unwrap().as_nanos() - c.epoch_ns) / 1_000_000) as i64
}

/// Collects responses until `n` flows arrived or the timeout passed.
async fn collect(
    rx: &mut mpsc::Receiver<Result<crate::raw::Raw, Status>>,
    n: usize,
    timeout: Duration,
) -> Vec<(Instant, GetFlowsResponse)> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while out
        .iter()
        .filter(|(_, r): &&(Instant, GetFlowsResponse)| {
            matches!(r.response_types, Some(ResponseTypes::Flow(_)))
        })
        .count()
        < n
    {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Ok(r))) => out.push((Instant::now(), r.decode().expect("well-formed"))),
            _ => break,
        }
    }
    out
}

fn flows_only(v: &[(Instant, GetFlowsResponse)]) -> Vec<&GetFlowsResponse> {
    v.iter()
        .map(|(_, r)| r)
        .filter(|r| matches!(r.response_types, Some(ResponseTypes::Flow(_))))
        .collect()
}

#[tokio::test]
async fn history_is_merged_in_time_order_with_the_clusters_last_n_and_filters_pushed_down() {
    let c = cluster(vec![
        ("a", vec![0, 30, 60, 90, 120], vec![]),
        ("b", vec![10, 20, 70, 100, 110], vec![]),
        ("c", vec![5, 15, 25, 35, 45], vec![]),
    ])
    .await;
    let filter = FlowFilter {
        verdict: vec![Verdict::Forwarded as i32],
        ..Default::default()
    };
    let req = GetFlowsRequest {
        number: 3,
        whitelist: vec![filter.clone()],
        ..Default::default()
    };
    let mut rx = start(c.pool.clone(), req, OPTS);
    let got = collect(&mut rx, 100, Duration::from_secs(3)).await;
    let times: Vec<i64> = flows_only(&got).iter().map(|r| ms(&c, r)).collect();
    // Each node sends its last 3; the cluster's newest 3 come out.
    assert_eq!(times, [100, 110, 120]);
    assert!(rx.recv().await.is_none(), "a historical query ends");
    for seen in &c.seen {
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].number, 3);
        assert_eq!(seen[0].whitelist, vec![filter.clone()]);
        assert_eq!(seen[0].webb_heartbeat_ms, 0);
    }
}

#[tokio::test]
async fn first_n_is_the_clusters_oldest_n() {
    let c = cluster(vec![
        ("a", vec![0, 30, 60, 90, 120], vec![]),
        ("b", vec![10, 20, 70, 100, 110], vec![]),
        ("c", vec![5, 15, 25, 35, 45], vec![]),
    ])
    .await;
    let req = GetFlowsRequest {
        number: 4,
        first: true,
        ..Default::default()
    };
    let mut rx = start(c.pool.clone(), req, OPTS);
    let got = collect(&mut rx, 100, Duration::from_secs(3)).await;
    let times: Vec<i64> = flows_only(&got).iter().map(|r| ms(&c, r)).collect();
    assert_eq!(times, [0, 5, 10, 15]);
    assert!(rx.recv().await.is_none(), "a historical query ends");
    for seen in &c.seen {
        let seen = seen.lock().unwrap();
        assert_eq!((seen[0].number, seen[0].first), (4, true));
    }
}

#[tokio::test]
async fn live_streams_from_skewed_nodes_come_out_in_order() {
    // b's flows arrive late (its clock of delivery lags by 40 ms), a is on
    // time; a heartbeats, b does not (a Hubble agent).
    let a = (0..10)
        .flat_map(|i| {
            [
                Step::Flow {
                    wait_ms: 20,
                    at_ms: 1000 + i * 20,
                },
                Step::Beat {
                    wait_ms: 0,
                    at_ms: 1000 + i * 20 + 5,
                },
            ]
        })
        .collect();
    let b = (0..10)
        .map(|i| Step::Flow {
            wait_ms: if i == 0 { 60 } else { 20 },
            at_ms: 1010 + i * 20,
        })
        .collect();
    let c = cluster(vec![("a", vec![], a), ("b", vec![], b)]).await;
    let mut rx = follow(&c);
    let got = collect(&mut rx, 20, Duration::from_secs(5)).await;
    let times: Vec<i64> = flows_only(&got).iter().map(|r| ms(&c, r)).collect();
    assert_eq!(times.len(), 20, "{times:?}");
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "out of order: {times:?}"
    );
    // The relay asked our agents for heartbeats.
    assert!(c.seen[0].lock().unwrap()[0].webb_heartbeat_ms > 0);
}

#[tokio::test]
async fn a_silent_node_delays_flows_by_at_most_the_bound() {
    let c = cluster(vec![
        (
            "a",
            vec![],
            vec![Step::Flow {
                wait_ms: 200,
                at_ms: 1,
            }],
        ),
        ("silent", vec![], vec![]),
    ])
    .await;
    let began = Instant::now();
    let mut rx = follow(&c);
    let got = collect(&mut rx, 1, Duration::from_secs(3)).await;
    let (at, _) = got
        .iter()
        .find(|(_, r)| matches!(r.response_types, Some(ResponseTypes::Flow(_))))
        .expect("the flow comes out despite the silent node");
    let waited = at.duration_since(began) - Duration::from_millis(200);
    assert!(
        waited < OPTS.delay + Duration::from_millis(150),
        "held {waited:?}"
    );
}

#[tokio::test]
async fn a_failing_node_is_reported_and_the_others_go_on() {
    let c = cluster(vec![
        (
            "a",
            vec![],
            (0..6)
                .map(|i| Step::Flow {
                    wait_ms: 50,
                    at_ms: i * 50,
                })
                .collect(),
        ),
        (
            "b",
            vec![],
            vec![
                Step::Flow {
                    wait_ms: 20,
                    at_ms: 10,
                },
                Step::Fail { wait_ms: 30 },
            ],
        ),
    ])
    .await;
    let mut rx = follow(&c);
    let got = collect(&mut rx, 7, Duration::from_secs(5)).await;
    let unavailable = got.iter().any(|(_, r)| {
        matches!(&r.response_types, Some(ResponseTypes::NodeStatus(n))
            if n.state_change == NodeState::NodeUnavailable as i32 && n.node_names == ["b"])
    });
    assert!(unavailable, "node b's failure is reported in the stream");
    assert_eq!(flows_only(&got).len(), 7, "a's six flows and b's one");
}

#[tokio::test]
async fn a_slow_client_gets_lost_events_not_unbounded_memory() {
    const N: i64 = 20_000;
    let burst = (0..N)
        .map(|i| Step::Flow {
            wait_ms: 0,
            at_ms: i,
        })
        .collect();
    let c = cluster(vec![("a", vec![], burst)]).await;
    let mut rx = follow(&c);
    // Read nothing while the burst arrives.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut flows, mut lost) = (0u64, 0u64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while flows + lost < N as u64 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Ok(raw))) => {
                let r = raw.decode().expect("well-formed");
                match &r.response_types {
                    Some(ResponseTypes::Flow(_)) => flows += 1,
                    Some(ResponseTypes::LostEvents(l)) => {
                        assert_eq!(r.node_name, "test-relay");
                        lost += l.num_events_lost;
                    }
                    _ => {}
                }
            }
            _ => break,
        }
    }
    assert!(lost > 0, "the slow client was told what it missed");
    assert_eq!(flows + lost, N as u64, "every flow is delivered or counted");
    assert!(
        flows <= super::CLIENT_QUEUE as u64 + 64,
        "{flows} flows queued for one client"
    );
}

/// Three nodes' histories and, a little later, a live flow on each.
fn histories_then_live() -> Vec<(&'static str, Vec<i64>, Vec<Step>)> {
    let live = |wait_ms, at_ms| vec![Step::Flow { wait_ms, at_ms }];
    vec![
        ("a", vec![0, 30, 60, 90, 120], live(600, 1000)),
        ("b", vec![10, 20, 70, 100, 110], live(700, 1010)),
        ("c", vec![5, 15, 25, 35, 45], live(800, 1020)),
    ]
}

/// How long after `began` the first flow came.
fn first_flow_after(got: &[(Instant, GetFlowsResponse)], began: Instant) -> Duration {
    got.iter()
        .find(|(_, r)| matches!(r.response_types, Some(ResponseTypes::Flow(_))))
        .map(|(at, _)| at.duration_since(began))
        .expect("flows")
}

fn last_follow(c: &Cluster, n: u64) -> mpsc::Receiver<Result<crate::raw::Raw, Status>> {
    let req = GetFlowsRequest {
        number: n,
        follow: true,
        ..Default::default()
    };
    start(c.pool.clone(), req, OPTS)
}

#[tokio::test]
async fn last_n_with_follow_is_the_clusters_newest_n_then_live() {
    let c = cluster_of(histories_then_live(), true).await;
    let began = Instant::now();
    let mut rx = last_follow(&c, 3);
    let got = collect(&mut rx, 6, Duration::from_secs(5)).await;
    let times: Vec<i64> = flows_only(&got).iter().map(|r| ms(&c, r)).collect();
    // Not 3 per node (nine flows of history): the cluster's newest 3.
    assert_eq!(times, [100, 110, 120, 1000, 1010, 1020]);
    // Every node marked its history's end, so the newest 3 came out before
    // any live flow was sent, without waiting for the Hubble-agent bound.
    let first = first_flow_after(&got, began);
    assert!(
        first < Duration::from_millis(600),
        "history after {first:?}"
    );
    for seen in &c.seen {
        let seen = seen.lock().unwrap();
        assert_eq!((seen[0].number, seen[0].follow), (3, true));
    }
}

#[tokio::test]
async fn last_n_with_follow_from_agents_that_mark_nothing_waits_at_most_the_bound() {
    // Hubble agents send no heartbeat: the hold ends at the bound, and what
    // was released by then is cut to the newest N. The live flows come
    // after the bound here, so they follow the history.
    let mut nodes = histories_then_live();
    for (_, _, live) in &mut nodes {
        if let Some(Step::Flow { wait_ms, .. }) = live.first_mut() {
            *wait_ms += super::HISTORY_SILENCE.as_millis() as u64;
        }
    }
    let c = cluster_of(nodes, false).await;
    let began = Instant::now();
    let mut rx = last_follow(&c, 3);
    let got = collect(&mut rx, 6, Duration::from_secs(10)).await;
    let times: Vec<i64> = flows_only(&got).iter().map(|r| ms(&c, r)).collect();
    assert_eq!(times, [100, 110, 120, 1000, 1010, 1020]);
    let first = first_flow_after(&got, began);
    assert!(
        first < super::HISTORY_SILENCE + Duration::from_millis(500),
        "history after {first:?}"
    );
}
