#!/usr/bin/env bash
# A Kubernetes control plane on loopback for the tests, built from Go
# modules (testenv/kube): etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok's fake nodes (no container runtime: pods are
# marked Running and Ready, nothing runs in them). See docs/kubernetes.md.
#
#   scripts/kube-env.sh build       build the programs (cached, once per go.sum)
#   scripts/kube-env.sh up          build if needed, start (or find running),
#                                   apply deploy/, print KEY=VALUE lines
#   scripts/kube-env.sh down        stop every process `up` started
#   COALMINE_GATEWAY_API_VERSION=v1.2.1 scripts/kube-env.sh up   a second
#                                   cluster with that release's CRDs
#   COALMINE_KUBE_CLUSTER=NAME scripts/kube-env.sh up   another cluster
#                                   of its own (run-NAME), for tests that
#                                   need the same names at the same time
#   scripts/kube-env.sh kubeconfig [admin|controller]   print a kubeconfig path
#
# State lives in target/kube-env (COALMINE_KUBE_ENV to move it): bin/ holds
# the programs, run/ the certificates, logs, data and kubeconfigs. Needs Go,
# openssl, curl and python3 (free ports). Every failure exits non-zero.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ENV_DIR=${COALMINE_KUBE_ENV:-$ROOT/target/kube-env}
BIN=$ENV_DIR/bin
MOD=$ROOT/testenv/kube
K8S_VERSION=v1.37.2
# The CRDs of the routers' APIs, from their Go modules. Another Gateway API
# release than the default gets a cluster of its own (run-gateway-api-V).
GATEWAY_API_DEFAULT=v1.6.3
GATEWAY_API_VERSION=${COALMINE_GATEWAY_API_VERSION:-$GATEWAY_API_DEFAULT}
CLUSTER=${COALMINE_KUBE_CLUSTER:-}
case "$CLUSTER" in
  *[!a-z0-9-]*) echo "kube-env: COALMINE_KUBE_CLUSTER=$CLUSTER: use lowercase letters, digits and '-'" >&2; exit 1 ;;
esac
if [ -n "$CLUSTER" ]; then
  RUN=$ENV_DIR/run-$CLUSTER
elif [ "$GATEWAY_API_VERSION" = "$GATEWAY_API_DEFAULT" ]; then
  RUN=$ENV_DIR/run
else
  RUN=$ENV_DIR/run-gateway-api-$GATEWAY_API_VERSION
fi
ISTIO_API_VERSION=v1.32.0
NODES=${COALMINE_KUBE_NODES:-2}

say() { echo "kube-env: $*" >&2; }
die() { say "$*"; exit 1; }

stamp() {
  { cat "$MOD/go.mod" "$MOD/go.sum"; echo "$K8S_VERSION"; } | sha256sum | cut -d' ' -f1
}

build() {
  command -v go >/dev/null || die "Go is not installed: the test cluster is built from testenv/kube with go build"
  local want
  want=$(stamp)
  if [ -f "$BIN/.stamp" ] && [ "$(cat "$BIN/.stamp")" = "$want" ]; then
    return 0
  fi
  mkdir -p "$BIN"
  # One build at a time (two clusters may be started at once).
  exec 8>"$ENV_DIR/build.lock"
  flock 8
  if [ -f "$BIN/.stamp" ] && [ "$(cat "$BIN/.stamp")" = "$want" ]; then
    exec 8>&-
    return 0
  fi
  say "building Kubernetes $K8S_VERSION, etcd and kwok into $BIN (a cold build takes a while)"
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=37"
  done
  local start=$SECONDS
  (cd "$MOD" && go build -trimpath -ldflags "$ld" -o "$BIN/" tool) || die "go build failed in testenv/kube"
  # go.etcd.io/etcd/server/v3 builds as `server`.
  if [ -f "$BIN/server" ]; then mv -f "$BIN/server" "$BIN/etcd"; fi
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok; do
    [ -x "$BIN/$b" ] || die "go build made no $b"
  done
  echo "$want" >"$BIN/.stamp"
  exec 8>&-
  say "built in $((SECONDS - start))s"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts a program in its own session; its pid goes to run/pids.
start() {
  local name=$1
  shift
  setsid "$@" >"$RUN/logs/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$RUN/pids/$name"
}

alive() {
  local f
  for f in "$RUN"/pids/*; do
    [ -f "$f" ] || return 1
    kill -0 "$(cat "$f")" 2>/dev/null || return 1
  done
}

# Waits (at most $2 s) until the command in $3... succeeds; names $1 if not.
wait_for() {
  local what=$1 secs=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! alive; then
      say "a process exited while waiting for $what; logs in $RUN/logs"
      tail -n 5 "$RUN"/logs/*.log >&2 || true
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "timed out after ${secs}s waiting for $what; logs in $RUN/logs"
      tail -n 20 "$RUN"/logs/*.log >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

# Stops the cluster of run directory $1.
stop() {
  local RUN=$1 f pid
  for f in "$RUN"/pids/*; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
  done
  # Five seconds for all of them to exit, then SIGKILL.
  local deadline=$((SECONDS + 5))
  for f in "$RUN"/pids/*; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
  rm -rf "$RUN"
}

# Stops every cluster `up` started (each Gateway API release's, each named one).
down() {
  local r
  for r in "$ENV_DIR"/run "$ENV_DIR"/run-*; do
    [ -d "$r" ] && stop "$r"
  done
  return 0
}

certs() {
  local d=$RUN/pki
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=coalmine-test-ca" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  cat >"$d/server.ext" <<EOF
subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc
extendedKeyUsage = serverAuth
EOF
  echo "extendedKeyUsage = clientAuth" >"$d/client.ext"
  sign server "/CN=kube-apiserver" server.ext
  # Clients of the control plane: system:masters, one name each.
  local c
  for c in admin kube-controller-manager kube-scheduler kwok; do
    sign "$c" "/O=system:masters/CN=$c" client.ext
  done
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
}

sign() {
  local d=$RUN/pki name=$1 subj=$2 ext=$3
  openssl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$d/$name.key" -out "$d/$name.csr" 2>/dev/null
  openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 30 -extfile "$d/$ext" -out "$d/$name.crt" 2>/dev/null
}

# kubeconfig NAME: a kubeconfig for client certificate NAME.
cert_kubeconfig() {
  local name=$1 d=$RUN/pki
  cat >"$RUN/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: coalmine-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $d/ca.crt
users:
- name: $name
  user:
    client-certificate: $d/$name.crt
    client-key: $d/$name.key
contexts:
- name: $name
  context: {cluster: coalmine-test, user: $name}
current-context: $name
EOF
}

kubectl_admin() { "$BIN/kubectl" --kubeconfig "$RUN/admin.kubeconfig" "$@"; }

# The directory of a Go module's files (downloaded once into GOMODCACHE).
module_dir() {
  (cd "$MOD" && go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
}

print_env() {
  cat "$RUN/env"
}

up() {
  build
  mkdir -p "$ENV_DIR"
  exec 9>"$RUN.lock"
  flock 9
  if [ -f "$RUN/env" ] && alive && kubectl_admin get --raw /readyz >/dev/null 2>&1; then
    print_env
    return 0
  fi
  local start=$SECONDS
  stop "$RUN"
  mkdir -p "$RUN/logs" "$RUN/pids" "$RUN/etcd"
  certs
  local etcd_port peer_port
  etcd_port=$(free_port)
  peer_port=$(free_port)
  API_PORT=$(free_port)
  KWOK_PORT=$(free_port)
  start etcd "$BIN/etcd" --name coalmine-test --data-dir "$RUN/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "coalmine-test=http://127.0.0.1:$peer_port" \
    --unsafe-no-fsync --log-level warn
  wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health"
  local p=$RUN/pki
  # The audit log records every request of the controller's ServiceAccount
  # (metadata only): scripts/bench-controller.sh counts API calls from it.
  cat >"$RUN/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    users: ["system:serviceaccount:coalmine-system:coalmine-controller"]
  - level: None
POLICY
  start kube-apiserver "$BIN/kube-apiserver" \
    --audit-policy-file "$RUN/audit-policy.yaml" \
    --audit-log-path "$RUN/logs/audit.log" --audit-log-format json \
    --audit-log-maxsize 200 --audit-log-maxbackup 1 \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --endpoint-reconciler-type none \
    --cert-dir "$RUN/apiserver" \
    --tls-cert-file "$p/server.crt" --tls-private-key-file "$p/server.key" \
    --client-ca-file "$p/ca.crt" \
    --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$p/sa.pub" \
    --service-account-signing-key-file "$p/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 \
    --enable-priority-and-fairness=false \
    --profiling=false
  cert_kubeconfig admin
  wait_for kube-apiserver 120 kubectl_admin get --raw /readyz
  cert_kubeconfig kube-controller-manager
  cert_kubeconfig kube-scheduler
  cert_kubeconfig kwok
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$RUN/kube-controller-manager.kubeconfig" \
    --controllers deployment-controller,replicaset-controller,garbage-collector-controller,endpointslice-controller,endpoints-controller,horizontal-pod-autoscaler-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
    --leader-elect=false --secure-port 0 --profiling=false \
    --concurrent-deployment-syncs 10 --concurrent-replicaset-syncs 10
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$RUN/kube-scheduler.kubeconfig" \
    --leader-elect=false --secure-port 0 --profiling=false
  # kwok: the node and pod stages of its module ("fast": Ready at once),
  # with node heartbeats through Leases.
  local kwok_dir
  kwok_dir=$(module_dir "sigs.k8s.io/kwok@$(cd "$MOD" && go list -m -f '{{.Version}}' sigs.k8s.io/kwok)")
  {
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      echo "---"
      cat "$kwok_dir/kustomize/stage/$f"
    done
  } >"$RUN/kwok.yaml"
  start kwok "$BIN/kwok" --config "$RUN/kwok.yaml" \
    --kubeconfig "$RUN/kwok.kubeconfig" \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-ip 127.0.0.1 --node-port "$KWOK_PORT" --server-address "127.0.0.1:$KWOK_PORT" \
    --cidr 10.244.0.1/16 --node-lease-duration-seconds 40
  # 1500 pods a node: room for scripts/bench-controller.sh's 500 Canaries
  # of 2 replicas with a canary pod each while stable still runs (surge).
  local i
  for i in $(seq 1 "$NODES"); do
    kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {kubernetes.io/hostname: node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "1500"}
  capacity: {cpu: "64", memory: 256Gi, pods: "1500"}
EOF
  done
  wait_for "Ready nodes" 60 kubectl_admin wait --for=condition=Ready node --all --timeout=1s
  # The API server taints new nodes not-ready; without a node lifecycle
  # controller (kwok's nodes are always Ready) nothing else removes it.
  kubectl_admin taint nodes --all node.kubernetes.io/not-ready:NoSchedule- >/dev/null
  wait_for "the default ServiceAccount" 60 kubectl_admin get serviceaccount default -n default
  # The routers' CRDs.
  local gw istio
  gw=$(module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")
  istio=$(module_dir "istio.io/api@$ISTIO_API_VERSION")
  kubectl_admin apply --server-side -f "$gw/config/crd/standard" >/dev/null
  kubectl_admin apply --server-side -f "$istio/kubernetes/customresourcedefinitions.gen.yaml" >/dev/null
  # coalmine itself: CRD, namespace, RBAC, controller Deployment.
  kubectl_admin apply -k "$ROOT/deploy" >/dev/null
  kubectl_admin wait --for=condition=Established crd --all --timeout=60s >/dev/null
  wait_for "the ServiceAccount coalmine-controller" 30 kubectl_admin get serviceaccount coalmine-controller -n coalmine-system
  local token
  token=$(kubectl_admin create token coalmine-controller -n coalmine-system --duration 48h)
  cat >"$RUN/controller.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: coalmine-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $p/ca.crt
users:
- name: coalmine-controller
  user:
    token: $token
contexts:
- name: coalmine-controller
  context: {cluster: coalmine-test, user: coalmine-controller, namespace: default}
current-context: coalmine-controller
EOF
  cat >"$RUN/env" <<EOF
KUBE_ENV_RUN=$RUN
KUBE_ENV_BIN=$BIN
KUBECTL=$BIN/kubectl
ADMIN_KUBECONFIG=$RUN/admin.kubeconfig
CONTROLLER_KUBECONFIG=$RUN/controller.kubeconfig
AUDIT_LOG=$RUN/logs/audit.log
API_SERVER=https://127.0.0.1:$API_PORT
GATEWAY_API_VERSION=$GATEWAY_API_VERSION
EOF
  say "up in $((SECONDS - start))s"
  print_env
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  down) down ;;
  kubeconfig)
    [ -f "$RUN/env" ] || die "not up: run scripts/kube-env.sh up"
    case "${2:-admin}" in
      admin) echo "$RUN/admin.kubeconfig" ;;
      controller) echo "$RUN/controller.kubeconfig" ;;
      *) die "kubeconfig admin|controller" ;;
    esac
    ;;
  *) die "usage: $0 build|up|down|kubeconfig [admin|controller]" ;;
esac
