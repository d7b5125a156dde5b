use super::*;

const ENDPOINTS: &str = "
host_ips: [10.99.0.1]
namespaces:
  ops: {team: sre}
endpoints:
  - {namespace: shop, pod: frontend-1, labels: {app: frontend}, ips: [10.99.0.10]}
  - {namespace: shop, pod: cart-1, labels: {app: cart}, ips: [10.99.0.11]}
  - {namespace: shop, pod: db-0, labels: {app: db}, ips: [10.99.0.12]}
  - {namespace: ops, pod: prom-0, labels: {app: prometheus}, ips: [10.99.0.20]}
";

const POLICIES: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-allow-cart, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
    - from:
        - podSelector: {matchLabels: {app: cart}}
        - namespaceSelector: {matchLabels: {team: sre}}
      ports:
        - {protocol: TCP, port: 5432}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: frontend-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: frontend}}
  egress:
    - to:
        - podSelector: {matchExpressions: [{key: app, operator: In, values: [cart, db]}]}
    - to:
        - ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}
      ports:
        - {protocol: UDP, port: 53}
";

fn setup() -> (EndpointTable, CompiledPolicy) {
    let table = EndpointTable::parse(ENDPOINTS).unwrap();
    let policies = parse(POLICIES).unwrap();
    assert_eq!(policies.len(), 2);
    let compiled = compile(&policies, &table);
    (table, compiled)
}

fn id(t: &EndpointTable, ip: &str) -> u32 {
    t.endpoint_for(&ip.parse().unwrap()).identity
}

#[test]
fn ingress_rules() {
    let (t, c) = setup();
    let (fe, cart, db, prom) = (
        id(&t, "10.99.0.10"),
        id(&t, "10.99.0.11"),
        id(&t, "10.99.0.12"),
        id(&t, "10.99.0.20"),
    );
    let i = dir::INGRESS;
    assert!(c.allows(db, cart, 5432, 6, i), "cart may reach db:5432");
    assert!(!c.allows(db, cart, 5433, 6, i), "only port 5432");
    assert!(!c.allows(db, cart, 5432, 17, i), "only TCP");
    assert!(!c.allows(db, fe, 5432, 6, i), "frontend is denied");
    assert!(c.allows(db, prom, 5432, 6, i), "namespaceSelector team=sre");
    assert!(
        c.allows(db, identity::HOST, 9999, 6, i),
        "the node may probe"
    );
    assert!(c.allows(cart, fe, 80, 6, i), "cart is not isolated");
    let names: Vec<_> = c.denied_by(db, i).iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["db-allow-cart"]);
    assert!(c.denied_by(db, dir::EGRESS).is_empty());
}

#[test]
fn egress_rules_and_ip_blocks() {
    let (t, c) = setup();
    let (fe, cart, db, prom) = (
        id(&t, "10.99.0.10"),
        id(&t, "10.99.0.11"),
        id(&t, "10.99.0.12"),
        id(&t, "10.99.0.20"),
    );
    let e = dir::EGRESS;
    // Egress inferred from the presence of rules; ingress is isolated too
    // (no ingress rules: nothing may come in but the host).
    assert!(c.allows(fe, cart, 8080, 6, e));
    assert!(c.allows(fe, db, 1, 17, e));
    assert!(!c.allows(fe, prom, 9090, 6, e), "other namespace");
    assert!(!c.allows(fe, cart, 80, 6, dir::INGRESS));
    let inside = c.cidr_identity("192.0.2.5".parse().unwrap());
    let excepted = c.cidr_identity("192.0.2.200".parse().unwrap());
    let outside = c.cidr_identity("198.51.100.1".parse().unwrap());
    assert_eq!(outside, identity::WORLD);
    assert!(c.allows(fe, inside, 53, 17, e));
    assert!(!c.allows(fe, inside, 53, 6, e), "UDP only");
    assert!(!c.allows(fe, excepted, 53, 17, e), "except carves out");
    assert!(!c.allows(fe, outside, 53, 17, e));
}

#[test]
fn empty_rules_mean_deny_all_and_empty_peers_mean_all() {
    let t = EndpointTable::parse(ENDPOINTS).unwrap();
    let deny = parse("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n").unwrap();
    let c = compile(&deny, &t);
    let (fe, cart) = (id(&t, "10.99.0.10"), id(&t, "10.99.0.11"));
    assert!(!c.allows(fe, cart, 80, 6, dir::EGRESS));
    assert!(!c.allows(cart, fe, 80, 6, dir::INGRESS));
    let allow = parse("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: all, namespace: shop}\nspec:\n  podSelector: {}\n  ingress:\n    - {}\n").unwrap();
    let c = compile(&allow, &t);
    assert!(c.allows(cart, identity::WORLD, 80, 6, dir::INGRESS));
}

#[test]
fn list_documents_and_errors() {
    let list = "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    metadata: {name: a}\n    spec: {podSelector: {}}\n";
    let p = parse(list).unwrap();
    assert_eq!(
        (
            p[0].metadata.name.as_str(),
            p[0].metadata.namespace.as_str()
        ),
        ("a", "default")
    );

    let named = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  podSelector: {}\n  ingress:\n    - ports:\n        - port: http\n";
    let err = format!("{:#}", parse(named).unwrap_err());
    assert!(err.contains("named port \"http\""), "{err}");

    let typo = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  podSelector: {}\n  ingres: []\n";
    let err = format!("{:#}", parse(typo).unwrap_err());
    assert!(
        err.contains("ingres") && err.contains("document 1") && err.contains("line 6"),
        "{err}"
    );

    let cidr = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  podSelector: {}\n  egress:\n    - to:\n        - ipBlock: {cidr: 10.0.0.0/33}\n";
    let err = format!("{:#}", parse(cidr).unwrap_err());
    assert!(err.contains("cidr") || err.contains("invalid"), "{err}");

    let range = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  podSelector: {}\n  egress:\n    - ports: [{port: 100, endPort: 50}]\n";
    assert!(format!("{:#}", parse(range).unwrap_err()).contains("endPort"));
}
