#!/bin/sh
# Tools the deployment and delivery tests (tests/tests/deploy_*.rs, delivery_e2e.rs) call.
# Idempotent; about 1.5 minutes on a fresh Debian 12 machine (apt: ~15 s, pip: ~60 s).
#
#   apt: systemd (systemd-analyze security --offline, 252), podman + buildah + runc (image
#        build and run; runc because crun 1.8 refuses hybrid cgroup hierarchies), binutils
#        (readelf/objcopy in build.sh), libseccomp-dev (libseccomp.a for the static binary)
#   apt: stunnel4 (TLS in front of the test collector), dnsmasq-base (a DNS server in a test
#        network namespace; -base: the binary without a system service), openssl (test
#        certificates), ca-certificates (the system bundle the TLS tests read)
#   pip (venv /opt/vigil-deploy-venv): kubernetes-validate (OpenAPI schemas, offline),
#        checkov (static analysis of the manifests, run with --skip-download: offline),
#        rotel (an OpenTelemetry collector: its wheel carries the rotel-agent binary that the
#        delivery tests ship to)
set -eu
VENV=${VIGIL_DEPLOY_VENV:-/opt/vigil-deploy-venv}
KUBERNETES_VALIDATE=1.37.0
CHECKOV=3.3.30
ROTEL=0.0.1a15

need=""
for p in systemd podman buildah runc binutils libseccomp-dev stunnel4 dnsmasq-base openssl ca-certificates; do
    dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi

version_of() { "$VENV/bin/pip" show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
if ! "$VENV/bin/python" -c 'import kubernetes_validate, checkov, rotel' 2>/dev/null ||
    [ "$(version_of kubernetes-validate)" != "$KUBERNETES_VALIDATE" ] ||
    [ "$(version_of checkov)" != "$CHECKOV" ] ||
    [ "$(version_of rotel)" != "$ROTEL" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE" "checkov==$CHECKOV" "rotel==$ROTEL"
fi
echo "deploy test tools ready: $VENV, $(systemd-analyze --version | head -1), $(podman --version)"
