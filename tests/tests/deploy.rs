//! The Kubernetes manifests in deploy/: well-formed YAML, the wiring between
//! them (the relay finds the agents, the Service maps 80 to 4245), the
//! agent's least privilege, and container arguments the real binaries accept.

use std::process::Command;

use serde_yaml_ng::Value;
use webb_tests::agent::binary;

fn docs(file: &str) -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/").to_owned() + file;
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            <Value as serde::Deserialize>::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}"))
        })
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The binary accepts these arguments (clap rejects unknown flags and bad
/// values before `--version` prints).
fn accepts(bin: &str, args: &[String]) {
    let out = Command::new(binary(bin))
        .args(args)
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn manifests_are_wired_together() {
    let agent = docs("agent.yaml");
    let relay = docs("relay.yaml");
    for d in agent.iter().chain(&relay) {
        // Cluster-scoped kinds have no namespace.
        let want = match d["kind"].as_str() {
            Some("ClusterRole" | "ClusterRoleBinding") => Value::Null,
            _ => "kube-system".into(),
        };
        assert_eq!(d["metadata"]["namespace"], want, "{d:?}");
    }

    let ds = find(&agent, "DaemonSet", "webb-agent");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(
        strings(&sc["capabilities"]["add"]),
        ["BPF", "NET_ADMIN", "PERFMON"]
    );
    assert_eq!(c["env"][0]["name"], "WEBB_NODE_NAME");
    assert_eq!(
        c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    let agent_args = strings(&c["args"]);
    assert!(agent_args.contains(&"--listen=0.0.0.0:4244".to_owned()));
    accepts("webb-agent", &agent_args);
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        ds["spec"]["template"]["metadata"]["labels"]
    );

    // The relay resolves the agents' headless service on the agents' port.
    let headless = find(&agent, "Service", "webb-agent");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(
        headless["spec"]["selector"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
    let dep = find(&relay, "Deployment", "webb-relay");
    let rc = &dep["spec"]["template"]["spec"]["containers"][0];
    let relay_args = strings(&rc["args"]);
    assert!(
        relay_args.contains(&"--peer-dns=webb-agent.kube-system.svc.cluster.local:4244".to_owned())
    );
    assert!(relay_args.contains(&"--listen=0.0.0.0:4245".to_owned()));
    accepts("webb-relay", &relay_args);
    assert_eq!(rc["securityContext"]["capabilities"]["drop"][0], "ALL");

    // Prometheus finds both /metrics endpoints where they are served.
    for (pod_template, args, port) in [
        (&ds["spec"]["template"], &agent_args, 9965),
        (&dep["spec"]["template"], &relay_args, 9966),
    ] {
        let ann = &pod_template["metadata"]["annotations"];
        assert_eq!(ann["prometheus.io/scrape"], "true");
        assert_eq!(ann["prometheus.io/port"], port.to_string());
        assert!(
            args.contains(&format!("--metrics-listen=:{port}")),
            "{args:?}"
        );
        let ports = &pod_template["spec"]["containers"][0]["ports"];
        assert!(
            ports.as_sequence().is_some_and(|ps| ps
                .iter()
                .any(|p| p["name"] == "metrics" && p["containerPort"] == port)),
            "{ports:?}"
        );
    }
    assert_eq!(
        headless["metadata"]["annotations"]["prometheus.io/port"],
        "9965"
    );

    // `kubectl port-forward svc/webb-relay 4245:80` reaches the relay.
    let svc = find(&relay, "Service", "webb-relay");
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 4245);
    assert_eq!(
        svc["spec"]["selector"],
        dep["spec"]["template"]["metadata"]["labels"]
    );
}

/// The agent's ClusterRole grants exactly the verbs and resources the
/// agent's Kubernetes source uses, bound to the service account its
/// DaemonSet runs as.
#[test]
fn the_agents_rbac_is_exactly_what_it_calls() {
    let agent = docs("agent.yaml");
    let role = find(&agent, "ClusterRole", "webb-agent");
    let mut granted: Vec<(String, String, Vec<String>)> = Vec::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        let verbs = {
            let mut v = strings(&rule["verbs"]);
            v.sort();
            v
        };
        for group in strings(&rule["apiGroups"]) {
            for res in strings(&rule["resources"]) {
                granted.push((group.clone(), res, verbs.clone()));
            }
        }
    }
    granted.sort();
    let mut used: Vec<(String, String, Vec<String>)> = webb_agent::cluster::k8s::RBAC
        .iter()
        .map(|(g, r, v)| {
            let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
            v.sort();
            (g.to_string(), r.to_string(), v)
        })
        .collect();
    used.sort();
    assert_eq!(
        granted, used,
        "deploy/agent.yaml's ClusterRole and the agent's API calls"
    );
    let binding = find(&agent, "ClusterRoleBinding", "webb-agent");
    assert_eq!(binding["roleRef"]["name"], "webb-agent");
    assert_eq!(binding["subjects"][0]["name"], "webb-agent");
    let ds = find(&agent, "DaemonSet", "webb-agent");
    assert_eq!(
        ds["spec"]["template"]["spec"]["serviceAccountName"],
        "webb-agent"
    );
    assert!(
        agent.iter().all(|d| d["kind"] != "ConfigMap"),
        "no endpoints file to keep by hand"
    );
}

/// The Dockerfile (no image can be built on the test machine: no daemon, no
/// registry) is checked against what uses it: every image the manifests run
/// has a documented `docker build --target` line whose stage exists and
/// starts the binary the manifest expects; the relay's user is the one its
/// manifest requires; the packages it builds are this workspace's.
#[test]
fn the_dockerfile_builds_the_images_the_manifests_run() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let dockerfile = std::fs::read_to_string(format!("{root}/Dockerfile")).expect("Dockerfile");
    // stage name -> its lines
    let mut stages: Vec<(String, Vec<&str>)> = Vec::new();
    for line in dockerfile.lines() {
        if let Some(rest) = line.strip_prefix("FROM ") {
            let name = rest.split(" AS ").nth(1).unwrap_or("").trim().to_owned();
            stages.push((name, Vec::new()));
        } else if let Some((_, lines)) = stages.last_mut() {
            lines.push(line);
        }
    }
    let stage = |name: &str| -> &Vec<&str> {
        &stages
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("the Dockerfile has no stage {name}"))
            .1
    };
    let target_of = |image: &str| -> String {
        let line = dockerfile
            .lines()
            .find(|l| l.contains("docker build --target") && l.contains(&format!("-t {image} ")))
            .unwrap_or_else(|| panic!("the Dockerfile does not say how to build {image}"));
        line.split("--target")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let agent = docs("agent.yaml");
    let relay = docs("relay.yaml");
    let ds = find(&agent, "DaemonSet", "webb-agent");
    let dep = find(&relay, "Deployment", "webb-relay");
    for (workload, binary_name) in [(ds, "webb-agent"), (dep, "webb-relay")] {
        let c = &workload["spec"]["template"]["spec"]["containers"][0];
        let image = c["image"].as_str().expect("container image");
        let target = target_of(image);
        let lines = stage(&target);
        assert!(
            lines.iter().any(|l| l.starts_with("ENTRYPOINT")
                && l.contains(&format!("/usr/local/bin/{binary_name}\""))),
            "stage {target} does not run {binary_name}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("COPY --from=build")
                && l.contains(&format!("/out/{binary_name} "))),
            "stage {target} does not copy {binary_name} from the build"
        );
        if let Some(user) = c["securityContext"]["runAsUser"].as_u64() {
            assert!(
                lines.iter().any(|l| *l == format!("USER {user}:{user}")),
                "stage {target} does not run as user {user}, which {binary_name}'s manifest requires"
            );
        }
    }
    assert!(
        stage("cli")
            .iter()
            .any(|l| l.contains("/usr/local/bin/webb\""))
    );
    let build = stage("build").join("\n");
    let cargo_build = stage("build")
        .iter()
        .find(|l| l.contains("cargo build"))
        .expect("the build stage runs cargo build");
    for package in cargo_build
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1])
    {
        let manifest_dir = match package {
            "webb-agent" => "node-agent",
            "webb-relay" => "relay",
            "webb-tui" => "tui",
            other => panic!("the Dockerfile builds {other}, which is not an image's package"),
        };
        let toml = std::fs::read_to_string(format!("{root}/{manifest_dir}/Cargo.toml")).unwrap();
        assert!(
            toml.contains(&format!("name = \"{package}\"")),
            "{manifest_dir} is not {package}"
        );
    }
    // What the image stages copy from /out is what the build put there:
    // static binaries of the host target.
    assert!(
        build.contains("--target x86_64-unknown-linux-gnu")
            && build.contains(
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS=\"-C target-feature=+crt-static\""
            ),
        "the build does not make static binaries:\n{build}"
    );
    assert!(build.contains("cd target/x86_64-unknown-linux-gnu/release"));
    let copy = build
        .lines()
        .find(|l| l.contains("/out/") && l.contains("cp "))
        .expect("the build copies its binaries to /out");
    for bin in ["webb-agent", "webb-relay", "webb"] {
        assert!(
            copy.split_whitespace().any(|w| w == bin),
            "the build does not produce {bin}"
        );
    }
}
