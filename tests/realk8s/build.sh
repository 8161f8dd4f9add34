#!/usr/bin/env bash
# Build a real Kubernetes control plane from Go modules (module proxy only):
#   kube-apiserver, kube-controller-manager  from k8s.io/kubernetes
#   etcd, etcdctl                            from go.etcd.io/etcd/{server,etcdctl}/v3
# as static binaries (CGO_ENABLED=0), at the versions pinned in versions.env.
#
# Usage: bash tests/realk8s/build.sh [--force]
#   stdout: the folder holding the binaries (one line, printed last)
#   stderr: progress, timings, sizes, versions
#
# Environment:
#   FX_REALK8S_CACHE     cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/fx-realk8s:
#                        outside the checkout, so fresh clones on one machine share it)
#                        bin/      the binaries + .stamp
#                        gomod/    GOMODCACHE      gocache/  GOCACHE
#                        work/     generated wrapper modules (never committed)
#   FX_REALK8S_NICE      niceness of the go commands (default 10)
#   FX_REALK8S_ETCDCTL   1 (default) also builds etcdctl; 0 skips it
#
# The build is skipped when every binary exists and bin/.stamp matches the hash of
# versions.env, this script and the Go version. --force rebuilds anyway (Go's
# caches still make that fast).
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERSIONS_FILE=$HERE/versions.env
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")

FORCE=0
for arg in "$@"; do
    case $arg in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,22p' "$SELF" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { printf '[realk8s %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

CURRENT_STEP=""
STEP_TIMES=()
T_START=$EPOCHREALTIME
on_exit() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        log "FAILED in step: ${CURRENT_STEP:-setup} (exit $rc)"
    fi
}
trap on_exit EXIT

elapsed() {  # elapsed SINCE -> seconds with one decimal
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

# step NAME CMD...: run CMD (errexit stays on inside it), record its duration.
step() {
    local name=$1; shift
    CURRENT_STEP=$name
    log "--- $name"
    local t0=$EPOCHREALTIME
    "$@"
    local dt
    dt=$(elapsed "$t0")
    STEP_TIMES+=("$(printf '%-34s %7ss' "$name" "$dt")")
    log "    $name: ${dt}s"
    CURRENT_STEP=""
}

fail() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- settings
CURRENT_STEP="read $VERSIONS_FILE"
[[ -r $VERSIONS_FILE ]] || fail "versions file not found: $VERSIONS_FILE"
KUBERNETES_VERSION="" ETCD_VERSION="" GO_MIN_VERSION=""
# shellcheck source=versions.env
source "$VERSIONS_FILE"
[[ $KUBERNETES_VERSION =~ ^v1\.[0-9]+\.[0-9]+ ]] || fail "KUBERNETES_VERSION must look like v1.X.Y (got '$KUBERNETES_VERSION')"
[[ $ETCD_VERSION =~ ^v3\.[0-9]+\.[0-9]+ ]] || fail "ETCD_VERSION must look like v3.X.Y (got '$ETCD_VERSION')"
# k8s.io/kubernetes v1.X.Y <-> staging modules (k8s.io/api, ...) v0.X.Y
STAGING_VERSION=v0.${KUBERNETES_VERSION#v1.}

CACHE=${FX_REALK8S_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/fx-realk8s}
NICE=${FX_REALK8S_NICE:-10}
WITH_ETCDCTL=${FX_REALK8S_ETCDCTL:-1}
BIN=$CACHE/bin
WORK=$CACHE/work
BINARIES=(kube-apiserver kube-controller-manager etcd)
[[ $WITH_ETCDCTL == 1 ]] && BINARIES+=(etcdctl)

CURRENT_STEP="check go"
# The machines' Go lives in /usr/local/go/bin, which a non-login shell may not have on PATH.
command -v go >/dev/null || [[ ! -x /usr/local/go/bin/go ]] || export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || fail "go is not on PATH (Go >= $GO_MIN_VERSION is needed)"
export GOTOOLCHAIN=local GOWORK=off GO111MODULE=on CGO_ENABLED=0
export GOFLAGS="-modcacherw -buildvcs=false"
export GOMODCACHE=$CACHE/gomod GOCACHE=$CACHE/gocache
unset GOOS GOARCH
GO_VERSION=$(go env GOVERSION)
if [[ $(printf '%s\n' "go$GO_MIN_VERSION" "$GO_VERSION" | sort -V | head -n1) != "go$GO_MIN_VERSION" ]]; then
    fail "$GO_VERSION is older than go$GO_MIN_VERSION (pinned in versions.env)"
fi

mkdir -p "$BIN" "$WORK" "$GOMODCACHE" "$GOCACHE"

# One build at a time per cache folder (CI and a developer may share it).
CURRENT_STEP="lock $CACHE"
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
    log "another build holds $CACHE/.lock; waiting"
    flock 9
fi

STAMP_WANTED=$( { cat "$VERSIONS_FILE" "$SELF"; echo "$GO_VERSION $(go env GOOS GOARCH)"; \
                  echo "etcdctl=$WITH_ETCDCTL"; } | sha256sum | cut -d' ' -f1)
up_to_date() {
    [[ -f $BIN/.stamp && $(cat "$BIN/.stamp") == "$STAMP_WANTED" ]] || return 1
    local b
    for b in "${BINARIES[@]}"; do [[ -x $BIN/$b ]] || return 1; done
}

report_binaries() {
    local b size
    for b in "${BINARIES[@]}"; do
        size=$(stat -c %s "$BIN/$b")
        log "$(printf '  %-24s %6.1f MB' "$b" "$(awk -v s="$size" 'BEGIN { print s / 1e6 }')")"
    done
}

if [[ $FORCE == 0 ]] && up_to_date; then
    log "up to date: kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION in $BIN ($(elapsed "$T_START")s)"
    report_binaries
    echo "$BIN"
    exit 0
fi

log "building kubernetes $KUBERNETES_VERSION (staging $STAGING_VERSION), etcd $ETCD_VERSION with $GO_VERSION"
log "cache: $CACHE (nice -n $NICE)"

# go mod download -json MOD@VER -> path of one field of its JSON answer
mod_field() {
    local json field=$2
    json=$(cd "$WORK" && go mod download -json "$1") || { echo "$json" >&2; return 1; }
    sed -n "s/^[[:space:]]*\"$field\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p" <<<"$json"
}

# ------------------------------------------------------- kubernetes wrapper
KWRAP=$WORK/kube-$KUBERNETES_VERSION
K_GOMOD="" K_TIME=""

fetch_kubernetes_gomod() {
    K_GOMOD=$(mod_field "k8s.io/kubernetes@$KUBERNETES_VERSION" GoMod)
    [[ -f $K_GOMOD ]] || fail "no go.mod for k8s.io/kubernetes@$KUBERNETES_VERSION"
    local info
    info=$(mod_field "k8s.io/kubernetes@$KUBERNETES_VERSION" Info)
    K_TIME=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info")
}

# The module's own `replace k8s.io/x => ./staging/src/k8s.io/x` lines, turned into
# `k8s.io/x => k8s.io/x <staging version>`.
staging_replaces() {
    awk -v ver="$STAGING_VERSION" '
        /^replace[[:space:]]*\($/ { inblock = 1; next }
        inblock && /^\)/          { inblock = 0; next }
        inblock && $2 == "=>" && $3 ~ /^\.\/staging\// { print "\t" $1 " => " $1 " " ver; next }
        !inblock && $1 == "replace" && $3 == "=>" && $4 ~ /^\.\/staging\// { print "\t" $2 " => " $2 " " ver }
    ' "$K_GOMOD"
}

write_kubernetes_wrapper() {
    local go_line replaces n
    go_line=$(awk '$1 == "go" { print $2; exit }' "$K_GOMOD")
    [[ -n $go_line ]] || fail "no go line in $K_GOMOD"
    if [[ $(printf '%s\n' "go$go_line" "$GO_VERSION" | sort -V | tail -n1) != "$GO_VERSION" ]]; then
        fail "k8s.io/kubernetes@$KUBERNETES_VERSION needs go $go_line; this is $GO_VERSION"
    fi
    # Anything replaced to a local path other than ./staging cannot be resolved from the proxy.
    if awk '$2 == "=>" && $3 ~ /^\.\.?\// && $3 !~ /^\.\/staging\// { bad = 1 } END { exit !bad }' "$K_GOMOD"; then
        fail "$K_GOMOD replaces modules with local paths outside ./staging; update build.sh"
    fi
    replaces=$(staging_replaces)
    n=$(grep -c . <<<"$replaces" || true)
    [[ $n -gt 0 ]] || fail "found no ./staging replace lines in $K_GOMOD"
    log "    $n staging modules pinned to $STAGING_VERSION"
    rm -rf "$KWRAP"
    mkdir -p "$KWRAP"
    {
        echo "// Generated by tests/realk8s/build.sh; not committed."
        echo "module fx.local/realk8s/kube"
        echo
        echo "go $go_line"
        echo
        grep '^godebug ' "$K_GOMOD" || true
        echo
        echo "tool ("
        echo "	k8s.io/kubernetes/cmd/kube-apiserver"
        echo "	k8s.io/kubernetes/cmd/kube-controller-manager"
        echo ")"
        echo
        echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
        echo
        echo "replace ("
        echo "$replaces"
        echo ")"
    } >"$KWRAP/go.mod"
}

resolve_modules() {  # resolve_modules DIR
    (cd "$1" && nice -n "$NICE" go mod tidy && nice -n "$NICE" go mod download)
}

KUBE_LDFLAGS=""
kube_ldflags() {
    local minor=${KUBERNETES_VERSION#v1.}
    minor=${minor%%.*}
    local kv pkg
    local -a flags=(-s -w)
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        for kv in "gitVersion=$KUBERNETES_VERSION" gitMajor=1 "gitMinor=$minor" \
                  gitTreeState=clean "buildDate=${K_TIME:-unknown}"; do
            flags+=("-X" "$pkg.$kv")
        done
    done
    KUBE_LDFLAGS="${flags[*]}"
}

# go_build DIR OUTPUT PACKAGE LDFLAGS [TAGS]
go_build() {
    local dir=$1 out=$2 pkg=$3 ldflags=$4 tags=${5:-}
    mkdir -p "$BIN/.new"
    (cd "$dir" && nice -n "$NICE" go build -trimpath ${tags:+-tags "$tags"} \
        -ldflags "$ldflags" -o "$BIN/.new/$out" "$pkg")
    # CGO_ENABLED=0 recorded in the build info = no cgo, statically linked.
    go version -m "$BIN/.new/$out" | grep -q 'CGO_ENABLED=0' \
        || fail "$out was not built with CGO_ENABLED=0"
    mv -f "$BIN/.new/$out" "$BIN/$out"
}

build_kube_apiserver() {
    go_build "$KWRAP" kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver \
        "$KUBE_LDFLAGS" selinux,notest,grpcnotrace
}
build_kube_controller_manager() {
    go_build "$KWRAP" kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager \
        "$KUBE_LDFLAGS" selinux,notest,grpcnotrace
}

# ------------------------------------------------------------- etcd wrapper
EWRAP=$WORK/etcd-$ETCD_VERSION

write_etcd_wrapper() {
    local e_gomod go_line
    e_gomod=$(mod_field "go.etcd.io/etcd/server/v3@$ETCD_VERSION" GoMod)
    go_line=$(awk '$1 == "go" { print $2; exit }' "$e_gomod")
    [[ -n $go_line ]] || fail "no go line in $e_gomod"
    if [[ $(printf '%s\n' "go$go_line" "$GO_VERSION" | sort -V | tail -n1) != "$GO_VERSION" ]]; then
        fail "go.etcd.io/etcd/server/v3@$ETCD_VERSION needs go $go_line; this is $GO_VERSION"
    fi
    rm -rf "$EWRAP"
    mkdir -p "$EWRAP"
    {
        echo "// Generated by tests/realk8s/build.sh; not committed."
        echo "module fx.local/realk8s/etcd"
        echo
        echo "go $go_line"
        echo
        echo "tool go.etcd.io/etcd/server/v3"
        [[ $WITH_ETCDCTL == 1 ]] && echo "tool go.etcd.io/etcd/etcdctl/v3"
        echo
        echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
        [[ $WITH_ETCDCTL == 1 ]] && echo "require go.etcd.io/etcd/etcdctl/v3 $ETCD_VERSION"
        true
    } >"$EWRAP/go.mod"
}

build_etcd() {
    go_build "$EWRAP" etcd go.etcd.io/etcd/server/v3 \
        "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$ETCD_VERSION"
}
build_etcdctl() {
    go_build "$EWRAP" etcdctl go.etcd.io/etcd/etcdctl/v3 \
        "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$ETCD_VERSION"
}

print_versions() {
    local b out
    for b in "${BINARIES[@]}"; do
        case $b in
            etcdctl) out=$("$BIN/$b" version) ;;
            *) out=$("$BIN/$b" --version) ;;
        esac
        log "  $b: $(tr '\n' ' ' <<<"$out")"
    done
}

# ------------------------------------------------------------------- run
rm -f "$BIN/.stamp"
# etcd first: it is the quick part, so a problem there shows within a minute.
step "generate etcd wrapper module"        write_etcd_wrapper
step "resolve etcd modules (go mod tidy)"  resolve_modules "$EWRAP"
step "build etcd"                          build_etcd
[[ $WITH_ETCDCTL == 1 ]] && step "build etcdctl" build_etcdctl
step "fetch k8s.io/kubernetes go.mod"      fetch_kubernetes_gomod
step "generate kube wrapper module"        write_kubernetes_wrapper
step "resolve kube modules (go mod tidy)"  resolve_modules "$KWRAP"
kube_ldflags
step "build kube-apiserver"                build_kube_apiserver
step "build kube-controller-manager"       build_kube_controller_manager
step "check --version"                     print_versions
rmdir "$BIN/.new" 2>/dev/null || true
echo "$STAMP_WANTED" >"$BIN/.stamp"

log "=== timings ==="
for t in "${STEP_TIMES[@]}"; do log "  $t"; done
log "  $(printf '%-34s %7ss' total "$(elapsed "$T_START")")"
log "=== binaries in $BIN ==="
report_binaries
echo "$BIN"
