#!/usr/bin/env bash
# Makes the certificates for mutual TLS between webb-relay and the agents,
# as Kubernetes Secrets on stdout:
#
#   bash deploy/certs.sh | kubectl apply -f -
#
# One new CA (kept only in the Secrets' ca.crt; its key is thrown away), and
# signed by it:
#   webb-agent-tls         the agents' server certificate, for the name
#                          webb-agent.kube-system (the relay verifies it with
#                          --peer-tls-server-name, whatever node IP it dials)
#   webb-relay-client-tls  the relay's client certificate (the agents accept
#                          only clients signed by the CA)
# Running it again makes new ones (rotation): apply, then restart the agents
# and the relay (`kubectl -n kube-system rollout restart ds/webb-agent
# deploy/webb-relay`).
#
# Options: --days N (validity, default 1095), --namespace NS (default
# kube-system). Needs openssl.
set -euo pipefail

days=1095
namespace=kube-system
while [ $# -gt 0 ]; do
  case "$1" in
    --days) days="$2"; shift 2 ;;
    --namespace) namespace="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "certs.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$days" in ''|*[!0-9]*) echo "certs.sh: --days wants a number of days, not '$days'" >&2; exit 2 ;; esac
command -v openssl >/dev/null || { echo "certs.sh: openssl is needed" >&2; exit 1; }

dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cd "$dir"
quiet() { "$@" 2>err || { cat err >&2; exit 1; }; }

key() { quiet openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

key ca.key
quiet openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=webb CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.crt

# sign NAME CN EXTENDED_USAGE [SAN]
sign() {
  key "$1.key"
  quiet openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$3"
    [ -z "${4:-}" ] || echo "subjectAltName=$4"
  } > "$1.ext"
  quiet openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
    -days "$days" -extfile "$1.ext" -out "$1.crt"
}
sign agent webb-agent serverAuth "DNS:webb-agent.$namespace,DNS:webb-agent.$namespace.svc"
sign relay webb-relay clientAuth

b64() { base64 -w0 < "$1"; }
secret() {
  cat <<EOF
---
apiVersion: v1
kind: Secret
metadata:
  name: $1
  namespace: $namespace
  labels: {app.kubernetes.io/part-of: webb}
type: kubernetes.io/tls
data:
  tls.crt: $(b64 "$2.crt")
  tls.key: $(b64 "$2.key")
  ca.crt: $(b64 ca.crt)
EOF
}
secret webb-agent-tls agent
secret webb-relay-client-tls relay
