#!/usr/bin/env bash
# vigil developer entry point for a fresh Debian 12 machine (run as root, or with sudo).
#
#   ./dev.sh run [ARGS...]   install build dependencies, build, create the `vigil` host user,
#                            and run the agent with its embedded defaults (JSON lines on stdout)
#   ./dev.sh test            install build and test dependencies, run the whole test suite
#
# Needs a Rust toolchain (rustup's stable) on PATH or in ~/.cargo/bin.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

for d in "$HOME/.cargo/bin" "${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin}"; do
    [ -n "$d" ] && [ -d "$d" ] && PATH="$d:$PATH"
done
export PATH

if [ "$(id -u)" != 0 ]; then
    echo "dev.sh: run as root (the agent and its tests need real capabilities, namespaces and BPF)" >&2
    exit 1
fi
command -v cargo >/dev/null || { echo "dev.sh: cargo not found; install Rust stable with rustup" >&2; exit 1; }

# Build: libseccomp (seccomp filters), clang-19 + libbpf headers (BPF programs, compiled at build time),
# lld-19 (link/cc: each role's hot code grouped in the release binary).
BUILD_PKGS="libseccomp-dev pkg-config clang-19 libbpf-dev lld-19"
# Tests: real kernel tooling the end-to-end tests drive.
TEST_PKGS="iproute2 libcap2-bin bpftool iperf3 util-linux procps passwd python3"

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# apt_install [--no-install-recommends] PKG...: install those not installed yet.
apt_install() {
    local opts=() missing=()
    if [ "${1:-}" = --no-install-recommends ]; then
        opts+=("$1")
        shift
    fi
    for p in "$@"; do
        installed "$p" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "dev.sh: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${opts[@]}" "${missing[@]}" >/dev/null
    fi
}

ensure_user() {
    getent passwd vigil >/dev/null ||
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin vigil
}

case "${1:-}" in
run)
    shift
    apt_install $BUILD_PKGS
    cargo build --release --locked -p vigil-supervisor
    ensure_user
    exec ./target/release/vigil run --user vigil "$@"
    ;;
test)
    apt_install $BUILD_PKGS $TEST_PKGS
    # The Prometheus server that tests/tests/prometheus_e2e.rs runs itself (/usr/bin/prometheus
    # on free ports): without its Recommends (node-exporter), and the service the package
    # starts on a systemd host (:9090) stopped and disabled when we are the ones installing it.
    if ! installed prometheus; then
        apt_install --no-install-recommends prometheus
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
    [ -x deploy/ci-deps.sh ] && deploy/ci-deps.sh
    ensure_user
    cargo test --workspace --locked
    ;;
*)
    sed -n '2,9p' "$0" >&2
    exit 2
    ;;
esac
