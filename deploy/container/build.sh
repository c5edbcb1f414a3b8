#!/bin/sh
# Build the vigil image offline with buildah (or podman build): a static vigil binary in a
# FROM-scratch image.
#
#   deploy/container/build.sh [TAG]           default TAG: vigil:test
#   VIGIL_BINARY=/path/to/static/vigil deploy/container/build.sh   reuse a binary
#
# The static binary: glibc with crt-static, and libseccomp linked from Debian's libseccomp.a
# (libseccomp-dev): libseccomp-sys links it statically with LIBSECCOMP_LINK_TYPE=static.
# Without that, rustc produces a "static-pie" that still needs libseccomp.so and crashes.
# RUSTFLAGS replaces .cargo/config.toml's rustflags, so it repeats the v0 symbol mangling that
# the link-time function order (link/cc) names functions by.
set -eu

TAG=${1:-vigil:test}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=x86_64-unknown-linux-gnu

if [ -z "${VIGIL_BINARY:-}" ]; then
    (cd "$ROOT" &&
        LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu \
        RUSTFLAGS='-C target-feature=+crt-static -C symbol-mangling-version=v0' \
        cargo build --release --target "$TARGET" -p vigil-supervisor)
    VIGIL_BINARY="$ROOT/target/$TARGET/release/vigil"
fi

# Refuse a binary that needs a loader or shared libraries: the image has neither.
if readelf -lW "$VIGIL_BINARY" | grep -q 'Requesting program interpreter'; then
    echo "build.sh: $VIGIL_BINARY is dynamically linked" >&2
    exit 1
fi
if readelf -dW "$VIGIL_BINARY" | grep -q '(NEEDED)'; then
    echo "build.sh: $VIGIL_BINARY needs shared libraries:" >&2
    readelf -dW "$VIGIL_BINARY" | grep '(NEEDED)' >&2
    exit 1
fi

CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
mkdir -p "$CTX/rootfs/etc/vigil" "$CTX/rootfs/hostfs" "$CTX/rootfs/run/vigil" \
    "$CTX/rootfs/tmp" "$CTX/rootfs/proc" "$CTX/rootfs/sys" "$CTX/rootfs/dev"
chmod 1777 "$CTX/rootfs/tmp"
chmod 0755 "$CTX/rootfs/run/vigil"
printf 'root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' \
    >"$CTX/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$CTX/rootfs/etc/group"
# strip debug info: the release profile keeps it, the image does not need it
objcopy --strip-debug "$VIGIL_BINARY" "$CTX/vigil"
chmod 0755 "$CTX/vigil"
cp "$HERE/Containerfile" "$CTX/Containerfile"

if command -v buildah >/dev/null 2>&1; then
    buildah bud --pull=false --layers=false -f "$CTX/Containerfile" -t "$TAG" "$CTX"
else
    podman build --pull=never -f "$CTX/Containerfile" -t "$TAG" "$CTX"
fi
echo "built $TAG"
