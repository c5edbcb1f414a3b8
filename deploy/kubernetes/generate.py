#!/usr/bin/env python3
"""Generate the vigil DaemonSet manifests, one complete file per deployment mode.

kustomize is a Go binary that neither CI nor a plain Debian host has, so instead of a base and
patch overlays the four variants are rendered from this one template (standard library only):

  full/            host root read-write at /hostfs, privileged container (testing, debugging)
  read-only/       host root read-only at /hostfs, privileged container (default, recommended)
  minimal/         only /etc, /usr, /bin, /sbin, /lib*, /run of the host, read-only, privileged
  non-privileged/  privileged: false, capabilities drop [ALL] plus the minimal add-list of
                   `vigil doctor --emit k8s` (no SYS_ADMIN), allowPrivilegeEscalation: false;
                   no_remount_root: the runtime's read-only mounts are the host view

Each directory gets vigil.yaml (Namespace, ServiceAccount, ConfigMap, DaemonSet), the
vigil.toml embedded in the ConfigMap, and a kustomization.yaml listing vigil.yaml so that
`kubectl apply -k deploy/kubernetes/<mode>` works as well as `kubectl apply -f`.

  python3 deploy/kubernetes/generate.py          rewrite the files
  python3 deploy/kubernetes/generate.py --check  exit 1 if any file is not up to date
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSION = "0.1.0"
IMAGE = f"vigil:{VERSION}"  # push deploy/container's image to your registry and name it here

# `vigil doctor --emit k8s` (plus BEYOND_DOCTOR) for the non-privileged vigil.toml: the default
# features (flows from the kernel's packet tracepoints, every other feature on) with no_remount_root, on a
# kernel with dmesg_restrict=1. tests/tests/deploy_doctor.rs compares this list with the
# binary's output. No SYS_ADMIN: the container runtime builds the read-only host view.
NON_PRIVILEGED_ADD = [
    ("CHOWN", "supervisor: hands the runtime/journal directory to the agent user"),
    ("KILL", "supervisor: signals children that run as the agent user"),
    ("SETGID", "supervisor: collector, shipper and privhelper run as the agent user"),
    ("SETUID", "supervisor: collector, shipper and privhelper run as the agent user"),
    ("SETPCAP", "supervisor: trims the children's bounding and ambient sets"),
    ("SYSLOG", "privhelper: /dev/kmsg with kernel.dmesg_restrict=1"),
    ("PERFMON", "privhelper: tracepoints (exec/exit, flows), the task iterator, TCP state changes"),
    ("BPF", "privhelper: loads the BPF programs and maps; no bpffs, nothing pinned"),
]
# Not needed by the default features: fd counts are the st_size of /proc/PID/fd (Linux >= 6.2)
# and container network counters come from /proc/PID/net/dev. DAC_READ_SEARCH: fd counts on
# kernels before 6.2 and, with SYS_PTRACE, the opt-in process_sockets; SYS_PTRACE (and
# SYS_ADMIN for the privhelper): netns_source = "setns". `vigil doctor --emit k8s` lists them
# when the kernel or the config asks.
# Capabilities granted beyond `vigil doctor --emit k8s` (tests/tests/deploy_doctor.rs).
BEYOND_DOCTOR = []

MODES = {
    "full": dict(mount_mode="full", privileged=True, host="full", kubelet_logs=False),
    "read-only": dict(mount_mode="read-only", privileged=True, host="root-ro", kubelet_logs=False),
    "minimal": dict(mount_mode="minimal", privileged=True, host="minimal", kubelet_logs=False),
    "non-privileged": dict(mount_mode="read-only", privileged=False, host="root-ro", kubelet_logs=True),
}


def runtime_view(mode):
    """The container runtime's read-only mounts are the host view (no_remount_root): the
    supervisor builds none of its own and needs no SYS_ADMIN."""
    return not MODES[mode]["privileged"]

# Host directories the minimal view is built from (supervisor/src/rootfs.rs MINIMAL_ENTRIES).
MINIMAL_DIRS = ["etc", "usr", "bin", "sbin", "lib", "lib64", "run"]


def toml(mode):
    m = MODES[mode]
    if runtime_view(mode):
        view = """# The container runtime already built the read-only host view (readOnlyRootFilesystem, every
# hostPath but the runtime dir readOnly). Building our own (mount namespace + pivot_root)
# would take CAP_SYS_ADMIN, the capability security reviews and PodSecurity policies flag
# first in an add-list. So the supervisor uses the runtime's view, as under the systemd unit.
# A readOnly hostPath is read-only at its top only: the host's /proc, /sys, /dev/shm mounted
# beneath /hostfs stay writable for uid 0. The supervisor (uid 0 here) therefore confines its
# own writes and its children's to the runtime dir with Landlock; the children also run as
# the agent user with their own seccomp and Landlock rules.
no_remount_root = true
"""
        runtime = """# Journal and status socket; a hostPath, so a new pod finds the journal of the old one.
# /run/vigil, not /var/run/vigil: the same path as on the host (see the privileged variants).
"""
    else:
        view = ""
        runtime = """# Journal and status socket; a hostPath, so a new pod finds the journal of the old one.
# /run/vigil, not /var/run/vigil: /var/run is an absolute symlink to /run on the host, and the
# supervisor binds the runtime dir at the same path inside the host view (/hostfs/run/vigil),
# which must be a real directory there.
"""
    return f"""# vigil configuration ({mode} deployment); every key can be overridden by VIGIL_* env.
# The agent user must exist in the HOST's /etc/passwd (nobody exists everywhere; a dedicated
# system user such as `vigil` is better: useradd --system --no-create-home vigil).
user = "nobody"
non_root_mode = true
mount_mode = "{m['mount_mode']}"
{view}# The host's root as this container sees it (hostPath volume below).
host_root = "/hostfs"
{runtime}runtime_dir = "/run/vigil"

[shipper]
json_lines = ""

[shipper.otlp]
# hostNetwork: 127.0.0.1 is the node; point this at your node-local OpenTelemetry collector,
# or at a backend by name over HTTPS (cluster DNS works with dnsPolicy ClusterFirstWithHostNet):
#   endpoint = "https://otlp.example.com:4318"
#   headers_file = "/etc/vigil-secrets/otlp-headers"   # `Authorization: Bearer ...`, a Secret
#   ca_file = "/etc/vigil-secrets/ca.pem"              # default: the host's CA bundle
# The OTEL_EXPORTER_OTLP_* variables work too (see the container's env).
endpoint = "http://127.0.0.1:4318"
"""


def indent(text, n):
    pad = " " * n
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


def skips(mode):
    """checkov skip annotations: every accepted failure with the reason (also commented at the
    setting itself)."""
    m = MODES[mode]
    s = [
        ("CKV_K8S_17", "hostPID: process metrics, exec/exit events and /proc/PID/fd of host processes"),
        ("CKV_K8S_19", "hostNetwork: host interface counters, the host's flows, node-local OTLP"),
        ("CKV_K8S_23", "runAsUser 0: the supervisor must be uid 0 to switch its children to the host agent user; they run unprivileged"),
        ("CKV_K8S_40", "runAsUser 0: see CKV_K8S_23; the long-running collector and shipper drop to the agent user"),
        ("CKV_K8S_43", "the image is built locally (deploy/container); pin its digest when you push it"),
        ("CKV_K8S_37", "the supervisor and privhelper need the listed capabilities; everything else is dropped"),
        ("CKV_K8S_25", "capabilities are added: the minimal add-list of vigil doctor --emit k8s, all others dropped"),
        ("CKV2_K8S_6", "no NetworkPolicy: a hostNetwork pod is not selected by NetworkPolicies; the shipper's Landlock ruleset allows TCP connect to the backend port only"),
    ]
    if m["privileged"]:
        s += [
            ("CKV_K8S_28", "NET_RAW: a privileged container holds every capability; vigil uses none of the network ones (non-privileged/ adds no NET_RAW)"),
            ("CKV_K8S_16", "privileged mount-mode variants, as in the SmartAgent modes; use non-privileged/ where /dev/kmsg is not needed"),
            ("CKV_K8S_20", "privileged: true implies privilege escalation; non-privileged/ sets allowPrivilegeEscalation: false"),
        ]
    if not EXEC_PROBES:
        s += [
            ("CKV_K8S_8", "no liveness probe: an exec probe runs in the supervisor's trimmed host view where the binary is not visible (generate.py EXEC_PROBES)"),
            ("CKV_K8S_9", "no readiness probe: same reason as CKV_K8S_8 (generate.py EXEC_PROBES)"),
        ]
    return s


def host_volumes(mode):
    """(volumes, volumeMounts) YAML fragments for the host view."""
    host = MODES[mode]["host"]
    vols, mounts = [], []
    if host in ("full", "root-ro"):
        ro = "false" if host == "full" else "true"
        why = (
            "# full mode: host root read-write (testing/debugging only)"
            if host == "full"
            else "# host root read-only; the agent prunes boot, root, home, kernel images from its view"
        )
        vols.append("- name: host-root\n  hostPath:\n    path: /\n    type: Directory\n")
        mounts.append(
            f"{why}\n- name: host-root\n  mountPath: /hostfs\n  readOnly: {ro}\n"
            "  # the host's own mounts under / (e.g. /var/lib/kubelet/...) stay visible for disk metrics\n"
            "  mountPropagation: HostToContainer\n"
        )
    else:
        for d in MINIMAL_DIRS:
            vols.append(f"- name: host-{d}\n  hostPath:\n    path: /{d}\n")
            mounts.append(f"- name: host-{d}\n  mountPath: /hostfs/{d}\n  readOnly: true\n")
    if MODES[mode]["kubelet_logs"]:
        # Kubernetes names (k8s.namespace.name, k8s.pod.name, k8s.container.name) from the
        # kubelet's log directories, read-only: no API access, no service account token.
        for d in ("pods", "containers"):
            vols.append(f"- name: kubelet-{d}\n  hostPath:\n    path: /var/log/{d}\n    type: Directory\n")
            mounts.append(
                f"# the kubelet's /var/log/{d}: pod and container names without the API\n"
                f"- name: kubelet-{d}\n  mountPath: /hostfs/var/log/{d}\n  readOnly: true\n"
            )
    vols.append("- name: host-sys\n  hostPath:\n    path: /sys\n    type: Directory\n")
    mounts.append(
        "# cgroup hierarchies of all containers (the container's own /sys/fs/cgroup is namespaced)\n"
        "- name: host-sys\n  mountPath: /hostfs/sys\n  readOnly: true\n"
    )
    vols.append(
        "# journal and status socket: on the host, so a re-created pod replays the old journal\n"
        "# (same path on host and in the container: the agent binds it into its host view)\n"
        "- name: runtime\n  hostPath:\n    path: /run/vigil\n    type: DirectoryOrCreate\n"
    )
    mounts.append("- name: runtime\n  mountPath: /run/vigil\n  readOnly: false\n")
    for f in ("passwd", "group"):
        vols.append(f"- name: host-{f}\n  hostPath:\n    path: /etc/{f}\n    type: File\n")
        mounts.append(
            f"# host user/group names (the image has no users of its own)\n"
            f"- name: host-{f}\n  mountPath: /etc/{f}\n  readOnly: true\n"
        )
    vols.append("- name: config\n  configMap:\n    name: vigil-config\n")
    mounts.append("- name: config\n  mountPath: /etc/vigil\n  readOnly: true\n")
    return "".join(vols), "".join(mounts)


def security_context(mode):
    if MODES[mode]["privileged"]:
        return """securityContext:
  # Privileged, as the SmartAgent mount modes: /dev/kmsg and every BPF program type work, and
  # no AppArmor/seccomp profile of the runtime is in the way. vigil still drops everything it
  # does not need at start: collector and shipper run as the agent user with no capabilities,
  # NoNewPrivs, seccomp and Landlock. For a non-privileged pod see ../non-privileged/.
  privileged: true  # checkov CKV_K8S_16 skipped (annotation): see above
  # The API server rejects allowPrivilegeEscalation: false together with privileged: true.
  allowPrivilegeEscalation: true  # checkov CKV_K8S_20 skipped: implied by privileged
  readOnlyRootFilesystem: true
  # uid 0 inside a user-less FROM-scratch image: only root can switch the children to the
  # host agent user (SETUID/SETGID) and own the status socket. checkov CKV_K8S_23/40 skipped.
  runAsUser: 0
  runAsGroup: 0
  runAsNonRoot: false
"""
    caps = "".join(f"    - {c}  # {why}\n" for c, why in NON_PRIVILEGED_ADD)
    return f"""securityContext:
  privileged: false
  # The capabilities below are granted by the container runtime to uid 0 and never gained by
  # exec (no file capabilities, no setuid binary), so NoNewPrivs costs nothing: the supervisor
  # re-executes itself (fexecve) as root and hands capabilities on through the ambient set.
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  # uid 0 inside a user-less FROM-scratch image (see the privileged variants); it holds only
  # the add-list below. checkov CKV_K8S_23/40 skipped (annotation).
  runAsUser: 0
  runAsGroup: 0
  runAsNonRoot: false
  # RuntimeDefault. vigil stacks its own, much narrower, filters per role on top (seccomp
  # filters only ever narrow). The runtime's profile decides bpf() and perf_event_open for
  # the privhelper's eBPF features (ebpf_exec, ebpf_flows_socket, ebpf_tcp_changes):
  # containerd's current profile allows them to a container holding CAP_BPF / CAP_PERFMON; the
  # containers/common profile of CRI-O and podman only to one holding CAP_SYS_ADMIN, which
  # this add-list does not grant. There the privhelper's bpf() fails with EPERM and the
  # collector says "eBPF source unavailable" ("TCP state changes unavailable"); use a Localhost
  # profile that allows bpf and perf_event_open, or a privileged variant
  # (tests/tests/deploy_container.rs runs both profiles).
  seccompProfile:
    type: RuntimeDefault
  # No mount(2), unshare or pivot_root at all (no_remount_root in vigil.toml), so the
  # runtime's default AppArmor profile, which denies mount, is no obstacle either.
  capabilities:
    drop: ["ALL"]
    # `vigil doctor --emit k8s` (checkov CKV_K8S_37/28 skipped: each one is needed). No
    # SYS_ADMIN: the runtime builds the read-only host view (no_remount_root in vigil.toml).
    # Not available without privileged: /dev/kmsg (the device cgroup does not allow the
    # character device), so kmsg_events is off and SYSLOG could be removed; it is kept so that
    # a runtime that exposes /dev/kmsg read-only works without an edit.
    add:
{caps}"""


# Liveness/readiness probes: `vigil status` asks the supervisor over its root-only socket in the
# runtime dir. OFF for now: the container runtime runs an exec probe in the mount namespace of
# the container's first process, and the supervisor moves itself into its trimmed host view
# (unshare + pivot_root), where the image's /usr/local/bin/vigil does not exist, so the probe
# fails with "no such file" and the kubelet would restart a healthy agent every ~90 s
# (tests/tests/deploy_container.rs shows it with `podman exec`). Turn this on once the
# supervisor keeps the binary visible inside its view.
EXEC_PROBES = True

PROBE_CMD = '["/usr/local/bin/vigil", "status", "--runtime-dir", "/run/vigil"]'


def probes():
    if not EXEC_PROBES:
        return (
            "          # No exec probes yet: they would run inside the agent's trimmed host view,\n"
            "          # where the image's binary is not visible (see generate.py EXEC_PROBES).\n"
            "          # checkov CKV_K8S_8/CKV_K8S_9 skipped (annotation).\n"
        )
    return f"""          # `vigil status` asks the supervisor over its root-only socket in the runtime dir.
          livenessProbe:
            exec:
              command: {PROBE_CMD}
            initialDelaySeconds: 15
            periodSeconds: 30
            timeoutSeconds: 5
            failureThreshold: 3
          readinessProbe:
            exec:
              command: {PROBE_CMD}
            initialDelaySeconds: 5
            periodSeconds: 30
            timeoutSeconds: 5
"""


def manifest(mode):
    m = MODES[mode]
    vols, mounts = host_volumes(mode)
    ann = "".join(
        f'    checkov.io/skip{i + 1}: "{c}={why}"\n' for i, (c, why) in enumerate(skips(mode))
    )
    return f"""# GENERATED by deploy/kubernetes/generate.py -- edit the generator, not this file.
# vigil DaemonSet, mode: {mode} (mount_mode = {m['mount_mode']}, privileged: {str(m['privileged']).lower()})
# kubectl apply -f deploy/kubernetes/{mode}/vigil.yaml   (or kubectl apply -k deploy/kubernetes/{mode})
apiVersion: v1
kind: Namespace
metadata:
  name: vigil
  labels:
    app.kubernetes.io/name: vigil
    # hostPath, hostPID and hostNetwork are outside the baseline Pod Security Standard even
    # without privileged: true, so the namespace must allow "privileged" pods.
    pod-security.kubernetes.io/enforce: privileged
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: vigil
  namespace: vigil
  labels:
    app.kubernetes.io/name: vigil
# vigil never talks to the Kubernetes API (pod UIDs come from cgroup paths, names from the
# kubelet's /var/log/pods and /var/log/containers): no token.
automountServiceAccountToken: false
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: vigil-config
  namespace: vigil
  labels:
    app.kubernetes.io/name: vigil
data:
  vigil.toml: |
{indent(toml(mode), 4)}---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: vigil
  namespace: vigil
  labels:
    app.kubernetes.io/name: vigil
    app.kubernetes.io/version: "{VERSION}"
  annotations:
{ann}spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: vigil
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 1
  template:
    metadata:
      labels:
        app.kubernetes.io/name: vigil
    spec:
      serviceAccountName: vigil
      automountServiceAccountToken: false
      # Host PID namespace: /proc shows the host's processes (process metrics, fd counts from
      # /proc/PID/fd, container network counters from /proc/PID/net/dev).
      hostPID: true  # checkov CKV_K8S_17 skipped (annotation)
      # Host network namespace: host interface counters, the flow tracepoints count the
      # node's traffic, and 127.0.0.1 reaches a node-local collector.
      hostNetwork: true  # checkov CKV_K8S_19 skipped (annotation)
      dnsPolicy: ClusterFirstWithHostNet
      # Optional: survive node memory pressure like other node agents.
      # priorityClassName: system-node-critical
      terminationGracePeriodSeconds: 30
      tolerations:
        - operator: Exists
      securityContext:
        runAsUser: 0
        runAsGroup: 0
        runAsNonRoot: false
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: vigil
          image: {IMAGE}  # checkov CKV_K8S_43 skipped: pin the digest after pushing
          imagePullPolicy: Always
          args: ["run", "--config", "/etc/vigil/vigil.toml"]
          env:
            - name: VIGIL_HOST_ROOT
              value: /hostfs
            # Set to "1" to fail at start instead of running with features disabled.
            - name: VIGIL_ENFORCE_SYS_CAPS
              value: "0"
            # Credentials for the backend, never in argv or logs:
            # - name: OTEL_EXPORTER_OTLP_HEADERS
            #   valueFrom:
            #     secretKeyRef: {{name: vigil-otlp, key: headers}}  # "api-key=..."
          resources:
            requests:
              cpu: 50m
              memory: 64Mi
            limits:
              cpu: 500m
              memory: 256Mi
{probes()}{indent(security_context(mode), 10)}          volumeMounts:
{indent(mounts, 12)}      volumes:
{indent(vols, 8)}"""


KUSTOMIZATION = """# GENERATED by deploy/kubernetes/generate.py
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - vigil.yaml
"""


def outputs():
    for mode in MODES:
        d = HERE / mode
        yield d / "vigil.yaml", manifest(mode)
        yield d / "vigil.toml", toml(mode)
        yield d / "kustomization.yaml", KUSTOMIZATION


def main(argv):
    check = "--check" in argv
    stale = []
    for path, text in outputs():
        old = path.read_text() if path.exists() else None
        if old != text:
            stale.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if check and stale:
        for p in stale:
            print(f"out of date: {p.relative_to(HERE.parent.parent)}", file=sys.stderr)
        print("run: python3 deploy/kubernetes/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
