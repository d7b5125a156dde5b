//! A real Kubernetes API server in place of the double: when
//! `WEBB_TEST_KUBE_API` (its URL), `WEBB_TEST_KUBE_CA` (a file with the CA
//! that signed its serving certificate) and `WEBB_TEST_KUBE_TOKEN` (a
//! cluster-admin bearer token) are set, [`crate::kube_api::KubeApi`] writes
//! the tests' objects to that server instead, and the agent under test
//! talks to it as a ServiceAccount bound to the ClusterRole shipped in
//! `deploy/agent.yaml` (plus the relay's EndpointSlice read), so RBAC is
//! the real one too.
//!
//! A real server has no switch to forget history or drop every watch: with
//! `WEBB_TEST_KUBE_RESTART` (a shell command that restarts it, returning
//! once the new one is started) `drop_watches` restarts it, which does
//! both (its watch cache starts anew, so a watch resuming from before
//! gets `410 Gone`); without it, [`Real::supports_faults`] is false and the
//! tests say what they skipped. A pod port-forward needs a kubelet.
//! Requests are counted from the server's own `apiserver_request_total`
//! and `apiserver_longrunning_requests` metrics, as deltas from the start
//! (carried across a restart, which zeroes them).
//!
//! The server should be one of the tests' own (no other nodes, nothing
//! else named `kube-node-*`): the tests assert on every node it lists.
//! Tests against it run one at a time; each one's objects are deleted
//! when it ends. The client is `curl`, which every such machine has.

use std::{
    collections::BTreeMap,
    io::Write as _,
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard},
};

use serde_json::{Value, json};

/// One test at a time on the shared server.
static SERIAL: Mutex<()> = Mutex::new(());

/// A lock, also after another test panicked holding it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const ROLE: &str = "webb-agent-test";
const FIELD_MANAGER: &str = "webb-tests";

pub struct Real {
    pub url: String,
    ca: String,
    token: String,
    agent_token: String,
    /// The ClusterRole's rules as shipped, and as `forbid` has cut them.
    rules: Mutex<Vec<Value>>,
    /// (resource, key) of every object applied, to delete at the end.
    applied: Mutex<Vec<(&'static Resource, String)>>,
    /// Counts at the start (or the last restart), and what was counted
    /// before the last restart.
    baseline: Mutex<(Counts, Counts)>,
    restart: Option<String>,
    _serial: MutexGuard<'static, ()>,
}

/// Requests by (resource, verb).
type Counts = BTreeMap<(String, String), u64>;

/// (path prefix, resource, kind, apiVersion), as the double's table.
pub type Resource = (&'static str, &'static str, &'static str, &'static str);

fn namespaced(r: &Resource) -> bool {
    !matches!(r.1, "namespaces" | "nodes")
}

impl Real {
    /// The real server named by the environment, or `None` (use the double).
    pub fn from_env() -> Option<Self> {
        let url = std::env::var("WEBB_TEST_KUBE_API").ok()?;
        let ca = std::env::var("WEBB_TEST_KUBE_CA").expect("WEBB_TEST_KUBE_CA with _API");
        let token = std::env::var("WEBB_TEST_KUBE_TOKEN").expect("WEBB_TEST_KUBE_TOKEN with _API");
        let serial = lock(&SERIAL);
        let mut real = Self {
            url: url.trim_end_matches('/').to_owned(),
            ca,
            token,
            agent_token: String::new(),
            rules: Mutex::new(shipped_rules()),
            applied: Mutex::new(Vec::new()),
            baseline: Mutex::default(),
            restart: std::env::var("WEBB_TEST_KUBE_RESTART").ok(),
            _serial: serial,
        };
        real.agent_token = real.service_account();
        lock(&real.baseline).0 = real.counts();
        Some(real)
    }

    /// The host:port the server listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        let host = self
            .url
            .split("://")
            .nth(1)
            .unwrap_or(&self.url)
            .split('/')
            .next()
            .unwrap_or_default();
        std::net::ToSocketAddrs::to_socket_addrs(host)
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("WEBB_TEST_KUBE_API {} has no host:port", self.url))
    }

    /// Whether the server can be made to forget history and drop every
    /// watch (a restart command was given).
    pub fn supports_faults(&self) -> bool {
        self.restart.is_some()
    }

    /// Restarts the server and waits until it is ready again.
    pub fn restart(&self) {
        let command = self.restart.as_deref().expect("WEBB_TEST_KUBE_RESTART");
        let carried = self.requests();
        let status = Command::new("sh")
            .args(["-c", command])
            .status()
            .expect("the restart command");
        assert!(status.success(), "{command}: {status}");
        let start = std::time::Instant::now();
        // The old one may answer until it is gone: wait for a fresh start
        // (its request counts begin again) that is ready.
        loop {
            std::thread::sleep(std::time::Duration::from_millis(200));
            if let (200, v) = self.request("GET", "/readyz", "", "")
                && v == "ok"
            {
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "the API server did not come back after {command}"
            );
        }
        *lock(&self.baseline) = (self.counts(), carried);
    }

    /// `curl` one request; (status code, body as JSON or as a string).
    fn request(&self, method: &str, path: &str, content_type: &str, body: &str) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "20",
            "-X",
            method,
            "--cacert",
            &self.ca,
        ])
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", self.token))
        .args(["-w", "\n%{http_code}"])
        .arg(format!("{}{path}", self.url))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if !body.is_empty() {
            cmd.arg("-H")
                .arg(format!("Content-Type: {content_type}"))
                .args(["--data-binary", "@-"]);
        }
        let mut child = cmd.spawn().expect("curl");
        child
            .stdin
            .take()
            .expect("curl's stdin")
            .write_all(body.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: writing the body to curl: {e}"));
        let out = child.wait_with_output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code = code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "{method} {path}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        });
        let value = serde_json::from_str(body).unwrap_or_else(|_| json!(body));
        (code, value)
    }

    fn ok(&self, method: &str, path: &str, content_type: &str, body: &str) -> Value {
        let (code, v) = self.request(method, path, content_type, body);
        assert!(
            (200..300).contains(&code),
            "{method} {path}: {code} {v}\n{body}"
        );
        v
    }

    /// Server-side apply of `object` at `path` (its collection path plus name).
    fn server_side_apply(&self, path: &str, object: &Value, manager: &str) -> Value {
        self.ok(
            "PATCH",
            &format!("{path}?fieldManager={manager}&force=true"),
            "application/apply-patch+yaml",
            &object.to_string(),
        )
    }

    /// The test's ServiceAccount, bound to the shipped rules; its token.
    fn service_account(&self) -> String {
        self.server_side_apply(
            &format!("/api/v1/namespaces/kube-system/serviceaccounts/{ROLE}"),
            &json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": ROLE, "namespace": "kube-system"}}),
            FIELD_MANAGER,
        );
        self.write_role();
        self.server_side_apply(
            &format!("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{ROLE}"),
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": ROLE},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ROLE},
                    "subjects": [{"kind": "ServiceAccount", "name": ROLE, "namespace": "kube-system"}]}),
            FIELD_MANAGER,
        );
        let answer = self.ok(
            "POST",
            &format!("/api/v1/namespaces/kube-system/serviceaccounts/{ROLE}/token"),
            "application/json",
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {"expirationSeconds": 3600}})
            .to_string(),
        );
        answer["status"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("the TokenRequest answer holds no token: {answer}"))
            .to_owned()
    }

    fn write_role(&self) {
        let rules = lock(&self.rules).clone();
        self.server_side_apply(
            &format!("/apis/rbac.authorization.k8s.io/v1/clusterroles/{ROLE}"),
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": ROLE}, "rules": rules}),
            FIELD_MANAGER,
        );
    }

    pub fn write_kubeconfig(&self, path: &std::path::Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             contexts:\n- name: real\n  context:\n    cluster: real\n    user: agent\n\
             current-context: real\nusers:\n- name: agent\n  user:\n    token: {}\n",
            self.url, self.ca, self.agent_token
        );
        std::fs::write(path, text).expect("kubeconfig");
    }

    fn object_path(r: &Resource, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if namespaced(r) => format!("{}/namespaces/{ns}/{}/{name}", r.0, r.1),
            _ => format!("{}/{}/{name}", r.0, r.1),
        }
    }

    /// Creates or updates the object as a client would, then its status
    /// (which a create ignores) through the status subresource, as the
    /// kubelet reports a pod's. Returns the object as the server holds it.
    pub fn apply(&self, r: &'static Resource, mut object: Value) -> Value {
        let m = &mut object["metadata"];
        if let Some(m) = m.as_object_mut() {
            // The server's to set: a uid in an apply is a precondition.
            for k in ["resourceVersion", "uid", "creationTimestamp"] {
                m.remove(k);
            }
        }
        let name = object["metadata"]["name"]
            .as_str()
            .expect("a name")
            .to_owned();
        let namespace = namespaced(r).then(|| {
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned()
        });
        if let Some(ns) = &namespace {
            // Its own field manager, so the test's labels on it stay.
            self.server_side_apply(
                &format!("/api/v1/namespaces/{ns}"),
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                "webb-tests-namespaces",
            );
            object["metadata"]["namespace"] = json!(ns);
        }
        complete_for_validation(r.1, &name, &mut object);
        let status = object.as_object_mut().and_then(|o| o.remove("status"));
        let path = Self::object_path(r, namespace.as_deref(), &name);
        let mut stored = self.server_side_apply(&path, &object, FIELD_MANAGER);
        if let Some(status) = status {
            let mut s = json!({"apiVersion": r.3, "kind": r.2,
                               "metadata": {"name": name}, "status": status});
            if let Some(ns) = &namespace {
                s["metadata"]["namespace"] = json!(ns);
            }
            stored = self.server_side_apply(&format!("{path}/status"), &s, FIELD_MANAGER);
        }
        let key = match &namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name,
        };
        let mut applied = lock(&self.applied);
        if !applied.iter().any(|(ar, k)| ar.1 == r.1 && *k == key) && r.1 != "namespaces" {
            applied.push((r, key));
        }
        stored
    }

    /// Deletes at once (grace 0: no kubelet will confirm a pod's end).
    pub fn delete(&self, r: &'static Resource, key: &str) {
        let (namespace, name) = match key.split_once('/') {
            Some((ns, n)) => (Some(ns), n),
            None => (None, key),
        };
        let path = Self::object_path(r, namespace, name);
        let (code, v) = self.request(
            "DELETE",
            &format!("{path}?gracePeriodSeconds=0"),
            "application/json",
            "",
        );
        assert!(
            (200..300).contains(&code) || code == 404,
            "DELETE {path}: {code} {v}"
        );
        lock(&self.applied).retain(|(ar, k)| !(ar.1 == r.1 && k == key));
    }

    /// Takes (or gives back) the agent's list and watch of a resource, in
    /// its ClusterRole: the server then answers 403 as RBAC words it.
    pub fn forbid(&self, resource_name: &str, forbidden: bool) {
        {
            let mut rules = lock(&self.rules);
            if forbidden {
                for rule in rules.iter_mut() {
                    if let Some(rs) = rule["resources"].as_array_mut() {
                        rs.retain(|r| r.as_str() != Some(resource_name));
                    }
                }
                rules.retain(|r| r["resources"].as_array().is_some_and(|a| !a.is_empty()));
            } else {
                *rules = shipped_rules();
            }
        }
        self.write_role();
    }

    /// LIST and WATCH requests by resource since the start: finished ones
    /// from `apiserver_request_total`, open watches from
    /// `apiserver_longrunning_requests`.
    pub fn requests(&self) -> BTreeMap<(String, String), u64> {
        let mut now = self.counts();
        let (baseline, carried) = &*lock(&self.baseline);
        for (k, v) in now.iter_mut() {
            *v = v.saturating_sub(baseline.get(k).copied().unwrap_or(0));
        }
        for (k, v) in carried {
            *now.entry(k.clone()).or_default() += v;
        }
        now.retain(|_, v| *v > 0);
        now
    }

    fn counts(&self) -> BTreeMap<(String, String), u64> {
        let (code, v) = self.request("GET", "/metrics", "", "");
        assert_eq!(code, 200, "GET /metrics: {v}");
        let text = v.as_str().unwrap_or_default();
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Some((name, labels)) = series.split_once('{') else {
                continue;
            };
            if name != "apiserver_request_total" && name != "apiserver_longrunning_requests" {
                continue;
            }
            let label = |k: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                    .map(|v| v.trim_end_matches(['"', '}']).to_owned())
                    .unwrap_or_default()
            };
            let verb = match label("verb").as_str() {
                "LIST" => "list",
                "WATCH" => "watch",
                _ => continue,
            };
            if !label("subresource").is_empty() {
                continue;
            }
            let n = value.parse::<f64>().unwrap_or(0.0) as u64;
            *out.entry((label("resource"), verb.to_owned())).or_default() += n;
        }
        out
    }
}

impl Drop for Real {
    fn drop(&mut self) {
        let applied = std::mem::take(&mut *lock(&self.applied));
        for (r, key) in applied.iter().rev() {
            self.delete(r, key);
        }
        *lock(&self.rules) = shipped_rules();
        self.write_role();
    }
}

/// The agent's ClusterRole rules from `deploy/agent.yaml`, and the relay's
/// EndpointSlice read for `--peer-k8s-service`.
fn shipped_rules() -> Vec<Value> {
    use serde::Deserialize as _;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/agent.yaml");
    let text = std::fs::read_to_string(path).expect("deploy/agent.yaml");
    let mut rules: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("deploy/agent.yaml is YAML"))
        .filter(|doc| doc["kind"] == "ClusterRole")
        .flat_map(|doc| doc["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(!rules.is_empty(), "no ClusterRole rules in {path}");
    rules.push(
        json!({"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                      "verbs": ["list", "watch"]}),
    );
    rules
}

/// What a real server requires of objects the double takes bare: a
/// ReplicaSet's selector and template (no replicas), a Job's template
/// (suspended). No controller runs them.
fn complete_for_validation(resource: &str, name: &str, object: &mut Value) {
    let template = json!({"metadata": {"labels": {"webb-test": name}},
                          "spec": {"containers": [{"name": "main", "image": "busybox"}]}});
    match resource {
        "replicasets" if object["spec"].is_null() => {
            object["spec"] = json!({"replicas": 0,
                "selector": {"matchLabels": {"webb-test": name}}, "template": template});
        }
        "jobs" if object["spec"].is_null() => {
            let mut t = template;
            t["spec"]["restartPolicy"] = json!("Never");
            object["spec"] = json!({"suspend": true, "template": t});
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_rules_are_read_from_the_manifest() {
        let rules = super::shipped_rules();
        let has = |group: &str, res: &str| {
            rules.iter().any(|r| {
                r["apiGroups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|g| g == group)
                    && r["resources"].as_array().unwrap().iter().any(|x| x == res)
                    && r["verbs"].as_array().unwrap().iter().any(|v| v == "watch")
            })
        };
        assert!(has("", "pods"), "{rules:?}");
        assert!(has("networking.k8s.io", "networkpolicies"), "{rules:?}");
        assert!(has("apps", "replicasets"), "{rules:?}");
        assert!(!has("", "secrets"), "{rules:?}");
    }
}
