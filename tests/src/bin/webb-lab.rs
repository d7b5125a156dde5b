//! `webb-lab`: brings a lab node up for the demo and for manual testing, and
//! keeps it until interrupted.
//!
//! `webb-lab up STATE_DIR` builds a lab of pods (shop/frontend, shop/cart,
//! shop/db, kube-system/coredns), writes `endpoints.yaml`, `policy.yaml` and
//! `lab.env` (pod names, namespaces, addresses) into STATE_DIR, then waits for
//! SIGINT/SIGTERM and tears everything down.

use std::{fmt::Write as _, path::PathBuf};

use webb_tests::lab::{Lab, PodSpec};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(cmd), Some(state)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: webb-lab up STATE_DIR");
    };
    if cmd != "up" {
        anyhow::bail!("unknown command {cmd:?}; usage: webb-lab up STATE_DIR");
    }
    if let Some(reason) = webb_tests::lab::privileged_skip_reason() {
        anyhow::bail!("cannot build a lab here: {reason}");
    }
    let state = PathBuf::from(state);
    std::fs::create_dir_all(&state)?;
    let lab = Lab::new(&[
        PodSpec::new("shop", "frontend", "frontend"),
        PodSpec::new("shop", "cart", "cart"),
        PodSpec::new("shop", "db", "db"),
        PodSpec::new("kube-system", "coredns", "coredns"),
    ]);
    std::fs::write(state.join("endpoints.yaml"), lab.endpoints_yaml())?;
    std::fs::write(
        state.join("policy.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db-allow-cart, namespace: shop}\n\
         spec:\n  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Ingress]\n  ingress:\n    - from:\n        - podSelector: {matchLabels: {app: cart}}\n",
    )?;
    let mut env = String::new();
    let _ = writeln!(
        env,
        "LAB_BRIDGE={}\nLAB_HOST_IP={}",
        lab.bridge, lab.host_ip
    );
    if let Some(cg) = &lab.cgroup_parent {
        let _ = writeln!(env, "LAB_CGROUP={}", cg.display());
    }
    let ifaces: Vec<String> = lab.interfaces();
    let _ = writeln!(env, "LAB_INTERFACES=\"{}\"", ifaces.join(" "));
    for p in &lab.pods {
        let key = p.name.to_uppercase();
        let _ = writeln!(env, "{key}_NETNS={}\n{key}_IP={}", p.netns, p.ip);
    }
    std::fs::write(state.join("lab.env"), env)?;
    println!("lab up: {} pods on {}", lab.pods.len(), lab.bridge);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    drop(lab);
    let _ = std::fs::remove_file(state.join("lab.env"));
    println!("lab down");
    Ok(())
}
