//! A Kubernetes API server double for the end-to-end tests: no real API
//! server can be installed from the package registries CI reaches, so the
//! tests run the real agent against this one, which follows the real
//! protocol for what the agent uses:
//!
//! - `GET /api/v1/{pods,namespaces,nodes}` and the group paths of
//!   networkpolicies, replicasets, jobs and endpointslices (cluster-wide or
//!   under `namespaces/NS/`, with equality `labelSelector`s) list with `limit` and `continue`
//!   chunks and a list `resourceVersion`; `Accept: ...;as=PartialObjectMetadataList`
//!   gets metadata only, as the real server answers kube-rs's metadata watches;
//! - `?watch=true&resourceVersion=N` streams `ADDED`/`MODIFIED`/`DELETED`
//!   events after N, `BOOKMARK`s when asked (`allowWatchBookmarks`), ends
//!   after `timeoutSeconds`, and answers a version older than the last
//!   compaction with an `ERROR` event carrying `410 Gone`, forcing a re-list;
//! - a resource can be made forbidden (a `403` Status naming verb and
//!   resource, as RBAC words it), and every open watch can be dropped.
//!
//! Every request is counted by resource and verb, so tests and benchmarks
//! can check that an agent makes one watch per kind.
//!
//! With `WEBB_TEST_KUBE_API`, `_CA` and `_TOKEN` set, the same calls go to
//! that real API server instead (`crate::kube_real`), so the same scenarios
//! run against the real thing.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, body::Frame, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// The resources the double serves: (path prefix, resource, kind, apiVersion).
const RESOURCES: &[(&str, &str, &str, &str)] = &[
    ("/api/v1", "pods", "Pod", "v1"),
    ("/api/v1", "namespaces", "Namespace", "v1"),
    ("/api/v1", "nodes", "Node", "v1"),
    ("/api/v1", "services", "Service", "v1"),
    (
        "/apis/networking.k8s.io/v1",
        "networkpolicies",
        "NetworkPolicy",
        "networking.k8s.io/v1",
    ),
    ("/apis/apps/v1", "replicasets", "ReplicaSet", "apps/v1"),
    ("/apis/batch/v1", "jobs", "Job", "batch/v1"),
    (
        "/apis/discovery.k8s.io/v1",
        "endpointslices",
        "EndpointSlice",
        "discovery.k8s.io/v1",
    ),
];

/// Which objects a request asks for: a namespace (a namespaced path) and
/// equality label selectors (`labelSelector=k=v,k2=v2`).
#[derive(Clone, Default)]
struct Selection {
    namespace: Option<String>,
    labels: Vec<(String, String)>,
}

impl Selection {
    fn matches(&self, o: &Value) -> bool {
        let m = &o["metadata"];
        if let Some(ns) = &self.namespace
            && m["namespace"].as_str() != Some(ns.as_str())
        {
            return false;
        }
        self.labels
            .iter()
            .all(|(k, v)| m["labels"][k].as_str() == Some(v.as_str()))
    }
}

#[derive(Clone)]
struct Event {
    rv: u64,
    resource: &'static str,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// resource → key → object (with its resourceVersion set).
    objects: HashMap<&'static str, BTreeMap<String, Value>>,
    /// Every change, for watches that resume from a version.
    log: Vec<Event>,
    /// Versions at or below this are gone (410).
    compacted: u64,
    forbidden: HashSet<String>,
    requests: BTreeMap<(String, String), u64>,
    /// Paged lists in progress: token → (rv, remaining items).
    pages: HashMap<String, (u64, Vec<Value>)>,
    next_token: u64,
    /// Where `pods/NAME/portforward` connects: pod key → loopback address.
    forwards: HashMap<String, SocketAddr>,
}

/// A running API server double; stops when dropped.
pub struct KubeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Event>,
    /// Bumped to end every open watch.
    drops: broadcast::Sender<()>,
    runtime: Option<tokio::runtime::Runtime>,
    real: Option<crate::kube_real::Real>,
}

fn resource(name: &str) -> &'static (&'static str, &'static str, &'static str, &'static str) {
    RESOURCES
        .iter()
        .find(|r| r.1 == name)
        .unwrap_or_else(|| panic!("the double does not serve {name}"))
}

fn key_of(o: &Value) -> String {
    let m = &o["metadata"];
    let name = m["name"].as_str().unwrap_or_default();
    match m["namespace"].as_str() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

impl KubeApi {
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("listen");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            rv: 1000,
            ..State::default()
        }));
        let (events, _) = broadcast::channel(65536);
        let (drops, _) = broadcast::channel(16);
        let server = Server {
            state: state.clone(),
            events: events.clone(),
            drops: drops.clone(),
        };
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        let real = crate::kube_real::Real::from_env();
        Self {
            addr: real.as_ref().map_or(addr, |r| r.addr()),
            state,
            events,
            drops,
            runtime: Some(runtime),
            real,
        }
    }

    /// Whether this is a real API server (see `crate::kube_real`): it
    /// cannot forward to a pod (no kubelet).
    pub fn is_real(&self) -> bool {
        self.real.is_some()
    }

    /// Whether [`KubeApi::compact`] and [`KubeApi::drop_watches`] work: on
    /// the double always, on a real server when it can be restarted.
    pub fn supports_faults(&self) -> bool {
        self.real.as_ref().is_none_or(|r| r.supports_faults())
    }

    /// A kubeconfig that points at the double (plain HTTP, no credentials).
    pub fn write_kubeconfig(&self, path: &std::path::Path) {
        if let Some(real) = &self.real {
            return real.write_kubeconfig(path);
        }
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: double\n  context:\n    cluster: double\n    user: agent\n\
             current-context: double\nusers:\n- name: agent\n  user: {{}}\n",
            self.addr
        );
        std::fs::write(path, text).expect("kubeconfig");
    }

    /// Creates or replaces an object (`MODIFIED` if it existed); returns
    /// it as the server holds it (with its uid).
    pub fn apply(&self, resource_name: &str, mut object: Value) -> Value {
        let r = resource(resource_name);
        object["apiVersion"] = json!(r.3);
        object["kind"] = json!(r.2);
        if let Some(real) = &self.real {
            return real.apply(r, object);
        }
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(format!("uid-{rv}"));
        }
        if object["metadata"]["creationTimestamp"].is_null() {
            object["metadata"]["creationTimestamp"] = json!("2026-12-01T00:00:00Z");
        }
        let key = key_of(&object);
        let existed = s
            .objects
            .entry(r.1)
            .or_default()
            .insert(key, object.clone())
            .is_some();
        let ev = Event {
            rv,
            resource: r.1,
            kind: if existed { "MODIFIED" } else { "ADDED" },
            object: object.clone(),
        };
        s.log.push(ev.clone());
        drop(s);
        let _ = self.events.send(ev);
        object
    }

    pub fn delete(&self, resource_name: &str, key: &str) {
        let r = resource(resource_name);
        if let Some(real) = &self.real {
            return real.delete(r, key);
        }
        let mut s = self.state.lock().unwrap();
        let Some(mut object) = s.objects.entry(r.1).or_default().remove(key) else {
            return;
        };
        s.rv += 1;
        let rv = s.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let ev = Event {
            rv,
            resource: r.1,
            kind: "DELETED",
            object,
        };
        s.log.push(ev.clone());
        drop(s);
        let _ = self.events.send(ev);
    }

    /// Forgets history: a watch resuming from before now gets `410 Gone`.
    /// (A real server's restart, in `drop_watches`, forgets its history.)
    pub fn compact(&self) {
        if let Some(real) = &self.real {
            assert!(real.supports_faults(), "WEBB_TEST_KUBE_RESTART");
            return;
        }
        let mut s = self.state.lock().unwrap();
        s.compacted = s.rv;
        s.log.clear();
    }

    /// Ends every open watch (a restarted API server, a dropped connection).
    pub fn drop_watches(&self) {
        if let Some(real) = &self.real {
            return real.restart();
        }
        let _ = self.drops.send(());
    }

    /// Answers list and watch of a resource with 403 Forbidden (or not).
    pub fn forbid(&self, resource_name: &str, forbidden: bool) {
        if let Some(real) = &self.real {
            return real.forbid(resource_name, forbidden);
        }
        let mut s = self.state.lock().unwrap();
        if forbidden {
            s.forbidden.insert(resource_name.to_owned());
        } else {
            s.forbidden.remove(resource_name);
        }
    }

    /// Makes `pods/portforward` of this pod reach `addr` (the double's
    /// stand-in for the pod's network namespace).
    pub fn forward_pod(&self, key: &str, addr: SocketAddr) {
        assert!(!self.is_real(), "a real pod port-forward needs a kubelet");
        self.state
            .lock()
            .unwrap()
            .forwards
            .insert(key.to_owned(), addr);
    }

    /// Requests served so far, by (resource, verb: list or watch).
    pub fn requests(&self) -> BTreeMap<(String, String), u64> {
        if let Some(real) = &self.real {
            return real.requests();
        }
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[derive(Clone)]
struct Server {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Event>,
    drops: broadcast::Sender<()>,
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

fn status(code: u16, reason: &str, message: String) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// The metadata-only form of an object, as `as=PartialObjectMetadata` asks.
fn partial(o: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": o["metadata"]})
}

impl Server {
    async fn handle(&self, mut req: Request<hyper::body::Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.replace("%2F", "/").replace("%3D", "=")))
            .collect();
        let metadata_only = req
            .headers()
            .get("accept")
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
        if let Some(resp) = self.single(&mut req, &path) {
            return resp;
        }
        let found = RESOURCES.iter().find_map(|r| {
            if path == format!("{}/{}", r.0, r.1) {
                return Some((r, None));
            }
            let rest = path.strip_prefix(&format!("{}/namespaces/", r.0))?;
            let (ns, res) = rest.split_once('/')?;
            (res == r.1).then(|| (r, Some(ns.to_owned())))
        });
        let Some((r, namespace)) = found else {
            return full(
                404,
                &status(404, "NotFound", format!("the server could not find {path}")),
            );
        };
        let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        let verb = if watch { "watch" } else { "list" };
        {
            let mut s = self.state.lock().unwrap();
            *s.requests
                .entry((r.1.to_owned(), verb.to_owned()))
                .or_default() += 1;
            if s.forbidden.contains(r.1) {
                let group = r.3.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
                let msg = format!(
                    "{res} is forbidden: User \"system:serviceaccount:kube-system:webb-agent\" cannot {verb} resource \"{res}\" in API group \"{group}\" at the cluster scope",
                    res = r.1
                );
                return full(403, &status(403, "Forbidden", msg));
            }
        }
        let selection = Selection {
            namespace,
            labels: query
                .get("labelSelector")
                .map(|l| {
                    l.split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
        };
        if watch {
            self.watch(r, &query, metadata_only, selection)
        } else {
            self.list(r, &query, metadata_only, &selection)
        }
    }

    /// `GET .../namespaces/NS/RESOURCE/NAME` and
    /// `.../pods/NAME/portforward`; `None` for other paths.
    fn single(
        &self,
        req: &mut Request<hyper::body::Incoming>,
        path: &str,
    ) -> Option<Response<Body>> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // api v1 namespaces NS RESOURCE NAME [SUB]
        let (ns, resource, name, sub) = match parts.as_slice() {
            ["api", "v1", "namespaces", ns, res, name] => (*ns, *res, *name, None),
            ["api", "v1", "namespaces", ns, res, name, sub] => (*ns, *res, *name, Some(*sub)),
            _ => return None,
        };
        let r = RESOURCES.iter().find(|r| r.1 == resource)?;
        let key = format!("{ns}/{name}");
        let verb = match sub {
            Some("portforward") => "portforward",
            Some(_) => return None,
            None => "get",
        };
        let mut s = self.state.lock().unwrap();
        *s.requests
            .entry((r.1.to_owned(), verb.to_owned()))
            .or_default() += 1;
        if s.forbidden.contains(r.1) || s.forbidden.contains(&format!("{}/{verb}", r.1)) {
            let (res, v) = if verb == "portforward" {
                ("pods/portforward".to_owned(), "create")
            } else {
                (r.1.to_owned(), verb)
            };
            let msg = format!(
                "{res} \"{name}\" is forbidden: User \"tester\" cannot {v} resource \"{res}\" in API group \"\" in the namespace \"{ns}\""
            );
            return Some(full(403, &status(403, "Forbidden", msg)));
        }
        let Some(object) = s.objects.get(r.1).and_then(|m| m.get(&key)).cloned() else {
            return Some(full(
                404,
                &status(404, "NotFound", format!("{} \"{name}\" not found", r.1)),
            ));
        };
        if verb == "get" {
            return Some(full(200, &object));
        }
        let target = s.forwards.get(&key).copied();
        drop(s);
        Some(portforward(req, target))
    }

    fn list(
        &self,
        r: &(&'static str, &'static str, &'static str, &'static str),
        query: &HashMap<String, String>,
        metadata_only: bool,
        selection: &Selection,
    ) -> Response<Body> {
        let mut s = self.state.lock().unwrap();
        let limit: usize = query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let (rv, mut items) = match query.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => match s.pages.remove(token) {
                Some(p) => p,
                None => {
                    return full(
                        410,
                        &status(
                            410,
                            "Expired",
                            "The provided continue parameter is too old".into(),
                        ),
                    );
                }
            },
            None => (
                s.rv,
                s.objects
                    .get(r.1)
                    .map(|m| {
                        m.values()
                            .filter(|o| selection.matches(o))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
        };
        let rest = if items.len() > limit {
            items.split_off(limit)
        } else {
            Vec::new()
        };
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if !rest.is_empty() {
            s.next_token += 1;
            let token = format!("page-{}", s.next_token);
            s.pages.insert(token.clone(), (rv, rest));
            meta["continue"] = json!(token);
        }
        let (kind, api_version, items) = if metadata_only {
            (
                "PartialObjectMetadataList".to_owned(),
                "meta.k8s.io/v1",
                items.iter().map(partial).collect::<Vec<_>>(),
            )
        } else {
            (format!("{}List", r.2), r.3, items)
        };
        full(
            200,
            &json!({"kind": kind, "apiVersion": api_version, "metadata": meta, "items": items}),
        )
    }

    fn watch(
        &self,
        r: &(&'static str, &'static str, &'static str, &'static str),
        query: &HashMap<String, String>,
        metadata_only: bool,
        selection: Selection,
    ) -> Response<Body> {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let bookmarks = query
            .get("allowWatchBookmarks")
            .is_some_and(|b| b == "true");
        let timeout = Duration::from_secs(
            query
                .get("timeoutSeconds")
                .and_then(|t| t.parse().ok())
                .unwrap_or(290),
        );
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
        let line = move |kind: &str, object: &Value| {
            let object = if metadata_only && kind != "ERROR" {
                partial(object)
            } else {
                object.clone()
            };
            Bytes::from(format!("{}\n", json!({"type": kind, "object": object})))
        };
        let (backlog, gone, mut live) = {
            let s = self.state.lock().unwrap();
            let gone = from != 0 && from < s.compacted;
            let backlog: Vec<Event> = s
                .log
                .iter()
                .filter(|e| e.resource == r.1 && e.rv > from && selection.matches(&e.object))
                .cloned()
                .collect();
            (backlog, gone, self.events.subscribe())
        };
        let mut drops = self.drops.subscribe();
        let resource = r.1;
        let kind = r.2;
        let api_version = r.3;
        tokio::spawn(async move {
            if gone {
                let st = status(
                    410,
                    "Expired",
                    format!("too old resource version: {from} (current)"),
                );
                let _ = tx.send(line("ERROR", &st)).await;
                return;
            }
            let mut last = from;
            for e in backlog {
                last = e.rv;
                if tx.send(line(e.kind, &e.object)).await.is_err() {
                    return;
                }
            }
            last = last.max(from);
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    e = live.recv() => match e {
                        Ok(e) if e.resource == resource && e.rv > last && selection.matches(&e.object) => {
                            last = e.rv;
                            if tx.send(line(e.kind, &e.object)).await.is_err() { return; }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(_) => return,
                    },
                    _ = tick.tick(), if bookmarks => {
                        let bm = json!({"kind": kind, "apiVersion": api_version,
                            "metadata": {"resourceVersion": last.to_string()}});
                        if tx.send(line("BOOKMARK", &bm)).await.is_err() { return; }
                    }
                    _ = drops.recv() => return,
                    _ = &mut deadline => return,
                }
            }
        });
        let body = StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx)
                .map(|b| Ok::<_, Infallible>(Frame::data(b))),
        );
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("transfer-encoding", "chunked")
            .body(http_body_util::BodyExt::boxed(body))
            .unwrap()
    }
}

/// A Pod object as the API server holds it once the kubelet reported it.
pub fn pod_object(
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    node: &str,
    ip: &str,
    owner: Option<(&str, &str)>,
) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let mut o = json!({
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    });
    if let Some((kind, owner)) = owner {
        o["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind,
            "name": owner, "uid": format!("uid-{owner}"), "controller": true}]);
    }
    o
}

/// Answers a pod port-forward: the WebSocket upgrade with the
/// `v4.channel.k8s.io` subprotocol, then, for the one port asked, the data
/// channel 0 and error channel 1, each opened by a frame carrying the port
/// number (little endian), and bytes relayed to `target` and back, each
/// WebSocket message prefixed by its channel.
fn portforward(
    req: &mut Request<hyper::body::Incoming>,
    target: Option<SocketAddr>,
) -> Response<Body> {
    use futures::SinkExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key, protocol::Role};

    let port: u16 = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("ports="))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return full(
            400,
            &status(400, "BadRequest", "not a WebSocket upgrade".into()),
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut *req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        let p = port.to_le_bytes();
        if ws.send(Message::binary(vec![0, p[0], p[1]])).await.is_err()
            || ws.send(Message::binary(vec![1, p[0], p[1]])).await.is_err()
        {
            return;
        }
        let Some(target) = target else {
            let _ = ws
                .send(Message::binary(
                    [&[1u8][..], b"error forwarding port: no such pod network"].concat(),
                ))
                .await;
            return;
        };
        let Ok(mut tcp) = tokio::net::TcpStream::connect(target).await else {
            let _ = ws
                .send(Message::binary(
                    [&[1u8][..], b"error forwarding port: connection refused"].concat(),
                ))
                .await;
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                m = futures::StreamExt::next(&mut ws) => match m {
                    Some(Ok(Message::Binary(b)))
                        if b.len() > 1 && b[0] == 0 && tcp.write_all(&b[1..]).await.is_err() =>
                    {
                        return;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    _ => {}
                },
                n = tcp.read(&mut buf) => match n {
                    Ok(0) | Err(_) => { let _ = ws.close(None).await; return; }
                    Ok(n) => {
                        let mut m = Vec::with_capacity(n + 1);
                        m.push(0);
                        m.extend_from_slice(&buf[..n]);
                        if ws.send(Message::binary(m)).await.is_err() { return; }
                    }
                },
            }
        }
    });
    Response::builder()
        .status(101)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .header("sec-websocket-protocol", "v4.channel.k8s.io")
        .body(Full::new(Bytes::new()).boxed())
        .unwrap()
}
