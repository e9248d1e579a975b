#!/usr/bin/env bash
# multigres-op real local Kubernetes test control plane.
#
#   cp.sh build              build + cache kube-apiserver, kube-controller-manager,
#                            kube-scheduler, kubectl, etcd, kwok (Go module proxy only)
#   cp.sh up                 start etcd, apiserver, controller-manager, scheduler, kwok
#                            (refused while another live run owns MGOP_CP_DIR)
#   cp.sh selftest           PVC binds, StatefulSet pods Running+Ready, cleanup
#   cp.sh down               stop everything, remove state dir (MGOP_CP_KEEP=1 keeps it)
#   cp.sh restart-apiserver [--kill] [seconds-down]
#                            stop (SIGTERM, or SIGKILL with --kill) and start
#                            kube-apiserver again on the same port and flags
#   cp.sh status             show components, ports, pids
#   cp.sh logs [name]        tail component logs
#   cp.sh env                print the env file (source it: eval "$(cp.sh env)")
#   cp.sh bin-dir            print the cached bin dir (builds nothing)
#   cp.sh ports N            print N ports free on 127.0.0.1, below the ephemeral
#                            range (the tests' servers listen on them)
#   cp.sh kubectl ARGS...    the cached kubectl with the admin kubeconfig
#
# See README.md next to this file.
set -euo pipefail

# ---------------------------------------------------------------- versions --
# Pinned on purpose (newest v1.33.x / v3.5.x on the module proxy when written).
K8S_VERSION="${MGOP_K8S_VERSION:-v1.33.13}"
ETCD_VERSION="${MGOP_ETCD_VERSION:-v3.5.35}"
KWOK_VERSION="${MGOP_KWOK_VERSION:-v0.7.0}"

MGOP_CACHE="${MGOP_CACHE:-$HOME/.cache/multigres-op}"
CP_NODES="${MGOP_CP_NODES:-4}"
CP_PODS_PER_NODE="${MGOP_CP_PODS_PER_NODE:-250}"
CP_PV_SYNC="${MGOP_CP_PV_SYNC:-15s}"    # kube-controller-manager's PVC binder resync
CP_KCM_QPS="${MGOP_CP_KCM_QPS:-20}"     # its API client's QPS (pods of StatefulSets)
[[ $CP_NODES =~ ^[1-9][0-9]*$ && $CP_NODES -le 5000 ]] || { echo "MGOP_CP_NODES must be 1..5000, not '$CP_NODES'" >&2; exit 2; }
[[ $CP_PODS_PER_NODE =~ ^[1-9][0-9]*$ ]] || { echo "MGOP_CP_PODS_PER_NODE must be a positive number, not '$CP_PODS_PER_NODE'" >&2; exit 2; }
CP_KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}"
KEYDIR="$MGOP_CACHE/controlplane/$CP_KEY"
BIN="$KEYDIR/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok)

MGOP_CP_DIR="${MGOP_CP_DIR:-/tmp/multigres-op-cp}"
D="$MGOP_CP_DIR"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

READY_TIMEOUT="${MGOP_CP_READY_TIMEOUT:-120}"   # seconds, per wait

log() { printf '[cp %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf '[cp] ERROR: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ deps ----
apt_updated=0
ensure_pkg() { # ensure_pkg <command> <debian package>
  command -v "$1" >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || die "'$1' missing and no apt-get to install $2"
  log "installing $2 (for $1)"
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >&2 \
    || die "apt-get install $2 failed"
  command -v "$1" >/dev/null 2>&1 || die "'$1' still missing after installing $2"
}

ensure_go() {
  if ! command -v go >/dev/null 2>&1; then
    if [ -x /usr/local/go/bin/go ]; then
      export PATH="/usr/local/go/bin:$PATH"
    else
      die "Go toolchain not found (need go >= 1.24 in PATH or /usr/local/go/bin)"
    fi
  fi
  # Reproducible, isolated from whatever the caller's shell has set.
  export GOWORK=off GOFLAGS='' CGO_ENABLED=0 GO111MODULE=on
  unset GOOS GOARCH
}

# ----------------------------------------------------------------- build ----
bin_complete() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
  return 0
}

# Path of a downloaded module's go.mod (in the shared module cache).
mod_gomod() { # mod_gomod module@version
  go mod download -json "$1" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p'
}
mod_field() { # mod_field module@version Field
  go mod download -json "$1" | sed -n "s/^[[:space:]]*\"$2\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p"
}

# use_wrapper_gomod <dir>: <dir>/go.mod.gen is the freshly generated wrapper;
# start over from it unless the tidied go.mod was made from the same one.
use_wrapper_gomod() {
  if ! cmp -s "$1/go.mod.gen" "$1/go.mod.src" || [ ! -f "$1/go.mod" ]; then
    cp -f "$1/go.mod.gen" "$1/go.mod"
    cp -f "$1/go.mod.gen" "$1/go.mod.src"
    rm -f "$1/go.sum"
  fi
  rm -f "$1/go.mod.gen"
}

build_k8s() { # build_k8s <stage dir>
  local stage="$1" need=0 b
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [ -x "$stage/$b" ] || need=1
  done
  [ "$need" = 1 ] || { log "k8s binaries already staged"; return 0; }

  local src="$KEYDIR/src/k8s"
  mkdir -p "$src"
  log "k8s.io/kubernetes@$K8S_VERSION: downloading module"
  local gomod
  gomod="$(mod_gomod "k8s.io/kubernetes@$K8S_VERSION")"
  [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$K8S_VERSION"

  # staging modules: the replace block entries that point at ./staging/...
  local staging_ver="v0.${K8S_VERSION#v1.}"
  local mods
  mods="$(awk '
      /^replace[[:space:]]*\(/ { inblk=1; next }
      inblk && /^\)/          { inblk=0; next }
      inblk && $2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }
      /^replace[[:space:]]+[^(]/ && $3 == "=>" && $4 ~ /^\.\/staging\// { print $2 }
    ' "$gomod" | sort -u)"
  case "$mods" in *k8s.io/api*) ;; *) die "no staging replaces found in $gomod";; esac
  case "$mods" in *k8s.io/client-go*) ;; *) die "no client-go staging replace in $gomod";; esac

  local gover godebug
  gover="$(awk '$1=="go"{print $2; exit}' "$gomod")"
  godebug="$(grep -E '^godebug[[:space:]]' "$gomod" || true)"
  {
    echo "// Generated by tests/controlplane/cp.sh from k8s.io/kubernetes@$K8S_VERSION go.mod. Do not edit."
    echo "module multigres-op.local/controlplane/k8s"
    echo
    echo "go $gover"
    [ -n "$godebug" ] && { echo; echo "$godebug"; }
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    local m
    for m in $mods; do echo "	$m => $m $staging_ver"; done
    echo ")"
    echo
    echo "tool ("
    echo "	k8s.io/kubernetes/cmd/kube-apiserver"
    echo "	k8s.io/kubernetes/cmd/kube-controller-manager"
    echo "	k8s.io/kubernetes/cmd/kube-scheduler"
    echo "	k8s.io/kubernetes/cmd/kubectl"
    echo ")"
  } >"$src/go.mod.gen"
  use_wrapper_gomod "$src"
  log "k8s wrapper: $(echo "$mods" | wc -l) staging replaces -> $staging_ver; go mod tidy"
  (cd "$src" && go mod tidy) || die "go mod tidy failed in $src"

  # Version stamping, as hack/lib/version.sh does it.
  local minor major build_date ld="-s -w" pkg
  major="${K8S_VERSION#v}"; major="${major%%.*}"
  minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
  build_date="$(mod_field "k8s.io/kubernetes@$K8S_VERSION" Info | xargs -r sed -n 's/.*"Time":"\([^"]*\)".*/\1/p')"
  build_date="${build_date:-1970-01-01T00:00:00Z}"
  build_date="${build_date%%.*}"; case "$build_date" in *Z) ;; *) build_date="${build_date}Z";; esac
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done

  local tmp="$stage/.k8s.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  log "building kube-apiserver kube-controller-manager kube-scheduler kubectl (cold: ~15-20 min on 2 cores)"
  (cd "$src" && go build -trimpath -ldflags "$ld" -o "$tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubectl) || die "k8s go build failed"
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [ -x "$tmp/$b" ] || die "k8s build produced no $b"
    mv -f "$tmp/$b" "$stage/$b"
  done
  rm -rf "$tmp"
}

build_etcd() {
  local stage="$1"
  [ -x "$stage/etcd" ] && { log "etcd already staged"; return 0; }
  local src="$KEYDIR/src/etcd"
  mkdir -p "$src"
  log "go.etcd.io/etcd/server/v3@$ETCD_VERSION: downloading module"
  local gomod gover
  gomod="$(mod_gomod "go.etcd.io/etcd/server/v3@$ETCD_VERSION")"
  [ -f "$gomod" ] || die "could not download go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  gover="$(awk '$1=="go"{print $2; exit}' "$gomod")"
  # A wrapper of its own: etcd 3.5 keeps its own (newer) grpc/otel pins, and
  # mixing it into the k8s wrapper would bump the apiserver's dependencies.
  {
    echo "// Generated by tests/controlplane/cp.sh. Do not edit."
    echo "module multigres-op.local/controlplane/etcd"
    echo
    echo "go $gover"
    echo
    echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    echo
    echo "tool go.etcd.io/etcd/server/v3"
  } >"$src/go.mod.gen"
  use_wrapper_gomod "$src"
  (cd "$src" && go mod tidy) || die "go mod tidy failed in $src"
  log "building etcd"
  (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$stage/.etcd.tmp.$$" go.etcd.io/etcd/server/v3) \
    || die "etcd go build failed"
  mv -f "$stage/.etcd.tmp.$$" "$stage/etcd"
}

build_kwok() {
  local stage="$1"
  [ -x "$stage/kwok" ] && { log "kwok already staged"; return 0; }
  local tmp="$stage/.kwok.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  log "building kwok (go install sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION)"
  GOBIN="$tmp" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" \
    || die "kwok go install failed"
  mv -f "$tmp/kwok" "$stage/kwok"
  rm -rf "$tmp"
}

cmd_build() {
  if bin_complete; then
    log "cached: $BIN"
    return 0
  fi
  ensure_go
  ensure_pkg flock util-linux
  mkdir -p "$KEYDIR"
  exec 9>"$KEYDIR/.build.lock"
  if ! flock -n 9; then
    log "another build holds $KEYDIR/.build.lock; waiting"
    flock 9
  fi
  if bin_complete; then log "cached: $BIN"; return 0; fi

  local t0=$SECONDS stage="$KEYDIR/stage"
  mkdir -p "$stage"
  rm -rf "$stage"/.*.tmp.*   # leftovers of an interrupted build (we hold the lock)
  log "building control plane $CP_KEY with $(go version | awk '{print $3}') into $KEYDIR"
  build_kwok "$stage"
  build_etcd "$stage"
  build_k8s "$stage"

  # Smoke-check every binary before publishing the cache.
  # Capture, then match: a pipe into grep -q under pipefail lets grep exit at
  # the first match and kill the writer with SIGPIPE, a race a loaded machine loses.
  local v
  v=$("$stage/kube-apiserver" --version 2>&1) || die "kube-apiserver --version failed"
  [[ $v == *"$K8S_VERSION"* ]] || die "kube-apiserver --version is not $K8S_VERSION: $v"
  v=$("$stage/kubectl" version --client 2>/dev/null) || die "kubectl version --client failed"
  [[ $v == *"$K8S_VERSION"* ]] || die "kubectl version is not $K8S_VERSION: $v"
  v=$("$stage/etcd" --version 2>&1) || die "etcd --version failed"
  [[ $v == *"${ETCD_VERSION#v}"* ]] || die "etcd --version is not $ETCD_VERSION: $v"
  "$stage/kwok" --version >/dev/null 2>&1 || die "kwok --version failed"
  {
    echo "key=$CP_KEY"
    echo "kubernetes=$K8S_VERSION"
    echo "etcd=$ETCD_VERSION"
    echo "kwok=$KWOK_VERSION"
    echo "go=$(go version | awk '{print $3}')"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "build_seconds=$((SECONDS - t0))"
  } >"$stage/VERSIONS"
  rm -rf "$BIN"
  mv -T "$stage" "$BIN"   # atomic publish: bin/ exists only when complete
  log "built $CP_KEY in $((SECONDS - t0))s -> $BIN"
}


# ------------------------------------------------------------ processes ----
bin_real() { readlink -f "$BIN" 2>/dev/null || echo "$BIN"; }
pidfile() { echo "$D/pids/$1.pid"; }

# pid_of <name>: prints the pid if the component is alive and really ours.
pid_of() {
  local f pid exe
  f="$(pidfile "$1")"
  [ -f "$f" ] || return 1
  pid="$(cat "$f" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -d "/proc/$pid" ] || return 1
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
  exe="${exe% (deleted)}"
  # a zombie or recycled pid is not ours
  case "$exe" in "$BIN/$1"|"$(bin_real)/$1") ;; *) return 1;; esac
  grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null && return 1
  echo "$pid"
}

# start_component <name> <args...>: the binary is $BIN/<name>.
start_component() {
  local name="$1"; shift
  local f; f="$(pidfile "$name")"
  rm -f "$f"
  printf '%s\n' "$@" >"$D/cmd/$name.args"
  {
    echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) starting $name"
    printf '%q ' "$BIN/$name" "$@"; echo
  } >>"$D/logs/$name.log"
  # setsid: own session, so the caller's terminal/job control cannot kill it;
  # the inner shell writes its own pid and execs, so the pid file is exact.
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$f" "$BIN/$name" "$@" \
    >>"$D/logs/$name.log" 2>&1 </dev/null &
  local i
  for i in $(seq 1 100); do [ -s "$f" ] && break; sleep 0.05; done
  [ -s "$f" ] || fail "$name: no pid file after start"
}

restart_from_args() { # restart_from_args <name>
  local args=()
  mapfile -t args <"$D/cmd/$1.args"
  start_component "$1" "${args[@]}"
}

# stop_component <name> [grace seconds]: SIGTERM, then SIGKILL after the grace
# period (grace 0: SIGKILL right away).
stop_component() {
  local name="$1" grace="${2:-10}" pid i
  pid="$(pid_of "$name")" || { rm -f "$(pidfile "$name")"; return 0; }
  if [ "$grace" -gt 0 ]; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 $((grace * 10))); do
      pid_of "$name" >/dev/null || break
      sleep 0.1
    done
  fi
  if pid_of "$name" >/dev/null; then
    [ "$grace" -gt 0 ] && log "$name (pid $pid) still running ${grace}s after SIGTERM; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do pid_of "$name" >/dev/null || break; sleep 0.1; done
  fi
  pid_of "$name" >/dev/null && { log "WARNING: $name (pid $pid) still running"; return 1; }
  rm -f "$(pidfile "$name")"
  return 0
}

# Processes running one of our cached binaries with this state dir on their
# command line (catches anything whose pid file was lost).
stray_pids() {
  local p exe real
  real="$(bin_real)"
  for p in /proc/[0-9]*; do
    exe="$(readlink "$p/exe" 2>/dev/null || true)"
    case "$exe" in "$BIN"/*|"$real"/*) ;; *) continue;; esac
    local cmdline; cmdline=$(tr '\0' '\n' <"$p/cmdline" 2>/dev/null) || continue
    [[ $cmdline == *"$D/"* ]] || continue
    grep -q '^State:[[:space:]]*Z' "$p/status" 2>/dev/null && continue
    echo "${p#/proc/}"
  done
}

# ------------------------------------------------------------------ ports ---
# free_ports N: N distinct ports that bind on 127.0.0.1 right now, picked at
# random below the kernel's ephemeral range (so outgoing connections made in
# the meantime cannot grab them). Sockets are held until all are chosen.
free_ports() {
  local lo=20000 hi=32767 eph
  eph="$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
  if [ "$eph" -le 21000 ]; then lo=10000; hi=$((eph > 11000 ? eph - 1 : 19999)); fi
  [ "$eph" -gt 21000 ] && hi=$((eph - 1))
  perl -MIO::Socket::INET -e '
    my ($n, $lo, $hi) = @ARGV; my (%seen, @keep, @ports); my $tries = 0;
    while (@ports < $n && $tries++ < 5000) {
      my $p = $lo + int(rand($hi - $lo + 1));
      next if $seen{$p}++;
      my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $p,
                                    Proto => "tcp", Listen => 1, ReuseAddr => 0) or next;
      push @keep, $s; push @ports, $p;
    }
    die "could not find $n free ports\n" if @ports < $n;
    print join(" ", @ports), "\n";' "$1" "$lo" "$hi"
}

# -------------------------------------------------------------------- pki ---
gen_key() { # gen_key <file>   RSA 2048, PKCS#1 PEM (what kubeadm writes)
  openssl genrsa -traditional -out "$1" 2048 2>/dev/null || openssl genrsa -out "$1" 2048 2>/dev/null
  chmod 600 "$1"
}

# gen_cert <name> <subject> <extensions section> [signing CA name, default ca]
gen_cert() {
  local p="$D/pki" ca="${4:-ca}"
  gen_key "$p/$1.key"
  openssl req -new -config "$p/openssl.cnf" -key "$p/$1.key" -subj "$2" -out "$p/$1.csr" 2>/dev/null
  openssl x509 -req -in "$p/$1.csr" -CA "$p/$ca.crt" -CAkey "$p/$ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 365 -sha256 \
    -extfile "$p/openssl.cnf" -extensions "$3" -out "$p/$1.crt" 2>/dev/null
  rm -f "$p/$1.csr"
}

gen_pki() {
  local p="$D/pki"
  mkdir -p "$p"
  cat >"$p/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature,keyEncipherment
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
[v3_client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
EOF
  gen_key "$p/ca.key"
  openssl req -x509 -new -config "$p/openssl.cnf" -extensions v3_ca -key "$p/ca.key" \
    -subj "/CN=multigres-op-test-ca" -days 3650 -sha256 -out "$p/ca.crt" 2>/dev/null
  gen_cert apiserver "/CN=kube-apiserver" v3_server
  gen_cert admin "/O=system:masters/CN=admin" v3_client
  # Distinct identities, so the audit log tells the components apart.
  gen_cert kube-controller-manager "/O=system:masters/CN=system:kube-controller-manager" v3_client
  gen_cert kube-scheduler "/CN=system:kube-scheduler" v3_client
  gen_cert kwok "/O=system:masters/CN=kwok" v3_client
  # front-proxy CA + client (aggregation layer), as kubeadm does it
  gen_key "$p/front-proxy-ca.key"
  openssl req -x509 -new -config "$p/openssl.cnf" -extensions v3_ca -key "$p/front-proxy-ca.key" \
    -subj "/CN=multigres-op-test-front-proxy-ca" -days 3650 -sha256 -out "$p/front-proxy-ca.crt" 2>/dev/null
  gen_cert front-proxy-client "/CN=front-proxy-client" v3_client front-proxy-ca
  # service-account signing key pair
  gen_key "$p/sa.key"
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  openssl verify -CAfile "$p/ca.crt" "$p/apiserver.crt" "$p/admin.crt" >/dev/null \
    || fail "generated certificates do not verify"
}

b64() { base64 -w0 <"$1"; }

# write_kubeconfig <file> <user name> <cert name>   (client cert, inline data)
write_kubeconfig() {
  local p="$D/pki"
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: multigres-op-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(b64 "$p/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(b64 "$p/$3.crt")
    client-key-data: $(b64 "$p/$3.key")
contexts:
- name: multigres-op-test
  context:
    cluster: multigres-op-test
    user: $2
    namespace: default
current-context: multigres-op-test
preferences: {}
EOF
  chmod 600 "$1"
}

write_audit_policy() {
  cat >"$D/audit-policy.yaml" <<'EOF'
# Metadata for every request (user, verb, resource, response code) and never
# request/response bodies. Health probes are dropped: cp.sh polls them.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages:
- RequestReceived
rules:
- level: None
  nonResourceURLs:
  - /healthz*
  - /readyz*
  - /livez*
- level: Metadata
EOF
}

# ------------------------------------------------------------------ waits ---
# fail: used inside `up` (the EXIT trap prints logs and tears down).
fail() { printf '[cp] ERROR: %s\n' "$*" >&2; exit 1; }

# wait_for <description> <timeout s> <command...>; fails early if a started
# component has died.
wait_for() {
  local what="$1" timeout="$2"; shift 2
  local start=$SECONDS c
  until "$@" >/dev/null 2>&1; do
    for c in "${STARTED[@]}"; do
      pid_of "$c" >/dev/null || fail "$c exited while waiting for $what (see $D/logs/$c.log)"
    done
    if [ $((SECONDS - start)) -ge "$timeout" ]; then
      fail "timed out after ${timeout}s waiting for $what"
    fi
    sleep 0.25
  done
}

curl_api() { # curl_api <path>   as admin
  curl -fsS --max-time 5 --cacert "$D/pki/ca.crt" --cert "$D/pki/admin.crt" --key "$D/pki/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT$1"
}
apiserver_ready() { [ "$(curl_api /readyz)" = ok ]; }
etcd_healthy() { local h; h=$(curl -fsS --max-time 3 "http://127.0.0.1:$ETCD_PORT/health") && [[ $h == *'"health":"true"'* ]]; }
https_healthz() { [ "$(curl -fsSk --max-time 3 "https://127.0.0.1:$1/healthz")" = ok ]; }
http_healthz() { [ "$(curl -fsS --max-time 3 "http://127.0.0.1:$1/healthz")" = ok ]; }

kc() { "$BIN/kubectl" --kubeconfig "$D/kubeconfig" --request-timeout=20s "$@"; }
# Every node Ready, read in one request: `kubectl wait --all --timeout=5s`
# spends its five seconds over the nodes one by one, so beyond about forty
# nodes it never succeeds even when all are Ready.
nodes_ready() {
  local s
  s=$(kc get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}') || return 1
  [ "$(grep -c '^True$' <<<"$s")" -eq "$CP_NODES" ]
}

load_ports() {
  [ -f "$D/ports" ] || die "no control plane state in $D (run: cp.sh up)"
  # shellcheck disable=SC1091
  . "$D/ports"
}

# --------------------------------------------------------------- components -
apiserver_args() {
  local p="$D/pki"
  echo "--bind-address=127.0.0.1"
  echo "--advertise-address=127.0.0.1"
  echo "--secure-port=$APISERVER_PORT"
  echo "--endpoint-reconciler-type=none"
  echo "--etcd-servers=http://127.0.0.1:$ETCD_PORT"
  echo "--service-cluster-ip-range=10.96.0.0/16"
  echo "--authorization-mode=Node,RBAC"
  echo "--client-ca-file=$p/ca.crt"
  echo "--tls-cert-file=$p/apiserver.crt"
  echo "--tls-private-key-file=$p/apiserver.key"
  echo "--service-account-issuer=https://kubernetes.default.svc.cluster.local"
  echo "--service-account-key-file=$p/sa.pub"
  echo "--service-account-signing-key-file=$p/sa.key"
  echo "--allow-privileged=true"
  # Close watches on SIGTERM (clients see a clean end of stream and re-watch)
  # instead of holding shutdown for up to --request-timeout (60s).
  echo "--shutdown-watch-termination-grace-period=5s"
  # Front-proxy (aggregation) settings: without them the controller-manager and
  # scheduler log an error loop about a missing requestheader CA bundle, and
  # aggregated API servers could not be used.
  echo "--requestheader-client-ca-file=$p/front-proxy-ca.crt"
  echo "--requestheader-allowed-names=front-proxy-client"
  echo "--requestheader-username-headers=X-Remote-User"
  echo "--requestheader-group-headers=X-Remote-Group"
  echo "--requestheader-extra-headers-prefix=X-Remote-Extra-"
  echo "--proxy-client-cert-file=$p/front-proxy-client.crt"
  echo "--proxy-client-key-file=$p/front-proxy-client.key"
  echo "--audit-policy-file=$D/audit-policy.yaml"
  echo "--audit-log-path=$D/audit.log"
  echo "--audit-log-format=json"
  echo "--audit-log-mode=blocking"
  echo "--audit-log-maxsize=0"
  echo "--profiling=false"
  echo "--v=${MGOP_CP_APISERVER_V:-1}"
  # extra flags for experiments, e.g. MGOP_CP_APISERVER_EXTRA_ARGS="--feature-gates=X=true"
  local x
  for x in ${MGOP_CP_APISERVER_EXTRA_ARGS:-}; do echo "$x"; done
}

start_etcd() {
  start_component etcd \
    --name=mgop \
    --data-dir="$D/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="mgop=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state=new \
    --initial-cluster-token="mgop-$$" \
    --unsafe-no-fsync=true \
    --quota-backend-bytes=4294967296 \
    --log-level=warn
  STARTED+=(etcd)
}

start_apiserver() {
  local args=()
  mapfile -t args < <(apiserver_args)
  start_component kube-apiserver "${args[@]}"
  STARTED+=(kube-apiserver)
}

start_controller_manager() {
  local p="$D/pki" kc="$D/kubeconfig-kube-controller-manager"
  # A long node-monitor grace period: kwok's node heartbeats can arrive late on
  # a loaded 2-core machine; the node lifecycle controller would then mark
  # every pod Ready=False, and kwok never marks them Ready again, which makes
  # readiness tests flaky. (The controller itself must run: it removes the
  # not-ready taint that admission puts on new nodes.)
  start_component kube-controller-manager \
    --kubeconfig="$kc" \
    --authentication-kubeconfig="$kc" \
    --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 \
    --secure-port="$KCM_PORT" \
    --controllers='*' \
    --node-monitor-grace-period=1h \
    --enable-hostpath-provisioner=true \
    --pvclaimbinder-sync-period="$CP_PV_SYNC" \
    --kube-api-qps="$CP_KCM_QPS" \
    --kube-api-burst="$((CP_KCM_QPS * 3 / 2))" \
    --service-account-private-key-file="$p/sa.key" \
    --root-ca-file="$p/ca.crt" \
    --cluster-signing-cert-file="$p/ca.crt" \
    --cluster-signing-key-file="$p/ca.key" \
    --use-service-account-credentials=false \
    --leader-elect=false \
    --profiling=false \
    --v=1
  STARTED+=(kube-controller-manager)
}

start_scheduler() {
  local kc="$D/kubeconfig-kube-scheduler"
  start_component kube-scheduler \
    --kubeconfig="$kc" \
    --authentication-kubeconfig="$kc" \
    --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 \
    --secure-port="$SCHED_PORT" \
    --leader-elect=false \
    --profiling=false \
    --v=1
  STARTED+=(kube-scheduler)
}

start_kwok() {
  # kwok v0.7.0 falls back to its built-in "fast" stages when it is given no
  # Stage objects and the Stage CRD is not enabled: node-initialize plus a
  # status heartbeat for nodes, pod-ready / pod-complete / pod-delete for pods.
  # That is what we want (nodes Ready, pods Running+Ready, deletes finish), so
  # no stage YAML is shipped. KWOK_WORKDIR keeps ~/.kwok/kwok.yaml out of it.
  export KWOK_WORKDIR="$D/kwok"
  start_component kwok \
    --kubeconfig="$D/kubeconfig-kwok" \
    --manage-all-nodes=true \
    --server-address="127.0.0.1:$KWOK_PORT" \
    --node-ip=127.0.0.1
  STARTED+=(kwok)
}

bootstrap_objects() {
  # One node per zone the samples name (config/samples), so pods with a zone
  # nodeSelector schedule.
  # MGOP_CP_NODES (default 4) nodes, zones in turn; MGOP_CP_PODS_PER_NODE
  # (default 110) pods each: kwok nodes cost nothing, so a benchmark adds them.
  local i zones=(us-east-1a us-east-1b us-east-1c z1)
  {
    for ((i = 0; i < CP_NODES; i++)); do
      cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
    topology.kubernetes.io/region: us-east-1
    topology.kubernetes.io/zone: ${zones[$((i % 4))]}
spec:
  podCIDR: 10.$((244 + i / 256)).$((i % 256)).0/24
  podCIDRs:
  - 10.$((244 + i / 256)).$((i % 256)).0/24
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "$CP_PODS_PER_NODE", ephemeral-storage: 1Ti}
  capacity: {cpu: "32", memory: 256Gi, pods: "$CP_PODS_PER_NODE", ephemeral-storage: 1Ti}
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: $K8S_VERSION
    kubeProxyVersion: $K8S_VERSION
EOF
    done
    cat <<'EOF'
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
allowVolumeExpansion: true
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: mgop-test-admin
  namespace: default
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: mgop-test-admin
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: cluster-admin
subjects:
- kind: ServiceAccount
  name: mgop-test-admin
  namespace: default
EOF
  } | kc apply -f - >/dev/null || fail "could not create bootstrap objects"
}

write_token_kubeconfig() {
  local token
  token="$(kc -n default create token mgop-test-admin --duration=24h)" || fail "kubectl create token failed"
  [ -n "$token" ] || fail "empty service account token"
  printf '%s' "$token" >"$D/token"
  chmod 600 "$D/token"
  cat >"$D/kubeconfig-token" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: multigres-op-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $D/pki/ca.crt
users:
- name: mgop-test-admin
  user:
    token: $token
contexts:
- name: mgop-test-admin@multigres-op-test
  context:
    cluster: multigres-op-test
    user: mgop-test-admin
    namespace: default
current-context: mgop-test-admin@multigres-op-test
EOF
  chmod 600 "$D/kubeconfig-token"
}

write_env() {
  local nodes="" i
  for ((i = 0; i < CP_NODES; i++)); do nodes+="${nodes:+ }kwok-node-$i"; done
  cat >"$D/env.tmp" <<EOF
# multigres-op test control plane ($CP_KEY). Source me.
export MGOP_CP_DIR="$D"
export MGOP_CP_KEY="$CP_KEY"
export MGOP_CP_BIN="$BIN"
export MGOP_K8S_VERSION="$K8S_VERSION"
export MGOP_ETCD_VERSION="$ETCD_VERSION"
export MGOP_KWOK_VERSION="$KWOK_VERSION"
export KUBECONFIG="$D/kubeconfig"
export MGOP_KUBECONFIG="$D/kubeconfig"
export MGOP_KUBECONFIG_TOKEN="$D/kubeconfig-token"
export MGOP_SA_TOKEN_FILE="$D/token"
export MGOP_APISERVER_HOST="127.0.0.1"
export MGOP_APISERVER_PORT="$APISERVER_PORT"
export MGOP_APISERVER_URL="https://127.0.0.1:$APISERVER_PORT"
export MGOP_CA_FILE="$D/pki/ca.crt"
export MGOP_CA_KEY_FILE="$D/pki/ca.key"
export MGOP_ADMIN_CERT_FILE="$D/pki/admin.crt"
export MGOP_ADMIN_KEY_FILE="$D/pki/admin.key"
export MGOP_AUDIT_LOG="$D/audit.log"
export MGOP_ETCD_URL="http://127.0.0.1:$ETCD_PORT"
export MGOP_KWOK_NODES="$nodes"
export MGOP_STORAGE_CLASS="standard"
export PATH="$BIN:\${PATH}"
EOF
  mv -f "$D/env.tmp" "$D/env"
}

print_log_tails() {
  local n="${1:-60}" c
  for c in "${COMPONENTS[@]}"; do
    [ -f "$D/logs/$c.log" ] || continue
    printf '\n----- last %s lines of %s -----\n' "$n" "$D/logs/$c.log" >&2
    tail -n "$n" "$D/logs/$c.log" >&2 || true
  done
  echo >&2
}

# ---------------------------------------------------------------- commands --
UP_DONE=0
STARTED=()
on_up_exit() {
  local rc=$?
  [ "$UP_DONE" = 1 ] && return 0
  trap - EXIT
  printf '\n[cp] up FAILED (exit %s); component logs follow\n' "$rc" >&2
  print_log_tails 60
  cmd_down || true
  exit $(( rc == 0 ? 1 : rc ))
}

cmd_up() {
  local t0=$SECONDS
  cmd_build
  ensure_pkg openssl openssl
  ensure_pkg curl curl
  ensure_pkg perl perl-base
  ensure_pkg setsid util-linux
  ensure_pkg base64 coreutils

  # A control plane whose owner (the run that brought it up) still lives is
  # someone else's: tearing it down would fail their tests mid-run.
  local owner=""
  [ -f "$D/owner" ] && owner=$(cat "$D/owner" 2>/dev/null)
  if [ -n "$owner" ] && [ "$owner" != "${MGOP_CP_OWNER:-$PPID}" ] && [ "${MGOP_CP_FORCE:-0}" != 1 ] &&
    kill -0 "$owner" 2>/dev/null; then
    die "the control plane in $D is in use by pid $owner ($(ps -o args= -p "$owner" 2>/dev/null || true)); set MGOP_CP_DIR to another directory to run one beside it, MGOP_IT_REUSE_CP=1 to run the tests on it, or MGOP_CP_FORCE=1 to replace it"
  fi
  if [ -d "$D/pids" ] && [ -n "$(ls -A "$D/pids" 2>/dev/null)$(stray_pids)" ]; then
    log "a control plane is already running in $D; stopping it first"
    MGOP_CP_KEEP=0 cmd_down
  fi
  case "$D" in /|"$HOME"|"") die "refusing to use MGOP_CP_DIR=$D";; esac
  rm -rf "$D"
  mkdir -p "$D"/{logs,pids,cmd,kwok,etcd-data}
  chmod 700 "$D" "$D/etcd-data"
  echo "${MGOP_CP_OWNER:-$PPID}" >"$D/owner" # the caller: run.sh, make, a shell

  trap on_up_exit EXIT
  local ports
  ports="$(free_ports 6)" || fail "could not pick free ports"
  read -r ETCD_PORT ETCD_PEER_PORT APISERVER_PORT KCM_PORT SCHED_PORT KWOK_PORT <<<"$ports"
  cat >"$D/ports" <<EOF
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
KCM_PORT=$KCM_PORT
SCHED_PORT=$SCHED_PORT
KWOK_PORT=$KWOK_PORT
EOF
  log "ports: apiserver=$APISERVER_PORT etcd=$ETCD_PORT/$ETCD_PEER_PORT kcm=$KCM_PORT scheduler=$SCHED_PORT kwok=$KWOK_PORT"

  gen_pki
  write_kubeconfig "$D/kubeconfig" admin admin
  write_kubeconfig "$D/kubeconfig-kube-controller-manager" system:kube-controller-manager kube-controller-manager
  write_kubeconfig "$D/kubeconfig-kube-scheduler" system:kube-scheduler kube-scheduler
  write_kubeconfig "$D/kubeconfig-kwok" kwok kwok
  write_audit_policy

  start_etcd
  wait_for "etcd /health" "$READY_TIMEOUT" etcd_healthy
  start_apiserver
  wait_for "kube-apiserver /readyz" "$READY_TIMEOUT" apiserver_ready
  log "kube-apiserver ready after $((SECONDS - t0))s"
  start_controller_manager
  start_scheduler
  start_kwok
  bootstrap_objects
  wait_for "kube-controller-manager /healthz" "$READY_TIMEOUT" https_healthz "$KCM_PORT"
  wait_for "kube-scheduler /healthz" "$READY_TIMEOUT" https_healthz "$SCHED_PORT"
  wait_for "kwok /healthz" "$READY_TIMEOUT" http_healthz "$KWOK_PORT"
  wait_for "$CP_NODES nodes Ready" "$((READY_TIMEOUT + 3 * CP_NODES))" nodes_ready
  wait_for "ServiceAccount default/default" "$READY_TIMEOUT" kc -n default get serviceaccount default
  wait_for "ConfigMap default/kube-root-ca.crt" "$READY_TIMEOUT" kc -n default get configmap kube-root-ca.crt
  write_token_kubeconfig
  write_env
  UP_DONE=1
  trap - EXIT
  log "control plane up in $((SECONDS - t0))s: $D (source $D/env)"
  echo "$D/env"
}

cmd_down() {
  local c pids rc=0
  for c in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_component "$c" 10 || rc=1
  done
  pids="$(stray_pids | paste -sd " " -)"
  if [ -n "$pids" ] || [ -d "$D" ]; then
    if [ -n "$pids" ]; then
      log "stray processes of ours: $pids; SIGTERM then SIGKILL"
      # shellcheck disable=SC2086
      kill -TERM $pids 2>/dev/null || true
      sleep 3
      pids="$(stray_pids | paste -sd " " -)"
      # shellcheck disable=SC2086
      [ -n "$pids" ] && { kill -KILL $pids 2>/dev/null || true; sleep 1; }
    fi
    pids="$(stray_pids | paste -sd " " -)"
    if [ -n "$pids" ]; then
      log "ERROR: still running after down: $pids"
      rc=1
    fi
    if [ "${MGOP_CP_KEEP:-0}" = 1 ]; then
      rm -rf "$D/pids"
      log "down; kept $D (MGOP_CP_KEEP=1)"
    elif [ "$rc" = 0 ]; then
      rm -rf "$D"
      log "down; removed $D"
    else
      log "down with errors; kept $D for inspection"
    fi
  else
    log "nothing to stop ($D does not exist)"
  fi
  return "$rc"
}

cmd_restart_apiserver() {
  local down_for=0 hard=0 a
  for a in "$@"; do
    case "$a" in
      --kill) hard=1 ;;
      [0-9]*) down_for="$a" ;;
      *) die "usage: cp.sh restart-apiserver [--kill] [seconds-down]" ;;
    esac
  done
  load_ports
  [ -f "$D/cmd/kube-apiserver.args" ] || die "no saved kube-apiserver args in $D/cmd"
  local t0=$SECONDS
  STARTED=(etcd)
  if [ "$hard" = 1 ]; then
    log "killing kube-apiserver (SIGKILL: connections reset, no graceful end of watches)"
    stop_component kube-apiserver 0 || die "could not stop kube-apiserver"
  else
    log "stopping kube-apiserver (SIGTERM: graceful, watches are closed cleanly)"
    stop_component kube-apiserver 30 || die "could not stop kube-apiserver"
  fi
  [ "$down_for" != 0 ] && { log "kube-apiserver down for ${down_for}s"; sleep "$down_for"; }
  log "starting kube-apiserver on port $APISERVER_PORT"
  restart_from_args kube-apiserver
  STARTED+=(kube-apiserver)
  # Not `fail`: there is no up-trap here, just report and exit non-zero.
  wait_for "kube-apiserver /readyz" "$READY_TIMEOUT" apiserver_ready
  log "kube-apiserver restarted and ready in $((SECONDS - t0))s"
}

cmd_status() {
  if [ ! -f "$D/ports" ]; then echo "down ($D has no state)"; return 1; fi
  load_ports
  local c pid rc=0
  printf '%-25s %-8s %s\n' COMPONENT PID STATE
  for c in "${COMPONENTS[@]}"; do
    if pid="$(pid_of "$c")"; then printf '%-25s %-8s running\n' "$c" "$pid"
    else printf '%-25s %-8s STOPPED\n' "$c" -; rc=1; fi
  done
  echo "apiserver: https://127.0.0.1:$APISERVER_PORT  etcd: http://127.0.0.1:$ETCD_PORT  kcm: $KCM_PORT  scheduler: $SCHED_PORT  kwok: $KWOK_PORT"
  if apiserver_ready 2>/dev/null; then
    echo "readyz: ok"
    kc get nodes -o wide 2>&1 || true
  else
    echo "readyz: NOT READY"; rc=1
  fi
  echo "env: $D/env"
  return "$rc"
}

cmd_logs() {
  local n="${MGOP_CP_LOG_LINES:-200}"
  if [ $# -gt 0 ]; then
    [ -f "$D/logs/$1.log" ] || die "no log $D/logs/$1.log (components: ${COMPONENTS[*]})"
    tail -n "$n" "$D/logs/$1.log"
  else
    print_log_tails 40 2>&1
  fi
}

selftest_manifests() {
  cat <<'EOF'
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: selftest-pvc
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Service
metadata:
  name: selftest
spec:
  clusterIP: None
  selector: {app: selftest}
  ports: [{name: pg, port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: selftest
spec:
  serviceName: selftest
  replicas: 3
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: selftest}}
  template:
    metadata: {labels: {app: selftest}}
    spec:
      containers:
      - name: main
        image: registry.k8s.io/pause:3.10
        ports: [{name: pg, containerPort: 5432}]
        readinessProbe: {tcpSocket: {port: 5432}}
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
EOF
}

cmd_selftest() {
  load_ports
  apiserver_ready || die "kube-apiserver is not ready (is the control plane up?)"
  STARTED=("${COMPONENTS[@]}")
  local ns="mgop-selftest-$$" t0=$SECONDS pvs
  log "selftest in namespace $ns"
  kc create namespace "$ns" >/dev/null
  wait_for "ServiceAccount $ns/default" 60 kc -n "$ns" get serviceaccount default
  selftest_manifests | kc -n "$ns" apply -f - >/dev/null
  wait_for "PVC selftest-pvc Bound" 60 \
    kc -n "$ns" wait --for=jsonpath='{.status.phase}'=Bound pvc/selftest-pvc --timeout=5s
  log "PVC bound ($((SECONDS - t0))s)"
  wait_for "StatefulSet selftest 3/3 ready" 120 \
    kc -n "$ns" wait --for=jsonpath='{.status.readyReplicas}'=3 statefulset/selftest --timeout=5s
  local phases
  phases="$(kc -n "$ns" get pods -l app=selftest -o jsonpath='{range .items[*]}{.status.phase}/{.status.conditions[?(@.type=="Ready")].status}/{.spec.nodeName} {end}')"
  log "pods: $phases"
  case "$phases" in *Pending*|*False*) die "pods not all Running+Ready: $phases";; esac
  [ "$(kc -n "$ns" get pvc -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c '^Bound$')" = 4 ] \
    || die "not all 4 PVCs are Bound"
  log "StatefulSet 3/3 Running+Ready, 4 PVCs Bound ($((SECONDS - t0))s)"
  kc -n "$ns" scale statefulset selftest --replicas=1 >/dev/null
  wait_for "pods selftest-1,2 deleted" 60 \
    kc -n "$ns" wait --for=delete pod/selftest-1 pod/selftest-2 --timeout=5s
  log "scale-down deleted pods ($((SECONDS - t0))s)"
  pvs="$(kc get pv -o jsonpath="{range .items[?(@.spec.claimRef.namespace==\"$ns\")]}{.metadata.name} {end}")"
  kc delete namespace "$ns" --wait=false >/dev/null
  wait_for "namespace $ns deleted" 120 kc wait --for=delete "namespace/$ns" --timeout=5s
  if [ -n "$pvs" ]; then
    # shellcheck disable=SC2046,SC2086
    wait_for "PVs of $ns deleted (reclaimPolicy Delete)" 60 \
      kc wait --for=delete $(printf 'pv/%s ' $pvs) --timeout=5s
  fi
  log "selftest PASSED in $((SECONDS - t0))s"
}

usage() {
  sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
  local cmd="${1:-}"
  [ $# -gt 0 ] && shift
  case "$cmd" in
    build) cmd_build ;;
    up) cmd_up ;;
    down) cmd_down ;;
    selftest) cmd_selftest ;;
    restart-apiserver) cmd_restart_apiserver "$@" ;;
    status) cmd_status ;;
    logs) cmd_logs "$@" ;;
    env) [ -f "$D/env" ] || die "no $D/env (run: cp.sh up)"; cat "$D/env" ;;
    bin-dir) echo "$BIN" ;;
    ports) [[ ${1:-} =~ ^[1-9][0-9]?$ ]] || die "usage: cp.sh ports N (1-99)"; free_ports "$1" ;;
    kubectl) exec "$BIN/kubectl" --kubeconfig "$D/kubeconfig" "$@" ;;
    -h|--help|help|"") usage ;;
    *) usage >&2; die "unknown command: $cmd" ;;
  esac
}

main "$@"
