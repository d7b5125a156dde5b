//! `-P`/`--port-forward`, as Hubble 1.17+ has it: the CLI finds the relay's
//! Service (`webb-relay` in `--kube-namespace`), picks a running pod behind
//! it, and forwards a local port to the pod's relay port through the API
//! server (kube-rs's port-forward, the same protocol kubectl uses), for as
//! long as the command runs. Each connection to the local port is its own
//! forwarded stream.
//!
//! The kubeconfig's user needs `get` on services, `list` on pods and
//! `create` on pods/portforward in that namespace; errors say which is
//! missing.

use std::{net::SocketAddr, path::Path};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    Api, Client,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::conn::{ServerArgs, Usage};

/// The Service the manifests install (deploy/relay.yaml).
pub const RELAY_SERVICE: &str = "webb-relay";
/// The relay's port when the Service names its target port.
const RELAY_PORT: u16 = webb_proto::DEFAULT_RELAY_PORT;

/// A local port forwarded to the relay; closed when dropped.
pub struct PortForward {
    pub local: SocketAddr,
    pub pod: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).with_context(|| {
                format!("--port-forward: cannot read --kubeconfig {}", path.display())
            })?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .with_context(|| format!("--port-forward: --kubeconfig {}", path.display()))?
        }
        None => kube::Config::from_kubeconfig(&options).await.context(
            "--port-forward: no kubeconfig (set KUBECONFIG, give --kubeconfig, or create ~/.kube/config)",
        )?,
    };
    Client::try_from(config).context("--port-forward: cannot build a Kubernetes client")
}

/// Words an API error as what to fix.
fn explain(e: kube::Error, what: &str, verb: &str, resource: &str, ns: &str) -> anyhow::Error {
    match &e {
        kube::Error::Api(s) if s.code == 404 => anyhow::anyhow!(
            "--port-forward: {what} not found in namespace {ns}: is webb installed \
             (kubectl apply -f deploy/relay.yaml)? --kube-namespace names another namespace"
        ),
        kube::Error::Api(s) if s.code == 403 => anyhow::anyhow!(
            "--port-forward: forbidden: your kubeconfig's user may not {verb} {resource} in \
             namespace {ns} (needed: get services, list pods, create pods/portforward): {}",
            s.message
        ),
        kube::Error::Api(s) if s.code == 401 => anyhow::anyhow!(
            "--port-forward: the API server refused your credentials (401): {}",
            s.message
        ),
        _ => anyhow::anyhow!("--port-forward: {what}: cannot reach the API server: {e}"),
    }
}

impl PortForward {
    pub async fn start(args: &ServerArgs) -> anyhow::Result<Self> {
        let ns = args.kube_namespace();
        let client = client(args.kubeconfig.as_deref(), args.kube_context.as_deref()).await?;
        let services: Api<Service> = Api::namespaced(client.clone(), ns);
        let what = format!("Service {RELAY_SERVICE}");
        let svc = services
            .get(RELAY_SERVICE)
            .await
            .map_err(|e| explain(e, &what, "get", "services", ns))?;
        let spec = svc.spec.unwrap_or_default();
        let selector = spec.selector.unwrap_or_default();
        if selector.is_empty() {
            anyhow::bail!("--port-forward: Service {RELAY_SERVICE} in {ns} selects no pods");
        }
        let target = spec
            .ports
            .unwrap_or_default()
            .first()
            .and_then(|p| match &p.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                    u16::try_from(*n).ok()
                }
                _ => None,
            })
            .unwrap_or(RELAY_PORT);
        let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let pods: Api<Pod> = Api::namespaced(client, ns);
        let list = pods
            .list(&ListParams::default().labels(&labels.join(",")))
            .await
            .map_err(|e| explain(e, "the relay's pods", "list", "pods", ns))?;
        let pod = list
            .items
            .iter()
            .find(|p| {
                let status = p.status.as_ref();
                status.and_then(|s| s.phase.as_deref()) == Some("Running")
                    && status
                        .and_then(|s| s.conditions.as_ref())
                        .is_none_or(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .and_then(|p| p.metadata.name.clone())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--port-forward: no running, ready pod behind Service {RELAY_SERVICE} in {ns} \
                     (kubectl -n {ns} get pods -l {})",
                    labels.join(",")
                )
            })?;
        // One forward now, so that a missing permission is an error here
        // rather than a connection that closes later.
        let probe = pods
            .portforward(&pod, &[target])
            .await
            .map_err(|e| explain(e, "port-forward", "create", "pods/portforward", ns))?;
        probe.abort();
        let listener =
            tokio::net::TcpListener::bind(("127.0.0.1", args.port_forward_port()))
                .await
                .map_err(|e| {
                    Usage(format!(
                        "--port-forward-port {}: {e} (is another port-forward running? 0 picks a free port)",
                        args.port_forward_port()
                    ))
                })?;
        let local = listener.local_addr()?;
        tracing::info!(%local, %pod, port = target, "port-forwarding to the relay");
        let name = pod.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    continue;
                };
                let pods = pods.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let mut forwarder = match pods.portforward(&name, &[target]).await {
                        Ok(f) => f,
                        Err(e) => {
                            tracing::warn!("port-forward to {name}: {e}");
                            return;
                        }
                    };
                    let Some(mut upstream) = forwarder.take_stream(target) else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                    drop(upstream);
                    let _ = forwarder.join().await;
                });
            }
        });
        Ok(Self { local, pod, task })
    }
}
