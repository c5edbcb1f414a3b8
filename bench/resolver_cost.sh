#!/usr/bin/env bash
# What name resolution costs the shipper (issue 11): PSS and CPU of the shipper shipping OTLP
# over HTTPS to rotel behind stunnel4, the endpoint given (a) as an address and (b) as a name
# resolved by dnsmasq in a network namespace (a search list, a nameserver outside the host).
# Run as root after `cargo build --release -p vigil-supervisor` and deploy/ci-deps.sh:
#
#   bench/resolver_cost.sh [seconds]          # default 30 s per run
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
SECS=${1:-30}
VIGIL=$PWD/target/release/vigil
W=$(mktemp -d /tmp/vigil-rescost.XXXXXX)
chmod 755 "$W"
NS=vigil-rescost
ROTEL=$(ls /opt/vigil-deploy-venv/lib/python3*/site-packages/rotel/rotel-agent)
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    ip link del vrc0 2>/dev/null || true
    ip netns del $NS 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

ip netns add $NS
ip link add vrc0 type veth peer name vrc1
ip link set vrc1 netns $NS
ip addr add 10.214.0.1/24 dev vrc0 && ip link set vrc0 up
ip netns exec $NS ip addr add 10.214.0.2/24 dev vrc1
ip netns exec $NS ip link set vrc1 up
echo "10.214.0.1 otlp.bench.test" > "$W/hosts" && chmod 644 "$W/hosts"
ip netns exec $NS dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
    --listen-address=10.214.0.2 --addn-hosts="$W/hosts" --local-ttl=0 \
    --user=nobody --group=nogroup --pid-file= 2>/dev/null &
printf 'nameserver 10.214.0.2\nsearch bench.test\n' > "$W/resolv.conf"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/ca.key" \
    -out "$W/ca.pem" -days 2 -subj /CN=bench-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/srv.key" \
    -out "$W/srv.csr" -subj /CN=otlp 2>/dev/null
printf 'subjectAltName=DNS:otlp,DNS:otlp.bench.test,IP:10.214.0.1\nbasicConstraints=CA:FALSE\n' > "$W/ext"
openssl x509 -req -in "$W/srv.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial \
    -out "$W/srv.pem" -days 2 -extfile "$W/ext" 2>/dev/null
"$ROTEL" start --otlp-http-endpoint 127.0.0.1:19418 --otlp-grpc-endpoint 127.0.0.1:19417 \
    --exporter blackhole --pid-file "$W/rotel.pid" --log-file "$W/rotel.log" >/dev/null 2>&1 &
printf 'foreground = yes\npid =\n[otlp]\naccept = 10.214.0.1:19443\nconnect = 127.0.0.1:19418\ncert = %s\nkey = %s\n' \
    "$W/srv.pem" "$W/srv.key" > "$W/stunnel.conf"
stunnel4 "$W/stunnel.conf" >/dev/null 2>&1 &
sleep 1

pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
cpu_ms() { awk '{print int(($14 + $15) * 1000 / 100)}' "/proc/$1/stat"; }

run() { # $1: label, $2: endpoint
    local rt="$W/rt-$1"
    unshare -m --propagation private sh -c \
        "mount --bind '$W/resolv.conf' /etc/resolv.conf && exec '$VIGIL' run --user nobody \
         --runtime-dir '$rt' --interval-ms 1000 --json-lines '' --otlp-endpoint '$2'" \
        2>"$W/$1.log" &
    local sup=$!
    sleep 5
    local sh
    sh=$(pgrep -P $sup -f '__child shipper')
    local c0
    c0=$(cpu_ms "$sh")
    sleep "$SECS"
    printf '%-8s %-28s shipper PSS %6s KiB, CPU %5s ms in %s s, seccomp %s\n' "$1" "$2" \
        "$(pss_kib "$sh")" "$(( $(cpu_ms "$sh") - c0 ))" "$SECS" \
        "$(grep -o 'role=shipper.*seccomp=[a-z+-]*' "$W/$1.log" | sed 's/.*seccomp=//' | tail -1)"
    kill -TERM $sup; wait $sup 2>/dev/null || true
}

export SSL_CERT_FILE="$W/ca.pem"
run address https://10.214.0.1:19443
run name https://otlp:19443
