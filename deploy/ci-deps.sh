#!/bin/sh
# Tools the deployment tests (tests/tests/deploy_*.rs) call. Idempotent; about 1.5 minutes on
# a fresh Debian 12 machine (apt: ~15 s, pip: ~60 s).
#
#   apt: systemd (systemd-analyze security --offline, 252), podman + buildah + runc (image
#        build and run; runc because crun 1.8 refuses hybrid cgroup hierarchies), binutils
#        (readelf/objcopy in build.sh), libseccomp-dev (libseccomp.a for the static binary)
#   pip (venv /opt/vigil-deploy-venv): kubernetes-validate (OpenAPI schemas, offline),
#        checkov (static analysis of the manifests, run with --skip-download: offline)
set -eu
VENV=${VIGIL_DEPLOY_VENV:-/opt/vigil-deploy-venv}
KUBERNETES_VALIDATE=1.37.0
CHECKOV=3.3.30

need=""
for p in systemd podman buildah runc binutils libseccomp-dev; do
    dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi

if ! "$VENV/bin/python" -c 'import kubernetes_validate, checkov' 2>/dev/null ||
    [ "$("$VENV/bin/pip" show kubernetes-validate 2>/dev/null | sed -n 's/^Version: //p')" != "$KUBERNETES_VALIDATE" ] ||
    [ "$("$VENV/bin/pip" show checkov 2>/dev/null | sed -n 's/^Version: //p')" != "$CHECKOV" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE" "checkov==$CHECKOV"
fi
echo "deploy test tools ready: $VENV, $(systemd-analyze --version | head -1), $(podman --version)"
