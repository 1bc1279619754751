#!/usr/bin/env bash
# sqlraft and etcd side by side: a 3-node cluster of each on loopback, one after the
# other, under the same wrk load (small writes acknowledged after a majority's fsync,
# point reads on a follower), then a table of the ratios (docs/PERFORMANCE.md), and
# one of the CPU each cluster's three processes used per operation (both clusters and
# wrk share this machine's CPUs, so where those are the limit, throughput follows it).
#
#   scripts/bench-vs-etcd.sh [--duration SECONDS] [--clients N] [--rounds N] [--out DIR]
#                            [--peer-tls on|off]
#
# --peer-tls: whether the nodes of both clusters talk to each other over mutual TLS
# (on, the default: sqlraft's default, and etcd given peer certificates made with
# openssl) or in plaintext (off: `demo --raft.insecure`, etcd's default). Clients talk
# plaintext HTTP to both either way.
#
# Installs Debian's etcd-server and wrk when missing. Every process it starts is
# stopped, and its data removed, when it ends (Ctrl-C included).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10
WARMUP=3
CLIENTS=32
ROUNDS=1
OUT=target/bench-vs-etcd
PEER_TLS=on
while (($#)); do
  case "$1" in
    --duration|--warmup|--clients|--rounds|--out|--peer-tls)
      (($# >= 2)) || { echo "bench-vs-etcd: $1 needs a value" >&2; exit 2; } ;;&
    --duration) DURATION="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --clients) CLIENTS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --peer-tls) PEER_TLS="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "bench-vs-etcd: unknown argument $1" >&2; exit 2 ;;
  esac
done

case "$PEER_TLS" in
  on|off) ;;
  *) echo "bench-vs-etcd: --peer-tls takes on or off, not $PEER_TLS" >&2; exit 2 ;;
esac

bash scripts/setup.sh
need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if ((${#need[@]})); then
  echo "bench-vs-etcd: installing ${need[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  # The package would start a system etcd on the default ports: keep services down
  # while installing.
  policy=/usr/sbin/policy-rc.d
  made_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    made_policy=1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  if [ -n "$made_policy" ]; then $SUDO rm -f "$policy"; fi
fi
cargo build --release --locked -p sqlraft-core
CORE=$PWD/target/release/sqlraft-core

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /var/tmp/bench-vs-etcd.XXXXXX)
PIDS=()
# The processes of the cluster under test, whose CPU each run counts.
CLUSTER=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- wrk scripts ---------------------------------------------------------------------
# Keys and values are written in the base64 alphabet with lengths that are multiples
# of 4, so etcd's JSON gateway takes them as they are.
cat >"$WORK/sqlraft-write.lua" <<'EOF'
local n = 0
request = function()
  n = n + 1
  local body = '[["INSERT INTO bench_rows (v) VALUES (?)", "wrkvalue' .. string.format("%08d", n) .. '"]]'
  return wrk.format("POST", "/db/execute", {["Content-Type"] = "application/json"}, body)
end
EOF
cat >"$WORK/sqlraft-read.lua" <<'EOF'
local path = "/db/query?level=" .. os.getenv("LEVEL")
request = function()
  local body = '[["SELECT id, v FROM bench_rows WHERE id = ?", ' .. math.random(1, 1000) .. ']]'
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
end
EOF
cat >"$WORK/etcd-write.lua" <<'EOF'
local n = 0
request = function()
  n = n + 1
  local body = '{"key":"' .. string.format("w%07d", n % 1000000) .. '","value":"wrkvalue' .. string.format("%08d", n) .. '"}'
  return wrk.format("POST", "/v3/kv/put", {["Content-Type"] = "application/json"}, body)
end
EOF
cat >"$WORK/etcd-read.lua" <<'EOF'
local extra = ""
if os.getenv("LEVEL") == "none" then extra = ',"serializable":true' end
request = function()
  local body = '{"key":"' .. string.format("r%07d", math.random(1, 1000)) .. '"' .. extra .. '}'
  return wrk.format("POST", "/v3/kv/range", {["Content-Type"] = "application/json"}, body)
end
EOF

# cpu_ticks PID...: the clock ticks of CPU (user and system) the processes have used.
cpu_ticks() {
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}

# machine_ticks: the machine's busy and idle clock ticks (idle counts waiting for I/O).
machine_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat; }

# run_wrk NAME URL SCRIPT THREADS CONNECTIONS [LEVEL]: warm up, then measure; the
# output is kept in $OUT/NAME.txt, and the CPU the cluster ($CLUSTER) and the machine
# used meanwhile in $OUT/NAME.cpu.
run_wrk() {
  local name=$1 url=$2 script=$3 threads=$4 conns=$5 level=${6:-none}
  LEVEL=$level wrk -t"$threads" -c"$conns" -d"${WARMUP}s" -s "$script" "$url" >/dev/null
  local cluster0 busy0 idle0 cluster1 busy1 idle1
  cluster0=$(cpu_ticks "${CLUSTER[@]}")
  read -r busy0 idle0 < <(machine_ticks)
  LEVEL=$level wrk -t"$threads" -c"$conns" -d"${DURATION}s" --timeout 10s --latency \
    -s "$script" "$url" >"$OUT/$name.txt"
  cluster1=$(cpu_ticks "${CLUSTER[@]}")
  read -r busy1 idle1 < <(machine_ticks)
  echo "$((cluster1 - cluster0)) $((busy1 - busy0)) $((idle1 - idle0)) $(getconf CLK_TCK)" >"$OUT/$name.cpu"
  echo "  $name: $(grep 'Requests/sec' "$OUT/$name.txt" | awk '{print $2}') req/s" >&2
}

threads_for() { if (($1 >= 2)); then echo 2; else echo 1; fi; }

# --- etcd ----------------------------------------------------------------------------
# etcd_certs: a CA and a certificate for each etcd member (127.0.0.1-3, for serving
# and for its client side), as sqlraft's certs make them: ECDSA P-256. etcd checks a
# peer's client certificate against the address the connection comes from, and Linux
# sends from 127.0.0.1 to every 127.0.0.x: each certificate names 127.0.0.1 too, or
# etcd refuses most connections between members and pays a handshake for each retry
# (found by a review).
etcd_certs() {
  local dir=$WORK/etcd-tls i
  [ -e "$dir/ca.crt" ] && return
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=bench-vs-etcd CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  for i in 1 2 3; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "/CN=e$i" -keyout "$dir/e$i.key" -out "$dir/e$i.csr" 2>/dev/null
    local san="IP:127.0.0.$i"
    ((i == 1)) || san+=",IP:127.0.0.1"
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n' "$san" >"$dir/e$i.ext"
    openssl x509 -req -in "$dir/e$i.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
      -days 2 -extfile "$dir/e$i.ext" -out "$dir/e$i.crt" 2>/dev/null
  done
}

run_etcd() {
  local round=$1 cluster="" i scheme=http
  local -a client peer tls
  if [ "$PEER_TLS" = on ]; then etcd_certs; scheme=https; fi
  for i in 1 2 3; do client[i]=$(free_port); peer[i]=$(free_port); done
  for i in 1 2 3; do cluster+="${cluster:+,}e$i=$scheme://127.0.0.$i:${peer[i]}"; done
  for i in 1 2 3; do
    tls=()
    if [ "$PEER_TLS" = on ]; then
      tls=(--peer-client-cert-auth --peer-trusted-ca-file "$WORK/etcd-tls/ca.crt"
        --peer-cert-file "$WORK/etcd-tls/e$i.crt" --peer-key-file "$WORK/etcd-tls/e$i.key")
    fi
    etcd --name "e$i" --data-dir "$WORK/etcd-$round-$i" \
      --listen-client-urls "http://127.0.0.$i:${client[i]}" \
      --advertise-client-urls "http://127.0.0.$i:${client[i]}" \
      --listen-peer-urls "$scheme://127.0.0.$i:${peer[i]}" \
      --initial-advertise-peer-urls "$scheme://127.0.0.$i:${peer[i]}" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token "bench-$round" --log-level error "${tls[@]}" \
      >"$WORK/etcd-$round-$i.log" 2>&1 &
    PIDS+=($!)
  done
  CLUSTER=("${PIDS[@]}")
  local leader="" follower="" url
  for _ in $(seq 1 150); do
    leader="" follower=""
    for i in 1 2 3; do
      url="http://127.0.0.$i:${client[i]}"
      local st
      st=$(curl -s -m 2 -X POST "$url/v3/maintenance/status" -d '{}' || true)
      local me lead
      me=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["header"]["member_id"], d["leader"])' "$st" 2>/dev/null || true)
      [ -n "$me" ] || continue
      read -r me lead <<<"$me"
      if [ "$me" = "$lead" ]; then leader=$url; elif [ -z "$follower" ]; then follower=$url; fi
    done
    [ -n "$leader" ] && [ -n "$follower" ] && break
    sleep 0.2
  done
  [ -n "$leader" ] && [ -n "$follower" ] || { echo "bench-vs-etcd: etcd elected no leader" >&2; exit 1; }
  echo "etcd round $round: leader $leader, follower $follower" >&2
  for k in $(seq 1 1000); do
    printf '{"key":"%s","value":"cmVhZHZhbHVl"}' "$(printf 'r%07d' "$k")"
  done | python3 -c '
import json, sys, urllib.request
data = sys.stdin.read().replace("}{", "}\n{").splitlines()
for line in data:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/v3/kv/put", line.encode(), {"Content-Type": "application/json"})).read()
' "$leader"
  run_wrk "etcd-$round-write-$CLIENTS" "$leader" "$WORK/etcd-write.lua" "$(threads_for "$CLIENTS")" "$CLIENTS"
  run_wrk "etcd-$round-write-1" "$leader" "$WORK/etcd-write.lua" 1 1
  run_wrk "etcd-$round-read-local" "$follower" "$WORK/etcd-read.lua" "$(threads_for "$CLIENTS")" "$CLIENTS" none
  run_wrk "etcd-$round-read-linearizable" "$follower" "$WORK/etcd-read.lua" "$(threads_for "$CLIENTS")" "$CLIENTS" linearizable
  # A member refusing another's connections (a certificate that does not fit) would
  # still elect a leader, but cost handshakes that are not etcd's to pay.
  if grep -q 'rejected connection' "$WORK/etcd-$round-"*.log; then
    echo "bench-vs-etcd: etcd members refused each other's connections:" >&2
    grep -h 'rejected connection' "$WORK/etcd-$round-"*.log | head -3 >&2
    exit 1
  fi
  stop_all
}

# --- sqlraft -------------------------------------------------------------------------
run_sqlraft() {
  local round=$1
  local transport=()
  [ "$PEER_TLS" = on ] || transport=(--raft.insecure)
  mkdir -p "$WORK/sqlraft-$round"
  "$CORE" demo --nodes 3 --root "$WORK/sqlraft-$round" "${transport[@]}" </dev/null >"$WORK/sqlraft-$round.out" 2>&1 &
  PIDS+=($!)
  local urls=()
  for _ in $(seq 1 300); do
    mapfile -t urls < <(grep -o 'ready at http://[0-9.:]*' "$WORK/sqlraft-$round.out" | awk '{print $3}')
    ((${#urls[@]} == 3)) && grep -q '^sqlraft demo:' "$WORK/sqlraft-$round.out" && break
    sleep 0.2
  done
  ((${#urls[@]} == 3)) || { echo "bench-vs-etcd: the sqlraft demo did not start:" >&2; cat "$WORK/sqlraft-$round.out" >&2; exit 1; }
  # The demo runs each node as a process of its own.
  mapfile -t CLUSTER < <(pgrep -P "${PIDS[-1]}")
  ((${#CLUSTER[@]} == 3)) || { echo "bench-vs-etcd: the demo runs ${#CLUSTER[@]} processes, not 3" >&2; exit 1; }
  local leader="" follower="" url role
  for url in "${urls[@]}"; do
    role=$(curl -s -m 2 "$url/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["role"])')
    if [ "$role" = leader ]; then leader=$url; elif [ -z "$follower" ]; then follower=$url; fi
  done
  [ -n "$leader" ] && [ -n "$follower" ] || { echo "bench-vs-etcd: no sqlraft leader" >&2; exit 1; }
  echo "sqlraft round $round: leader $leader, follower $follower" >&2
  curl -s -m 10 -X POST "$leader/db/execute" -H 'Content-Type: application/json' \
    -d '["CREATE TABLE bench_rows (id INTEGER PRIMARY KEY, v TEXT)"]' >/dev/null
  python3 -c '
import json, sys, urllib.request
rows = [["INSERT INTO bench_rows (v) VALUES (?)", "readvalue"]] * 1000
urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/db/execute", json.dumps(rows).encode(), {"Content-Type": "application/json"})).read()
' "$leader"
  # wrk reads only status codes: check once that each read level answers a row.
  for level in none linearizable; do
    curl -s -m 10 -X POST "$follower/db/query?level=$level" -H 'Content-Type: application/json' \
      -d '[["SELECT id, v FROM bench_rows WHERE id = ?", 7]]' |
      python3 -c 'import json,sys; r=json.load(sys.stdin)["results"][0]; assert "error" not in r and r["values"], r' ||
      { echo "bench-vs-etcd: a $level read on the follower failed" >&2; exit 1; }
  done
  local before after
  before=$(count_rows "$leader")
  run_wrk "sqlraft-$round-write-$CLIENTS" "$leader" "$WORK/sqlraft-write.lua" "$(threads_for "$CLIENTS")" "$CLIENTS"
  run_wrk "sqlraft-$round-write-1" "$leader" "$WORK/sqlraft-write.lua" 1 1
  after=$(count_rows "$leader")
  # Every answered write must be in the table (wrk does not read answers' bodies).
  python3 - "$OUT" "$round" "$CLIENTS" "$before" "$after" <<'EOF'
import re, sys
out, rnd, clients, before, after = sys.argv[1:6]
answered = 0
for name in (f"sqlraft-{rnd}-write-{clients}", f"sqlraft-{rnd}-write-1"):
    text = open(f"{out}/{name}.txt").read()
    answered += int(re.search(r"(\d+) requests in", text).group(1))
    if "Non-2xx" in text or "Socket errors" in text:
        sys.exit(f"bench-vs-etcd: errors in {name}: see {out}/{name}.txt")
# Requests of the warm-up runs are in the table too: at least every answered write.
if int(after) - int(before) < answered:
    sys.exit(f"bench-vs-etcd: {answered} writes answered but only {int(after)-int(before)} rows added")
EOF
  run_wrk "sqlraft-$round-read-local" "$follower" "$WORK/sqlraft-read.lua" "$(threads_for "$CLIENTS")" "$CLIENTS" none
  run_wrk "sqlraft-$round-read-linearizable" "$follower" "$WORK/sqlraft-read.lua" "$(threads_for "$CLIENTS")" "$CLIENTS" linearizable
  stop_all
}

count_rows() {
  curl -s -m 10 -G "$1/db/query" --data-urlencode 'q=SELECT count(*) FROM bench_rows' \
    --data-urlencode level=strong | python3 -c 'import json,sys; print(json.load(sys.stdin)["results"][0]["values"][0][0])'
}

stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
  CLUSTER=()
  # What the last cluster left for the kernel to write back must not slow the next.
  sync
  sleep 2
}

echo "bench-vs-etcd: $ROUNDS round(s), ${DURATION}s per run after ${WARMUP}s warm-up, $CLIENTS clients, peer TLS $PEER_TLS; results in $OUT" >&2
# Odd rounds start with etcd, even rounds with sqlraft, so that neither always runs on
# a machine the other just warmed (or left busy).
for round in $(seq 1 "$ROUNDS"); do
  if ((round % 2)); then
    run_etcd "$round"
    run_sqlraft "$round"
  else
    run_sqlraft "$round"
    run_etcd "$round"
  fi
done

python3 - "$OUT" "$ROUNDS" "$CLIENTS" "$PEER_TLS" <<'EOF'
import json, re, statistics, sys
out, rounds, clients, peer_tls = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

def parse(name):
    text = open(f"{out}/{name}.txt").read()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    m = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", text)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    errors = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", text))
    return rate, p99, errors

def cpu(name):
    """The cluster's CPU per operation in microseconds, and the machine's idle share."""
    requests = int(re.search(r"(\d+) requests in", open(f"{out}/{name}.txt").read()).group(1))
    cluster, busy, idle, hz = (int(x) for x in open(f"{out}/{name}.cpu").read().split())
    return cluster * 1e6 / hz / max(requests, 1), idle / max(busy + idle, 1)

rows = [
    (f"writes, {clients} clients", f"write-{clients}", 3.0),
    ("writes, 1 sequential client", "write-1", 1.2),
    (f"reads on a follower, {clients} clients, local", "read-local", 5.0),
    (f"reads on a follower, {clients} clients, linearizable", "read-linearizable", 2.0),
]
summary = []
lines = ["| measure | sqlraft ops/s (p99 ms) | etcd ops/s (p99 ms) | ratio | goal |", "|---|---|---|---|---|"]
cpu_lines = ["| measure | sqlraft CPU us/op (idle) | etcd CPU us/op (idle) | etcd / sqlraft |", "|---|---|---|---|"]
for label, key, goal in rows:
    s = [parse(f"sqlraft-{r}-{key}") for r in range(1, rounds + 1)]
    e = [parse(f"etcd-{r}-{key}") for r in range(1, rounds + 1)]
    sr, sp = statistics.median(x[0] for x in s), statistics.median(x[1] for x in s)
    er, ep = statistics.median(x[0] for x in e), statistics.median(x[1] for x in e)
    ratio = sr / er if er else float("nan")
    errors = sum(x[2] for x in s) + sum(x[2] for x in e)
    sc = [cpu(f"sqlraft-{r}-{key}") for r in range(1, rounds + 1)]
    ec = [cpu(f"etcd-{r}-{key}") for r in range(1, rounds + 1)]
    scu, sci = statistics.median(x[0] for x in sc), statistics.median(x[1] for x in sc)
    ecu, eci = statistics.median(x[0] for x in ec), statistics.median(x[1] for x in ec)
    summary.append({"measure": label, "sqlraft_ops_per_s": sr, "sqlraft_p99_ms": sp,
                    "etcd_ops_per_s": er, "etcd_p99_ms": ep, "ratio": ratio, "goal": goal,
                    "errors": errors, "sqlraft_cpu_us_per_op": scu, "sqlraft_idle": sci,
                    "etcd_cpu_us_per_op": ecu, "etcd_idle": eci, "peer_tls": peer_tls})
    lines.append(f"| {label} | {sr:.0f} ({sp:.1f}) | {er:.0f} ({ep:.1f}) | {ratio:.2f}x | >= {goal}x |")
    cpu_lines.append(f"| {label} | {scu:.0f} ({sci:.0%}) | {ecu:.0f} ({eci:.0%}) | {ecu / scu if scu else float('nan'):.2f}x |")
table = f"Peer TLS {peer_tls} (both clusters), medians of {rounds} round(s):\n\n" + "\n".join(lines) + "\n\nCPU of the three nodes per operation, medians (the machine's idle share, I/O waits included):\n\n" + "\n".join(cpu_lines)
print(table)
open(f"{out}/summary.md", "w").write(table + "\n")
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
if any(x["errors"] for x in summary):
    sys.exit("bench-vs-etcd: some requests failed (see the wrk outputs)")
EOF
echo "bench-vs-etcd: wrk outputs, summary.md and summary.json in $OUT" >&2
