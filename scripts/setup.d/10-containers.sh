#!/usr/bin/env bash
# Container runtimes for the inventory and attestation tests: containerd with
# its CRI plugin (Kubernetes CRI v1 on /run/containerd/containerd.sock) and
# Docker Engine on top of that same containerd, plus two local images built
# FROM scratch around a static busybox (no registry is reachable here).
#
# Idempotent and fast when everything is in place: it only installs, rewrites
# the config, (re)starts a daemon or builds an image when that thing is
# missing or different. Runs as root. Prints one line per thing it did or
# found; exits non-zero with the reason on the first failure.
#
# Environment overrides (for debugging): HALLMARK_TEST_LOG_DIR.
set -euo pipefail

LOG_DIR="${HALLMARK_TEST_LOG_DIR:-/var/log/hallmark-test}"
CONTAINERD_CONFIG=/etc/containerd/config.toml
CONTAINERD_SOCK=/run/containerd/containerd.sock
CONTAINERD_ROOT=/var/lib/containerd
DOCKER_SOCK=/var/run/docker.sock
BUSYBOX_IMAGE=hallmark-test/busybox:1
PAUSE_IMAGE=hallmark.local/pause:1
K8S_NS=k8s.io

say() { echo "10-containers: $*"; }
fail() {
    echo "10-containers: error: $*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || fail "must run as root (it installs packages and starts containerd and dockerd)"

# Test binaries run this concurrently; one at a time may restart daemons.
LOCK=/run/lock/hallmark-10-containers.lock
mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock -w 300 9 || fail "another run of this script held $LOCK for 5 minutes"

# --- packages ---------------------------------------------------------------
# busybox-static, not busybox: the images are FROM scratch, so the binary
# copied into them must not need a dynamic loader.
missing=()
command -v containerd >/dev/null && command -v ctr >/dev/null || missing+=(containerd)
command -v dockerd >/dev/null && command -v docker >/dev/null || missing+=(docker.io)
[[ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null || true)" == "install ok installed" ]] || missing+=(busybox-static)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y "${missing[@]}" >/dev/null 2>&1; then
        say "apt-get install failed; running apt-get update and retrying"
        apt-get update >/dev/null || fail "apt-get update failed"
        apt-get install -y "${missing[@]}" >/dev/null || fail "apt-get install -y ${missing[*]} failed"
    fi
else
    say "packages present (containerd, docker.io, busybox-static)"
fi
BUSYBOX_BIN=/bin/busybox
[[ -x $BUSYBOX_BIN ]] || fail "$BUSYBOX_BIN missing although busybox-static is installed"

mkdir -p "$LOG_DIR"

# --- containerd config ------------------------------------------------------
# overlayfs is what both daemons use here; some kernels or nested setups
# refuse an overlay mount on containerd's root, so try one first and fall
# back to the native snapshotter (slower, always works).
overlay_works() {
    mkdir -p "$CONTAINERD_ROOT"
    local d
    d=$(mktemp -d "$CONTAINERD_ROOT/.overlay-probe.XXXXXX") || return 1
    mkdir -p "$d/lower" "$d/upper" "$d/work" "$d/merged"
    local ok=1
    if mount -t overlay overlay -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" "$d/merged" 2>/dev/null; then
        umount "$d/merged" && ok=0
    fi
    rm -rf "$d"
    return $ok
}
if overlay_works; then
    SNAPSHOTTER=overlayfs
else
    SNAPSHOTTER=native
    say "overlay mount refused under $CONTAINERD_ROOT; using the native snapshotter"
fi

# restrict_oom_score_adj: this host lacks CAP_SYS_RESOURCE, so containerd
# must clamp the OOM score adjustments it would otherwise fail to set.
# SystemdCgroup = false: no systemd here, and Docker uses cgroupfs too.
# No CNI is installed: the tests only run host-network pods.
desired_config=$(
    cat <<EOF
# Written by scripts/setup.d/10-containers.sh; rewritten when it differs.
version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "$SNAPSHOTTER"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
EOF
)
config_changed=0
if [[ -f $CONTAINERD_CONFIG ]] && [[ "$(cat "$CONTAINERD_CONFIG")" == "$desired_config" ]]; then
    say "containerd config up to date ($CONTAINERD_CONFIG, snapshotter $SNAPSHOTTER)"
else
    mkdir -p "$(dirname "$CONTAINERD_CONFIG")"
    printf '%s\n' "$desired_config" >"$CONTAINERD_CONFIG.tmp"
    mv "$CONTAINERD_CONFIG.tmp" "$CONTAINERD_CONFIG"
    config_changed=1
    say "wrote $CONTAINERD_CONFIG (CRI enabled, sandbox image $PAUSE_IMAGE, snapshotter $SNAPSHOTTER)"
fi

# --- daemons ------------------------------------------------------------------
containerd_up() { ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; }
docker_up() { docker -H "unix://$DOCKER_SOCK" version >/dev/null 2>&1; }

# The daemon serving containerd's socket: the one containerd process whose
# executable is containerd itself (shims are other binaries).
containerd_pids() {
    local pid
    for pid in $(pgrep -x containerd || true); do
        [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$(command -v containerd)" ]] && echo "$pid"
    done
    return 0
}

wait_for() { # wait_for <seconds> <what> <command...>
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
    say "$what answers"
}

stop_pids() { # stop_pids <name> <pid...>: TERM, then KILL after 15 s
    local name=$1 pid
    shift
    for pid in "$@"; do
        say "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "$@"; do
        local deadline=$((SECONDS + 15))
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then
                say "$name (pid $pid) ignored SIGTERM for 15 s; killing it"
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    done
}

# Runs a daemon in the background, in its own session, holding none of our
# file descriptors: an inherited pipe (a test harness capturing this
# script's output) or the lock would otherwise stay open for its lifetime.
detach() { # detach <log file> <command...>
    local log=$1
    shift
    (
        for fd in $(ls "/proc/$BASHPID/fd"); do
            if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        exec setsid nohup "$@" >>"$log" 2>&1 </dev/null
    ) &
}

containerd_started=0
start_containerd() {
    containerd_started=1
    say "starting containerd (log $LOG_DIR/containerd.log)"
    detach "$LOG_DIR/containerd.log" containerd --config "$CONTAINERD_CONFIG"
    wait_for 20 containerd containerd_up ||
        fail "containerd did not answer on $CONTAINERD_SOCK within 20 s; see $LOG_DIR/containerd.log"
}

start_dockerd() {
    say "starting dockerd (log $LOG_DIR/dockerd.log)"
    detach "$LOG_DIR/dockerd.log" dockerd --iptables=false --ip6tables=false --bridge=none \
        --containerd="$CONTAINERD_SOCK"
    wait_for 30 dockerd docker_up ||
        fail "dockerd did not answer on $DOCKER_SOCK within 30 s; see $LOG_DIR/dockerd.log"
}

# A containerd that predates the config would keep serving the old settings
# (often without a usable CRI), so a changed config means a restart.
if containerd_up; then
    if ((config_changed)); then
        mapfile -t pids < <(containerd_pids)
        ((${#pids[@]})) || fail "containerd answers on $CONTAINERD_SOCK but no containerd process was found to restart"
        stop_pids containerd "${pids[@]}"
        start_containerd
    else
        say "containerd running"
    fi
else
    mapfile -t pids < <(containerd_pids)
    ((${#pids[@]} == 0)) || stop_pids "unresponsive containerd" "${pids[@]}"
    start_containerd
fi

# dockerd reconnects to a restarted containerd on its own; restart it only
# when it stopped answering, cannot reach containerd (`docker info` then
# reports no containerd version), or runs a containerd of its own (as the
# package's init script may start it): one containerd serves both APIs.
dockerd_cmdlines() {
    local pid
    for pid in $(pgrep -x dockerd || true); do
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true
        echo
    done
}
if docker_up; then
    mapfile -t pids < <(pgrep -x dockerd || true)
    if [[ -z "$(docker info --format '{{.ContainerdCommit.ID}}' 2>/dev/null || true)" ]]; then
        say "dockerd answers but reaches no containerd; restarting it"
        stop_pids dockerd "${pids[@]}"
        start_dockerd
    elif ! grep -qF -- "--containerd=$CONTAINERD_SOCK " <<<"$(dockerd_cmdlines)"; then
        say "dockerd runs without --containerd=$CONTAINERD_SOCK; restarting it on the shared containerd"
        stop_pids dockerd "${pids[@]}"
        start_dockerd
    else
        say "dockerd running"
    fi
else
    mapfile -t pids < <(pgrep -x dockerd || true)
    ((${#pids[@]} == 0)) || stop_pids "unresponsive dockerd" "${pids[@]}"
    start_dockerd
fi

# --- images -------------------------------------------------------------------
build_image() { # build_image <tag> <entrypoint json>
    local tag=$1 entrypoint=$2 dir
    dir=$(mktemp -d)
    cp "$BUSYBOX_BIN" "$dir/busybox"
    printf 'FROM scratch\nCOPY busybox /busybox\nENTRYPOINT %s\n' "$entrypoint" >"$dir/Dockerfile"
    # The classic builder: it ships with the engine, BuildKit may not.
    if ! DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$dir" >/dev/null 2>"$dir/err"; then
        cat "$dir/err" >&2
        rm -rf "$dir"
        fail "docker build of $tag failed"
    fi
    rm -rf "$dir"
    say "built image $tag"
}

# The pause image runs forever: its process holds the pod's namespaces.
for spec in "$BUSYBOX_IMAGE|[\"/busybox\"]" "$PAUSE_IMAGE|[\"/busybox\",\"sleep\",\"2147483647\"]"; do
    tag=${spec%%|*}
    if docker image inspect "$tag" >/dev/null 2>&1; then
        say "docker image $tag present"
    else
        build_image "$tag" "${spec#*|}"
    fi
done

# CRI resolves `hallmark-test/busybox:1` to docker.io/hallmark-test/busybox:1,
# which is also the name `ctr import` gives a docker-save archive's tag.
k8s_images=$(ctr -n "$K8S_NS" images ls -q 2>/dev/null) || fail "ctr -n $K8S_NS images ls failed"
for tag in "$BUSYBOX_IMAGE" "$PAUSE_IMAGE"; do
    full=$tag
    [[ ${tag%%/*} == *.* ]] || full="docker.io/$tag"
    if grep -qxF "$full" <<<"$k8s_images"; then
        say "containerd image $full present in namespace $K8S_NS"
        continue
    fi
    # Unpacked with the CRI snapshotter, or the first pod would have to
    # unpack it on the clock.
    if ! docker save "$tag" | ctr -n "$K8S_NS" images import --snapshotter "$SNAPSHOTTER" - >/dev/null; then
        fail "importing $tag into containerd namespace $K8S_NS failed"
    fi
    # Captured first: `grep -q` closing the pipe early would fail ctr with
    # SIGPIPE under pipefail.
    k8s_images=$(ctr -n "$K8S_NS" images ls -q) || fail "ctr -n $K8S_NS images ls failed"
    grep -qxF "$full" <<<"$k8s_images" ||
        fail "imported $tag into namespace $K8S_NS but containerd lists no image named $full"
    say "imported $tag into containerd namespace $K8S_NS as $full"
done

# A dockerd that was already running redials a restarted containerd with a
# backoff, and `docker info` does not tell: prove it with a container.
docker_runs() { docker run --rm --network none "$BUSYBOX_IMAGE" true >/dev/null 2>&1; }
if ((containerd_started)) && ! wait_for 30 "dockerd (running containers on the new containerd)" docker_runs; then
    say "dockerd cannot run containers on the restarted containerd; restarting dockerd"
    mapfile -t pids < <(pgrep -x dockerd || true)
    stop_pids dockerd "${pids[@]}"
    start_dockerd
    wait_for 30 "dockerd (running a container)" docker_runs ||
        fail "dockerd cannot run $BUSYBOX_IMAGE; see $LOG_DIR/dockerd.log"
fi
