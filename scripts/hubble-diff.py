#!/usr/bin/env python3
"""Differential test of `webb observe` against a real `hubble` CLI on random
runs: random flag sets, filter values drawn from the input, and inputs
mutated from the shared oracle's recordings (unknown enum values, control
characters, torn lines). The oracle's 265 recorded runs fix what was seen;
this finds what was fixed only for those lines.

    python3 scripts/hubble-diff.py --hubble PATH/TO/hubble [--webb target/debug/webb]
        [--cases 500] [--seed N] [-k KIND] [-v]

`hubble` is yours to provide (built from Hubble's release, not by this
project). Runs happen in a temporary copy of ../shared/hubble-oracle's
inputs with HOME empty and TZ=UTC, as the oracle was recorded. A case
differs when stdout, stderr or the exit code differ; for runs Hubble rejects
only the exit code and an empty stdout count, as in the oracle's check.
Prints each differing argv (reproducible with the seed) and a summary.
"""

import argparse
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ORACLE = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "hubble-oracle"))
INPUTS = ["flows.jsonl", "flows-camel.jsonl", "edge-cases.jsonl", "edge-cases-camel.jsonl"]

TIME_FORMATS = ["StampMilli", "YearMonthDay", "YearMonthDayHour", "YearMonthDayHourMinute",
                "RFC3339", "RFC3339Milli", "RFC3339Micro", "RFC3339Nano", "RFC1123Z",
                "Kitchen", "Stamp", "StampMicro", "StampNano", "ANSIC", "UnixDate", "RubyDate",
                "RFC822", "RFC822Z", "RFC850", "RFC1123", "DateTime", "DateOnly", "TimeOnly",
                "rfc3339", "stampmilli", "RFC3339NANO", "bogus", "Layout"]
OUTPUTS = ["compact", "dict", "table", "json", "jsonpb", "tab", "JSON", "yaml"]
VERDICTS = ["FORWARDED", "DROPPED", "AUDIT", "REDIRECTED", "ERROR", "TRACED", "TRANSLATED",
            "forwarded", "dropped", "VERDICT_UNKNOWN", "ALLOWED"]
TYPES = ["capture", "drop", "l7", "policy-verdict", "trace", "trace-sock", "agent", "debug",
         "trace:from-endpoint", "trace:to-endpoint", "trace:to-stack", "trace:from-network",
         "trace:to-network", "trace:from-host", "trace:to-host", "trace:to-proxy",
         "trace:from-proxy", "trace:to-overlay", "trace:from-overlay", "trace:from-stack",
         "trace:to-crypto", "trace:from-crypto", "drop:131", "trace:5", "l7:foo", "7",
         "policy-verdict:1", "trace-sock:2", "TRACE", "Drop", "lost", "recorder"]
PROTOCOLS = ["tcp", "udp", "icmp", "icmpv4", "icmpv6", "http", "dns", "kafka", "sctp", "TCP",
             "DNS", "igmp", "vrrp", "quic"]
TCP_FLAGS = ["syn", "ack", "fin", "rst", "psh", "urg", "ece", "cwr", "ns", "SYN", "syn,ack",
             "fin,ack", "SYN,ACK", "xyz", ""]
DIRECTIONS = ["ingress", "egress", "unknown", "INGRESS", "bogus"]
IP_VERSIONS = ["v4", "v6", "none", "4", "ipv4", "V4"]
DROP_REASONS = ["POLICY_DENIED", "UNSUPPORTED_L3_PROTOCOL", "CT_MAP_INSERTION_FAILED",
                "STALE_OR_UNROUTABLE_IP", "policy_denied", "AUTH_REQUIRED", "NOT_A_REASON",
                "DROP_REASON_UNKNOWN", "INVALID_SOURCE_IP", "POLICY_DENY"]
TIMES = ["2025-03-14T21:40:05Z", "2025-03-14T21:41:00Z", "2025-03-14T21:40:30.5Z",
         "2025-03-14", "2025-03-14T21+00:00", "2025-03-14T21:40Z", "2025-03-14T21:40:05+01:00",
         "Fri, 14 Mar 2025 21:40:30 +0000", "Mar 14 21:40:30.000", "1h", "5m", "3s",
         "1h43m", "yesterday", "2024-06-01T10:16:00Z", "2026-01-01T00:00:00Z", "0s", "-5m",
         "2025-03-14T21:40:05.123456789Z", "2025-03-14T21:40:05.123Z"]
CEL = ["_flow.verdict == Verdict.DROPPED", "_flow.l4.TCP.destination_port == 8080",
       "has(_flow.l7.http)", "_flow.source.namespace == 'store'",
       "_flow.destination.pod_name.startsWith('redis')", "size(_flow.source.labels) > 3",
       "_flow.is_reply.value", "_flow.Type == FlowType.L7", "_flow.node_name.endsWith('2')",
       "_flow.verdict == Verdict.FORWARDED && _flow.l4.UDP.destination_port == 53",
       "_flow.event_type.type == 1", "1 +", "_flow.nope == 1", "'a'", "true", "false",
       "_flow.IP.source.startsWith('10.244.1.')", "_flow.drop_reason_desc == DropReason.POLICY_DENIED",
       "_flow.traffic_direction == TrafficDirection.INGRESS", "_flow.l7.dns.query.contains('cluster')"]


def load(path):
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def values(objs):
    """Filter values seen in the input, per kind."""
    v = {k: set() for k in ["ns", "pod", "label", "ip", "port", "node", "identity", "fqdn",
                            "method", "status", "path", "url", "svc", "iface", "trace_id",
                            "uuid", "workload", "cluster", "header", "node_label", "ip_trace_id"]}
    for o in objs:
        f = o.get("flow")
        if not isinstance(f, dict):
            continue
        v["node"].add(f.get("node_name", ""))
        v["uuid"].add(f.get("uuid", ""))
        for side in ("source", "destination"):
            ep = f.get(side) or {}
            if ep.get("namespace"):
                v["ns"].add(ep["namespace"])
                if ep.get("pod_name"):
                    p = ep["pod_name"]
                    v["pod"].update([ep["namespace"] + "/" + p, ep["namespace"] + "/" + p[:4], p,
                                     ep["namespace"] + "/"])
            for lab in ep.get("labels") or []:
                v["label"].add(lab)
                if lab.startswith("k8s:"):
                    v["label"].add(lab[4:])
            if ep.get("identity") is not None:
                v["identity"].add(str(ep["identity"]))
            for w in ep.get("workloads") or []:
                v["workload"].update([w.get("name", ""), "%s/%s" % (ep.get("namespace", ""), w.get("name", "")),
                                      "%s/%s" % (w.get("kind", ""), w.get("name", ""))])
            if ep.get("cluster_name"):
                v["cluster"].add(ep["cluster_name"])
        for side in ("source_service", "destination_service"):
            s = f.get(side) or {}
            if s.get("name"):
                v["svc"].update([s.get("namespace", "") + "/" + s["name"], s["name"]])
        ip = f.get("IP") or {}
        for k in ("source", "destination"):
            if ip.get(k):
                v["ip"].add(ip[k])
                if ":" not in ip[k]:
                    v["ip"].add(".".join(ip[k].split(".")[:3]) + ".0/24")
        l4 = f.get("l4") or {}
        for proto in l4.values():
            if isinstance(proto, dict):
                for k in ("source_port", "destination_port"):
                    if proto.get(k) is not None:
                        v["port"].add(str(proto[k]))
        for n in (f.get("source_names") or []) + (f.get("destination_names") or []):
            v["fqdn"].update([n, "*." + n.split(".", 1)[-1]])
        l7 = f.get("l7") or {}
        h = l7.get("http") or {}
        if h.get("method"):
            v["method"].update([h["method"], h["method"].lower()])
        if h.get("code"):
            v["status"].update([str(h["code"]), str(h["code"])[0] + "+", str(h["code"])[:2] + "+"])
        if h.get("url"):
            v["url"].add(re.escape(h["url"])[:40])
            m = re.match(r"[a-z]+://[^/]*(/[^?]*)", h["url"])
            if m:
                v["path"].add(m.group(1))
        for hd in h.get("headers") or []:
            v["header"].add("%s:%s" % (hd.get("key", ""), hd.get("value", "")))
        d = l7.get("dns") or {}
        if d.get("query"):
            v["fqdn"].add(d["query"].rstrip("."))
        iface = f.get("interface") or {}
        if iface.get("name"):
            v["iface"].add(iface["name"])
        tc = ((f.get("trace_context") or {}).get("parent") or {}).get("trace_id")
        if tc:
            v["trace_id"].add(tc)
        it = (f.get("ip_trace_id") or {}).get("trace_id")
        if it:
            v["ip_trace_id"].add(str(it))
        for nl in f.get("node_labels") or []:
            v["node_label"].add(nl)
    extra = {"ns": ["kube-system", "default", "nope"], "pod": ["default/x", "kube-system/coredns"],
             "label": ["reserved:world", "reserved:host", "app in (cart, redis-cart)", "!app",
                       "app notin (cart)", "k8s:app", "a=b,c=d", "===", "app==cart", "app!=cart",
                       "k8s:App=cart", "APP=cart", "app=Cart", "app=", "app = cart", " app=cart",
                       "app=cart,", ",app=cart", "app in ()", "app in (cart", "k8s:app in (cart,web)",
                       "app=cart!", "app=-cart", "app=ca rt", "x/y=z", "k8s:a.b/c=d", "reserved:",
                       ":app=cart", "app>1", "app<2", "any:app=cart", "k8s:app=cart,!k8s:version",
                       "!k8s:app,reserved:world", "app=" + "x" * 64, "a" * 64 + "=b", "_app=x"],
             "ip": ["10.0.0.0/33", "1.1.1.1", "fd00::/8", "not-an-ip", "10.244.0.0/16"],
             "port": ["53", "0", "65535", "70000", "http", "-1"],
             "node": ["kind-*", "*worker*", "kind-kind/kind-worker", "other/*", "KIND-WORKER"],
             "identity": ["1", "2", "4", "16777217", "x", "reserved:host"],
             "fqdn": ["*.svc.cluster.local", "*", "example.com", "*.com"],
             "method": ["GET", "post", "BREW"], "status": ["200", "4+", "5+", "99", "20", "600", "1+"],
             "path": ["/", "/api/.*", "[", "^/cart"], "url": [".*", "http://.*", "(", "cart"],
             "iface": ["eth0", "lxc*", "cilium_host"], "trace_id": ["abc", ""],
             "uuid": ["00000000-0000-0000-0000-000000000000", "x"],
             "workload": ["Deployment/", "cart", "StatefulSet/redis-cart", "store/", "/cart", "",
                          "deployment/cart", "Deployment/cart/x"],
             "cluster": ["kind-kind", "kind-*", "other"], "header": ["x:y", "nocolon", ":"],
             "node_label": ["kubernetes.io/hostname=kind-worker", "a", "!a", "x in (y)"],
             "ip_trace_id": ["1", "0", "x", "18446744073709551615", "18446744073709551616"]}
    for k, xs in extra.items():
        v[k].update(xs)
    return {k: sorted(x for x in s if x is not None) for k, s in v.items()}


FILTERS = [
    # (flag, kind of value)
    ("--namespace", "ns"), ("-n", "ns"), ("--from-namespace", "ns"), ("--to-namespace", "ns"),
    ("--pod", "pod"), ("--from-pod", "pod"), ("--to-pod", "pod"),
    ("--label", "label"), ("-l", "label"), ("--from-label", "label"), ("--to-label", "label"),
    ("--ip", "ip"), ("--from-ip", "ip"), ("--to-ip", "ip"), ("--snat-ip", "ip"),
    ("--port", "port"), ("--from-port", "port"), ("--to-port", "port"),
    ("--node-name", "node"), ("--identity", "identity"), ("--from-identity", "identity"),
    ("--to-identity", "identity"), ("--fqdn", "fqdn"), ("--from-fqdn", "fqdn"), ("--to-fqdn", "fqdn"),
    ("--http-method", "method"), ("--http-status", "status"), ("--http-path", "path"),
    ("--http-url", "url"), ("--http-header", "header"), ("--service", "svc"),
    ("--from-service", "svc"), ("--to-service", "svc"), ("--interface", "iface"),
    ("--trace-id", "trace_id"), ("--uuid", "uuid"), ("--workload", "workload"),
    ("--from-workload", "workload"), ("--to-workload", "workload"), ("--cluster", "cluster"),
    ("--from-cluster", "cluster"), ("--to-cluster", "cluster"), ("--node-label", "node_label"),
    ("--ip-trace-id", "ip_trace_id"),
    ("--verdict", VERDICTS), ("--type", TYPES), ("-t", TYPES), ("--protocol", PROTOCOLS),
    ("--tcp-flags", TCP_FLAGS), ("--traffic-direction", DIRECTIONS), ("--ip-version", IP_VERSIONS),
    ("--drop-reason-desc", DROP_REASONS), ("--cel-expression", CEL),
]
BOOL_FILTERS = ["-4", "-6", "--ipv4", "--ipv6", "-A", "--all-namespaces", "--from-all-namespaces",
                "--to-all-namespaces", "--encrypted", "--unencrypted", "--encrypted=false",
                "--unencrypted=false", "-A=false", "--ipv4=v6"]

FILTER_FIELDS = {
    "source_ip": "ip", "destination_ip": "ip", "source_pod": "pod", "destination_pod": "pod",
    "source_label": "label", "destination_label": "label", "source_fqdn": "fqdn",
    "destination_fqdn": "fqdn", "node_name": "node", "source_identity": "identity",
    "destination_identity": "identity", "http_method": "method", "http_status_code": "status",
    "http_path": "path", "http_url": "url", "source_port": "port", "destination_port": "port",
    "source_service": "svc", "destination_service": "svc", "uuid": "uuid",
}


def raw_filter(rng, vals):
    f = {}
    for _ in range(rng.randint(1, 2)):
        field = rng.choice(list(FILTER_FIELDS) + ["verdict", "protocol", "event_type", "reply",
                                                  "traffic_direction", "tcp_flags", "ip_version"])
        if field == "verdict":
            f[field] = [rng.choice(["FORWARDED", "DROPPED", "AUDIT", 2])]
        elif field == "protocol":
            f[field] = [rng.choice(PROTOCOLS[:9])]
        elif field == "event_type":
            f[field] = [rng.choice([{"type": 1}, {"type": 4, "sub_type": 3}, {"type": 129}, {"type": 5}])]
        elif field == "reply":
            f[field] = [rng.choice([True, False])]
        elif field == "traffic_direction":
            f[field] = [rng.choice(["INGRESS", "EGRESS"])]
        elif field == "tcp_flags":
            f[field] = [{"SYN": True}, {"ACK": True, "PSH": True}][rng.randint(0, 1):][:1]
        elif field == "ip_version":
            f[field] = [rng.choice(["IPv4", "IPv6"])]
        else:
            kind = FILTER_FIELDS[field]
            if field in ("source_identity", "destination_identity"):
                f[field] = [int(x) for x in rng.sample(vals[kind], 1) if x.isdigit()] or [1]
            else:
                f[field] = rng.sample(vals[kind], 1)
    return json.dumps(f)


def filter_args(rng, vals):
    args = []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        if rng.random() < 0.15:
            args.append("--not")
        r = rng.random()
        if r < 0.1:
            args.append(rng.choice(BOOL_FILTERS))
        elif r < 0.18:
            args += [rng.choice(["--allowlist", "--denylist"]), raw_filter(rng, vals)]
        else:
            flag, kind = rng.choice(FILTERS)
            pool = kind if isinstance(kind, list) else vals[kind]
            val = rng.choice(pool)
            if rng.random() < 0.1 and not isinstance(kind, list):
                val = val + "," + rng.choice(pool)
            args += [flag, val] if rng.random() < 0.7 else [flag + "=" + val]
    return args


def format_args(rng):
    args = ["-o", rng.choice(OUTPUTS[:5]) if rng.random() < 0.95 else rng.choice(OUTPUTS)]
    if rng.random() < 0.3:
        args.append("--print-node-name")
    if rng.random() < 0.4:
        args += ["--time-format", rng.choice(TIME_FORMATS)]
    if rng.random() < 0.2:
        args.append("--numeric")
    if rng.random() < 0.2:
        args.append("--print-policy-names")
    if rng.random() < 0.4:
        args += ["--color", rng.choice(["always", "never", "auto", "always", "bogus"])]
    if rng.random() < 0.1:
        args.append(rng.choice(["-s", "--silent-errors", "-D", "--debug"]))
    if rng.random() < 0.05:
        args.append("--ip-translation=false")
    return args


def selector_args(rng):
    r = rng.random()
    if r < 0.35:
        return ["--all"]
    if r < 0.5:
        return ["--last", str(rng.choice([0, 1, 3, 20, 100, 1000]))]
    if r < 0.6:
        return ["--first", str(rng.choice([0, 1, 3, 20, 100]))]
    if r < 0.75:
        out = []
        if rng.random() < 0.7:
            out += ["--since", rng.choice(TIMES)]
        if rng.random() < 0.7:
            out += ["--until", rng.choice(TIMES)]
        if rng.random() < 0.3:
            out += rng.choice([["--all"], ["--last", "5"], ["--first", "5"]])
        return out
    if r < 0.8:
        return ["-f"]
    return []


RISKY = [["-o", "table"], ["-o", "tab"], ["-o", "yaml"], ["-o", ""], ["-f"], ["--follow"],
         ["--first", "3"], ["--first", "0"], ["--last", "3"], ["--last", "0"], ["--all"],
         ["--last", "1000001"], ["--last", "-1"], ["--first", "x"], ["--since", "bogus"],
         ["--until", "bogus"], ["--since", "5m"], ["--until", "1m"], ["--field-mask", "time"],
         ["--field-mask", "nope"], ["--field-mask", "source.pod_name,verdict"],
         ["--use-default-field-masks=false"], ["--not"], ["--not", "--not"], ["--color", "x"],
         ["--time-format", "x"], ["--print-raw-filters"], ["-D"], ["-s"], ["--numeric"],
         ["--input-file", "missing.jsonl"], ["--timeout", "x"], ["--timeout", "1s"],
         ["--request-timeout", "-1s"], ["--server", "bad:addr:x"], ["--server", "tls://x:1"],
         ["--tls-server-name", "x"], ["--kube-namespace", ""], ["--port-forward-port", "70000"],
         ["--allowlist", "{}"], ["--allowlist", "[]"], ["--allowlist", "{\"x\":1}"],
         ["--denylist", "{\"verdict\":[\"NOPE\"]}"], ["--allowlist", "{\"verdict\":[1]}"],
         ["--ip-trace-id", "0"], ["--ip-trace-id", "-1"], ["--identity", "world"],
         ["--identity", "0x10"], ["--identity", "4294967296"], ["--tcp-flags", "syn,,ack"],
         ["--tcp-flags", ""], ["--type", ""], ["--type", "trace:"], ["--type", ":1"],
         ["--type", "99999999999"], ["--verdict", ""], ["--drop-reason-desc", ""],
         ["--http-header", ":"], ["--traffic-direction", ""], ["--namespace", "a"],
         ["--pod", "b/x"], ["--from-pod", "x"], ["--to-service", "c/y"], ["-A"],
         ["--from-namespace", "a"], ["--fqdn", "a.com"], ["--ip", "1.1.1.1"],
         ["--from-fqdn", "b.com"], ["--to-ip", "2.2.2.2"], ["--encrypted"], ["--unencrypted"],
         ["--cel-expression", "true"], ["--cel-expression", "1"], ["--workload", ""]]


def control(rng):
    return rng.choice(["\x1b[31m", "\r", "\x07", "\x00", "\x9b", "\u202e", "\t", "\n", "\x7f",
                       "\x1b]0;title\x07", "é", "\ufffd", "<>&"])


def mutate_str(rng, s):
    i = rng.randint(0, len(s))
    return s[:i] + control(rng) + s[i:]


ENUMS = ["verdict", "Type", "traffic_direction", "trace_observation_point", "trace_reason",
         "drop_reason_desc", "auth_type", "debug_capture_point", "sock_xlate_point",
         "policy_match_type", "state_change", "source", "ipVersion", "ip_option_type",
         "observation_source", "kind"]


def mutate(rng, obj):
    """One random change deep in a response: a string with control characters,
    an enum as an unknown number or name, a removed field, a number out of range."""
    paths = []

    def walk(o, path):
        if isinstance(o, dict):
            for k, v in o.items():
                paths.append((o, k, v))
                walk(v, path + [k])
        elif isinstance(o, list):
            for i, v in enumerate(o):
                paths.append((o, i, v))
                walk(v, path + [i])
    walk(obj, [])
    if not paths:
        return obj
    parent, key, v = rng.choice(paths)
    r = rng.random()
    if isinstance(v, str) and key in ENUMS:
        parent[key] = rng.choice([rng.randint(0, 300), "BOGUS_VALUE", v.lower(), 0])
    elif isinstance(v, str) and key != "time":
        parent[key] = mutate_str(rng, v) if r < 0.8 else ""
    elif isinstance(v, bool):
        parent[key] = not v
    elif isinstance(v, int):
        parent[key] = rng.choice([0, v + 1, 65536, 4294967295, -1, 2 ** 40])
    elif r < 0.5 and isinstance(parent, dict):
        del parent[key]
    elif isinstance(v, list) and v:
        v.pop(rng.randrange(len(v)))
    return obj


def enum_values(objs):
    """The values each enum-named key takes in the recordings."""
    seen = {}

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k in ENUMS and isinstance(v, str) and re.fullmatch(r"[A-Z][A-Z0-9_]*", v):
                    seen.setdefault(k, set()).add(v)
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    for o in objs:
        walk(o)
    return {k: sorted(v) for k, v in seen.items()}


def mutate_valid(rng, obj, enums, strings):
    """A change that keeps the line valid Hubble JSON: another value of the
    same enum (or an unknown number), another string seen in the data, a
    string with control characters, a removed field, another number."""
    paths = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                paths.append((o, k, v))
                walk(v)
        elif isinstance(o, list):
            for i, v in enumerate(o):
                paths.append((o, i, v))
                walk(v)
    walk(obj)
    if not paths:
        return obj
    parent, key, v = rng.choice(paths)
    r = rng.random()
    if isinstance(v, str) and v in enums.get(key, []):
        # An enum (a value this key takes elsewhere as an enum name).
        parent[key] = rng.choice(enums[key]) if r < 0.8 else rng.randint(0, 200)
    elif isinstance(v, str) and key in ("time", "first", "last"):
        if r < 0.5 and isinstance(parent, dict):
            del parent[key]
        else:
            parent[key] = rng.choice(["2025-03-14T21:40:00Z", "2025-03-14T21:40:00.100Z",
                                      "1970-01-01T00:00:00Z", "2025-03-14T21:40:00.000000001Z"])
    elif isinstance(v, str):
        if r < 0.4:
            parent[key] = mutate_str(rng, v)
        elif r < 0.8:
            parent[key] = rng.choice(strings)
        else:
            parent[key] = ""
    elif isinstance(v, bool):
        parent[key] = not v
    elif isinstance(v, int):
        parent[key] = rng.choice([0, v + 1, 1, 65535, 255, 3, 17, 53, 443])
    elif isinstance(parent, dict) and r < 0.6:
        del parent[key]
    elif isinstance(v, list) and v:
        v.pop(rng.randrange(len(v)))
    elif isinstance(v, dict) and v and isinstance(parent, dict):
        parent[key] = {}
    return obj


def crossover(rng, o, lines):
    """Fields of the flow taken from other recorded flows (or dropped):
    combinations no recording holds, each part of them real."""
    f = o.get("flow")
    if not isinstance(f, dict):
        return o
    for _ in range(rng.randint(1, 4)):
        other = json.loads(rng.choice(lines)).get("flow")
        if not isinstance(other, dict) or not other:
            continue
        key = rng.choice(sorted(set(f) | set(other)))
        if key in other and rng.random() < 0.85:
            f[key] = other[key]
        else:
            f.pop(key, None)
    return o


def make_valid(rng, src, dst, n, enums, strings):
    lines = open(src, encoding="utf-8").read().splitlines()
    out = []
    for _ in range(n):
        o = json.loads(rng.choice(lines))
        if rng.random() < 0.5:
            o = crossover(rng, o, lines)
        for _ in range(rng.randint(0 if "flow" in o else 1, 3)):
            o = mutate_valid(rng, o, enums, strings)
        out.append(json.dumps(o, ensure_ascii=rng.random() < 0.5))
    with open(dst, "w", encoding="utf-8") as fh:
        fh.write("\n".join(out) + "\n")


def make_mutated(rng, src, dst, n):
    lines = open(src, encoding="utf-8").read().splitlines()
    out = []
    for _ in range(n):
        line = rng.choice(lines)
        r = rng.random()
        if r < 0.05:
            out.append(line[: rng.randint(1, len(line) - 1)])
        elif r < 0.08:
            out.append(rng.choice(["", "not json", "{}", "[]", "null", '{"flow":null}',
                                   '{"flow":{}}', '{"unknown_field":1}', "   "]))
        else:
            o = json.loads(line)
            for _ in range(rng.randint(1, 3)):
                o = mutate(rng, o)
            out.append(json.dumps(o, ensure_ascii=rng.random() < 0.5))
    with open(dst, "w", encoding="utf-8") as fh:
        fh.write("\n".join(out) + "\n")


def run(binary, args, cwd, home, stdin=None):
    env = {"HOME": home, "TZ": "UTC", "PATH": "/usr/bin:/bin"}
    try:
        p = subprocess.run([binary] + args, cwd=cwd, env=env,
                           stdin=open(stdin, "rb") if stdin else subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        err = re.sub(rb"time=\S+", b"time=REDACTED", p.stderr)
        # A relative --since/--until is "now" to the nanosecond in -D's
        # request: times within a day of now are redacted.
        now = int(time.time())
        err = re.sub(rb"\{seconds:(\d+)( nanos:\d+)?\}",
                     lambda m: b"{NOW}" if abs(int(m.group(1)) - now) < 86400 else m.group(0), err)
        return p.stdout, err, p.returncode
    except subprocess.TimeoutExpired:
        return b"", b"(timed out)", -1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hubble", required=True)
    ap.add_argument("--webb", default=os.path.join(HERE, "..", "target", "debug", "webb"))
    ap.add_argument("--cases", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-k", "--kind", default="", help="format, filter, raw, error, valid (inputs changed within Hubble's schema) or mutated (also torn lines and wrong types)")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--server", default="",
                    help="ask this server (a webb agent or relay) instead of reading files")
    ap.add_argument("--stdout-only", action="store_true",
                    help="compare stdout and exit codes only (not warning texts)")
    opts = ap.parse_args()
    hubble = os.path.abspath(opts.hubble)
    webb = os.path.abspath(opts.webb)
    rng = random.Random(opts.seed)
    work = tempfile.mkdtemp(prefix="hubble-diff-")
    home = tempfile.mkdtemp(prefix="hubble-diff-home-")
    for name in INPUTS:
        shutil.copy(os.path.join(ORACLE, name), work)
    mutated = []
    for i in range(6):
        name = "mutated-%d.jsonl" % i
        make_mutated(rng, os.path.join(ORACLE, INPUTS[i % 4]), os.path.join(work, name), 80)
        mutated.append(name)
    objs = load(os.path.join(ORACLE, "flows.jsonl")) + load(os.path.join(ORACLE, "edge-cases.jsonl"))
    vals = values(objs)
    enums = enum_values(objs)
    strings = sorted({x for vs in vals.values() for x in vs})
    valid = []
    for i in range(opts.cases):
        # Small files, so that a difference points at its line.
        name = "valid-%d.jsonl" % i
        make_valid(rng, os.path.join(ORACLE, INPUTS[i % 4]), os.path.join(work, name), 2, enums, strings)
        valid.append(name)
    cases = []
    kinds = ["format", "filter", "raw", "valid", "mutated"]
    for i in range(opts.cases):
        kind = opts.kind or kinds[i % len(kinds)]
        if kind == "format":
            args = ["observe", "--input-file", rng.choice(INPUTS)] + format_args(rng) + selector_args(rng)
        elif kind == "filter":
            args = ["observe", "--input-file", rng.choice(INPUTS)] + filter_args(rng, vals) + \
                (["-o", "json"] if rng.random() < 0.6 else format_args(rng)) + \
                (["--all"] if rng.random() < 0.8 else selector_args(rng))
        elif kind == "error":
            args = ["observe", "--input-file", "flows.jsonl"]
            for _ in range(rng.randint(1, 4)):
                args += rng.choice(RISKY)
        elif kind == "raw":
            args = ["observe", "--input-file", "flows.jsonl"] + filter_args(rng, vals) + ["--print-raw-filters"]
        elif kind == "valid":
            args = ["observe", "--input-file", valid[i]] + format_args(rng) + \
                (filter_args(rng, vals) if rng.random() < 0.3 else []) + ["--all"]
        else:
            args = ["observe", "--input-file", rng.choice(mutated)] + format_args(rng) + \
                (filter_args(rng, vals) if rng.random() < 0.3 else []) + ["--all"]
        if rng.random() < 0.05:
            args.insert(1, "flows")
        stdin = None
        if kind in ("format", "filter") and rng.random() < 0.1:
            i_file = args.index("--input-file") + 1
            stdin, args[i_file] = args[i_file], "-"
        if opts.server and "--input-file" in args and kind in ("format", "filter", "raw", "error"):
            i_file = args.index("--input-file")
            args[i_file:i_file + 2] = ["--server", opts.server]
            stdin = None
        cases.append((kind, args, stdin))

    def one(case):
        kind, args, stdin = case
        stdin = os.path.join(work, stdin) if stdin else None
        h = run(hubble, args, work, home, stdin)
        w = run(webb, args, work, home, stdin)
        if h[2] != 0 and w[2] != 0 and not w[0] and not h[0]:
            return kind, args, h, w, True
        if opts.stdout_only:
            return kind, args, h, w, (h[0], h[2]) == (w[0], w[2])
        return kind, args, h, w, h == w

    bad = {}
    total = {}
    with ThreadPoolExecutor(max_workers=2) as ex:
        for kind, args, h, w, ok in ex.map(one, cases):
            total[kind] = total.get(kind, 0) + 1
            if ok:
                continue
            bad[kind] = bad.get(kind, 0) + 1
            print("DIFF %s: webb %s" % (kind, shlex.join(args)))
            if opts.verbose and kind in ("valid", "mutated"):
                for line in open(os.path.join(work, args[args.index("--input-file") + 1]), encoding="utf-8"):
                    print("  input: " + line.rstrip("\n")[:1500])
            if opts.verbose:
                if h[2] != w[2]:
                    print("  exit code: hubble %d, webb %d" % (h[2], w[2]))
                for label, a, b in (("stdout", h[0], w[0]), ("stderr", h[1], w[1])):
                    if a != b:
                        al = a.decode("utf-8", "replace").splitlines()
                        bl = b.decode("utf-8", "replace").splitlines()
                        shown = 0
                        for j in range(max(len(al), len(bl))):
                            x = al[j] if j < len(al) else "<none>"
                            y = bl[j] if j < len(bl) else "<none>"
                            if x != y:
                                print("  %s line %d\n    hubble: %r\n    webb:   %r" % (label, j + 1, x[:300], y[:300]))
                                shown += 1
                                if shown >= 2:
                                    break
                        if len(al) != len(bl):
                            print("  %s lines: hubble %d, webb %d" % (label, len(al), len(bl)))
    for kind in total:
        print("%-8s %d same, %d differ" % (kind, total[kind] - bad.get(kind, 0), bad.get(kind, 0)))
    n_bad = sum(bad.values())
    print("%d same, %d differ" % (len(cases) - n_bad, n_bad))
    shutil.rmtree(work)
    shutil.rmtree(home)
    return 0 if n_bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
