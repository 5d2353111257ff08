#!/usr/bin/env bash
# Benchmark: sysbench oltp_point_select and oltp_read_write, direct to MariaDB vs HAProxy
# (TCP mode) vs sql-proxy, alternating per round after a warm-up, in one run; then the proxy's
# RSS with 1,000 idle client connections. Targets: direct; haproxy and proxy reaching MariaDB
# over TCP; haproxy-unix and proxy-unix reaching it over its unix socket (both on this host).
# Besides QPS and p99, each run reports CPU time per query of MariaDB, the middle hop and
# sysbench itself (utime+stime from /proc and getrusage), so the cost of a hop is visible.
# Everything is started from this script (one session: with autogroup scheduling, processes
# in different sessions get separate CPU shares, which skews a comparison).
#
# Usage: sql-proxy/bench/compare.sh [ROUNDS=5] [SECONDS=10] [THREADS=8]
# BASELINE_BIN=/path/to/older/sql-proxy adds a target "proxy-baseline" (TCP backend) for an
# A/B of two builds in the same run.
# Needs: release build of sql-proxy and the idle_conns example
#   cargo build --release -p sql-proxy --bin sql-proxy --example idle_conns
set -euo pipefail
ROUNDS=${1:-5}
SECS=${2:-10}
THREADS=${3:-8}
T=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/target}/release
BIN=$T/sql-proxy
IDLE=$T/examples/idle_conns
W=$(mktemp -d /tmp/sqlproxy-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

DBP=$(free_port)
mariadb-install-db --no-defaults --datadir="$W/data" --user=root --auth-root-authentication-method=normal --skip-test-db >/dev/null
mariadbd --no-defaults --datadir="$W/data" --port="$DBP" --bind-address=127.0.0.1 --socket="$W/s" \
  --pid-file="$W/pid" --log-error="$W/err" --user=root --skip-name-resolve --max-connections=3000 \
  --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2 &
DB_PID=$!
PIDS+=($DB_PID)
for _ in $(seq 100); do mariadb --no-defaults -S "$W/s" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
mariadb --no-defaults -S "$W/s" -uroot -e "CREATE DATABASE shop; CREATE USER app@'%' IDENTIFIED BY 'bench-pw'; GRANT ALL ON shop.* TO app@'%'; CREATE USER admin@'%' IDENTIFIED BY 'admin-pw'; GRANT ALL ON *.* TO admin@'%';"

HP=$(free_port)
cat > "$W/haproxy.cfg" <<CFG
global
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend fe
  bind 127.0.0.1:$HP
  default_backend be
backend be
  server db 127.0.0.1:$DBP
CFG
haproxy -db -f "$W/haproxy.cfg" &
HAPROXY_PID=$!
PIDS+=($HAPROXY_PID)
HU=$(free_port)
sed -e "s|bind 127.0.0.1:$HP|bind 127.0.0.1:$HU|" -e "s|server db 127.0.0.1:$DBP|server db $W/s|" \
  "$W/haproxy.cfg" > "$W/haproxy-unix.cfg"
haproxy -db -f "$W/haproxy-unix.cfg" &
HAPROXYU_PID=$!
PIDS+=($HAPROXYU_PID)

PP=$(free_port)
echo admin-pw > "$W/admin.pw"
"$BIN" sync-users --from "127.0.0.1:$DBP" --user admin --password-file "$W/admin.pw" --out "$W/users.json" >/dev/null
cat > "$W/proxy.toml" <<CFG
listen = ["127.0.0.1:$PP"]
users_file = "$W/users.json"
route_store = "$W/routes-tcp.sqlite"
default_side = "old"
[backends]
old = "127.0.0.1:$DBP"
CFG
"$BIN" routes init --from-config --config "$W/proxy.toml" >/dev/null
RUST_LOG=warn "$BIN" run --config "$W/proxy.toml" &
PROXY_PID=$!
PIDS+=($PROXY_PID)
PU=$(free_port)
sed -e "s|127.0.0.1:$PP|127.0.0.1:$PU|" -e "s|routes-tcp|routes-unix|" "$W/proxy.toml" > "$W/proxy-unix.toml"
printf '[backend_sockets]\nold = "%s"\n' "$W/s" >> "$W/proxy-unix.toml"
"$BIN" routes init --from-config --config "$W/proxy-unix.toml" >/dev/null
RUST_LOG=warn "$BIN" run --config "$W/proxy-unix.toml" &
PROXYU_PID=$!
PIDS+=($PROXYU_PID)
TARGETS=(direct haproxy proxy haproxy-unix proxy-unix)
if [ -n "${BASELINE_BIN:-}" ]; then
  PB=$(free_port)
  # An older build may predate the route store: its config has no route_store line.
  sed -e "s|127.0.0.1:$PP|127.0.0.1:$PB|" -e "/^route_store/d" "$W/proxy.toml" > "$W/proxy-baseline.toml"
  "$BASELINE_BIN" routes init --from-config --config "$W/proxy-baseline.toml" >/dev/null 2>&1 || true
  RUST_LOG=warn "$BASELINE_BIN" run --config "$W/proxy-baseline.toml" &
  PROXYB_PID=$!
  PIDS+=($PROXYB_PID)
  TARGETS+=(proxy-baseline)
fi
sleep 1

sb() { # port workload seconds; prints sysbench's output, then "SBCPU <seconds>"
  python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print("SBCPU", r.ru_utime + r.ru_stime)' \
    sysbench "$2" --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$1" --mysql-user=app \
    --mysql-password=bench-pw --mysql-db=shop --tables=4 --table-size=10000 --threads="$THREADS" \
    --time="$3" --percentile=99 --report-interval=0 run
}
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; } # utime+stime in clock ticks
sysbench oltp_read_write --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$DBP" --mysql-user=app \
  --mysql-password=bench-pw --mysql-db=shop --tables=4 --table-size=10000 prepare >/dev/null
declare -A PORT=([direct]=$DBP [haproxy]=$HP [proxy]=$PP [haproxy-unix]=$HU [proxy-unix]=$PU [proxy-baseline]=${PB:-0})
declare -A MID=([direct]="" [haproxy]=$HAPROXY_PID [proxy]=$PROXY_PID [haproxy-unix]=$HAPROXYU_PID [proxy-unix]=$PROXYU_PID [proxy-baseline]=${PROXYB_PID:-})
for t in "${TARGETS[@]}"; do sb "${PORT[$t]}" oltp_point_select 3 >/dev/null; done
TCK=$(getconf CLK_TCK)
echo -e "workload\tround\ttarget\tqps\tp99_ms\terrors\tdb_us_per_q\tmid_us_per_q\tsysbench_us_per_q" > "$W/raw.tsv"
for wl in oltp_point_select oltp_read_write; do
  for r in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
      mid=${MID[$t]}
      db0=$(ticks "$DB_PID"); mid0=$([ -n "$mid" ] && ticks "$mid" || echo 0)
      out=$(sb "${PORT[$t]}" "$wl" "$SECS")
      db1=$(ticks "$DB_PID"); mid1=$([ -n "$mid" ] && ticks "$mid" || echo 0)
      q=$(echo "$out" | awk '/queries:/ {print $2}')
      qps=$(echo "$out" | awk '/queries:/ {gsub("\\(","",$3); print $3}')
      p99=$(echo "$out" | awk '/99th percentile:/ {print $3}')
      err=$(echo "$out" | awk '/ignored errors:/ {print $3}')
      sbcpu=$(echo "$out" | awk '/^SBCPU/ {print $2}')
      cpu=$(python3 -c "q=$q; t=$TCK; print(f'{($db1-$db0)/t/q*1e6:.1f}\t{($mid1-$mid0)/t/q*1e6:.1f}\t{$sbcpu/q*1e6:.1f}')")
      echo -e "$wl\t$r\t$t\t$qps\t$p99\t$err\t$cpu" | tee -a "$W/raw.tsv" >&2
    done
  done
done
cp "$W/raw.tsv" "${RAW_OUT:-/tmp/sqlproxy-bench-raw.tsv}"
python3 - "$W/raw.tsv" <<'PY'
import sys, statistics as st
rows=[l.rstrip("\n").split("\t") for l in open(sys.argv[1]).readlines()[1:]]
for wl in ["oltp_point_select","oltp_read_write"]:
    m={}
    for t in ["direct","haproxy","proxy","haproxy-unix","proxy-unix","proxy-baseline"]:
        sel=[r for r in rows if r[0]==wl and r[2]==t]
        if not sel:
            continue
        q=[float(r[3]) for r in sel]
        p=[float(r[4]) for r in sel]
        cpu=[st.median(float(r[i]) for r in sel) for i in (6,7,8)]
        m[t]=(st.median(q),min(q),max(q),st.median(p),min(p),max(p))
        print(f"{wl}\t{t}\tqps median {m[t][0]:.0f} (min {m[t][1]:.0f}, max {m[t][2]:.0f})\tp99 median {m[t][3]:.2f} ms (min {m[t][4]:.2f}, max {m[t][5]:.2f})\tCPU us/query: MariaDB {cpu[0]:.1f}, middle {cpu[1]:.1f}, sysbench {cpu[2]:.1f}")
    pairs=[("proxy","haproxy"),("proxy-unix","haproxy"),("proxy-unix","haproxy-unix")]
    if "proxy-baseline" in m:
        pairs.append(("proxy","proxy-baseline"))
    for p, h in pairs:
        print(f"{wl}\t{p}/direct qps {m[p][0]/m['direct'][0]:.3f}\t{p}/{h} qps {m[p][0]/m[h][0]:.3f}\tp99 added vs direct {m[p][3]-m['direct'][3]:+.2f} ms")
PY
rss() { awk '/VmRSS/ {print $2}' "/proc/$PROXY_PID/status"; }
before=$(rss)
IDLE_PASSWORD=bench-pw "$IDLE" "127.0.0.1:$PP" app 1000 20 > "$W/idle.out" &
IDLEPID=$!
PIDS+=($IDLEPID)
for _ in $(seq 300); do grep -q ready "$W/idle.out" 2>/dev/null && break; sleep 0.1; done
sleep 2
echo "proxy RSS: ${before} kB before, $(rss) kB with $(cat "$W/idle.out") idle client connections"
