#!/usr/bin/env bash
# Benchmark: what the durable route store costs a switch. Two proxies in one run, against one
# private MariaDB serving both sides (so a switch moves no data and only the proxy's own work
# is timed): "store" (this build: every route change committed with an fsync before it takes
# effect) and "baseline" (BASELINE_BIN, a build from before the route store: routes in memory
# only). Rounds alternate A B A B; each round times N pause->resume cycles with no client
# connected and N more while 8 clients run point selects on the database, through each proxy.
# Per cycle: the pause call, the resume call (both client-side HTTP round trips) and the
# pause_ms the proxy reports (what a held client would see).
#
# Usage: BASELINE_BIN=/path/to/older/sql-proxy sql-proxy/bench/switch_latency.sh [ROUNDS=5] [N=100]
# Needs: cargo build --release -p sql-proxy --bin sql-proxy
# The plain-query side (must be unchanged: the store is off the query path) is compare.sh with
# the same BASELINE_BIN (target proxy-baseline).
set -euo pipefail
ROUNDS=${1:-5}
N=${2:-100}
T=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/target}/release
BIN=$T/sql-proxy
: "${BASELINE_BIN:?set BASELINE_BIN to a sql-proxy built before the route store}"
W=$(mktemp -d /tmp/sqlproxy-switch.XXXXXX)
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
  --pid-file="$W/pid" --log-error="$W/err" --user=root --skip-name-resolve &
PIDS+=($!)
for _ in $(seq 100); do mariadb --no-defaults -S "$W/s" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
mariadb --no-defaults -S "$W/s" -uroot -e "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY); INSERT INTO shop.t VALUES (1); CREATE USER app@'%' IDENTIFIED BY 'bench-pw'; GRANT ALL ON shop.* TO app@'%'; CREATE USER admin@'%' IDENTIFIED BY 'admin-pw'; GRANT ALL ON *.* TO admin@'%';"
echo admin-pw > "$W/admin.pw"
echo "bench-token-0123456789abcdef" > "$W/token"
"$BIN" sync-users --from "127.0.0.1:$DBP" --user admin --password-file "$W/admin.pw" --out "$W/users.json" >/dev/null

declare -A PORT ADMIN
start() { # name binary with_store
  local name=$1 bin=$2 port admin
  port=$(free_port); admin=$(free_port)
  PORT[$name]=$port; ADMIN[$name]=$admin
  {
    echo "listen = [\"127.0.0.1:$port\"]"
    echo "users_file = \"$W/users.json\""
    [ "$3" = yes ] && echo "route_store = \"$W/routes-$name.sqlite\""
    echo 'default_side = "old"'
    echo '[backends]'
    echo "old = \"127.0.0.1:$DBP\""
    echo "new = \"127.0.0.1:$DBP\""
    echo '[admin]'
    echo "listen = \"127.0.0.1:$admin\""
    echo "token_file = \"$W/token\""
  } > "$W/$name.toml"
  [ "$3" = yes ] && "$bin" routes init --from-config --config "$W/$name.toml" >/dev/null
  RUST_LOG=warn "$bin" run --config "$W/$name.toml" &
  PIDS+=($!)
}
start store "$BIN" yes
start baseline "$BASELINE_BIN" no
sleep 1

python3 - "$ROUNDS" "$N" "${ADMIN[store]}" "${ADMIN[baseline]}" "${PORT[store]}" "${PORT[baseline]}" <<'PY'
import http.client, json, statistics as st, subprocess, sys, time
rounds, n = int(sys.argv[1]), int(sys.argv[2])
admin = {"store": int(sys.argv[3]), "baseline": int(sys.argv[4])}
port = {"store": int(sys.argv[5]), "baseline": int(sys.argv[6])}
TOKEN = "bench-token-0123456789abcdef"

def call(p, path, body):
    c = http.client.HTTPConnection("127.0.0.1", p, timeout=30)
    t = time.perf_counter()
    c.request("POST", path, body, {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    dt = (time.perf_counter() - t) * 1e3
    if r.status != 200:
        sys.exit(f"{path}: HTTP {r.status}: {data!r}")
    return dt, json.loads(data)

def load(p, secs):
    return subprocess.Popen(
        ["sysbench", "oltp_point_select", "--db-driver=mysql", "--mysql-host=127.0.0.1",
         f"--mysql-port={p}", "--mysql-user=app", "--mysql-password=bench-pw", "--mysql-db=shop",
         "--tables=1", "--table-size=1000", "--threads=8", f"--time={secs}", "--report-interval=0",
         "run"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

# The load's table, prepared through the store proxy (same server behind both).
subprocess.run(["sysbench", "oltp_point_select", "--db-driver=mysql", "--mysql-host=127.0.0.1",
                f"--mysql-port={port['store']}", "--mysql-user=app", "--mysql-password=bench-pw",
                "--mysql-db=shop", "--tables=1", "--table-size=1000", "prepare"],
               check=True, stdout=subprocess.DEVNULL)
res = {}
for r in range(rounds + 1):  # round 0 is the warm-up
    for name in ["store", "baseline"]:
        for cond in ["idle", "load"]:
            lp = load(port[name], 600) if cond == "load" else None
            if lp:
                time.sleep(1)
            side = "new"
            for _ in range(n):
                p_ms, _ = call(admin[name], "/routes/shop/pause", "{}")
                r_ms, rv = call(admin[name], "/routes/shop/resume", json.dumps({"side": side}))
                side = "old" if side == "new" else "new"
                if r:
                    res.setdefault((name, cond), []).append((p_ms, r_ms, rv["pause_ms"]))
            if lp:
                lp.terminate(); lp.wait()

def med(xs): return st.median(xs)
print(f"pause->resume cycles: {rounds} rounds x {n} per proxy and condition, alternating store/baseline")
for cond in ["idle", "load"]:
    for name in ["store", "baseline"]:
        v = res[(name, cond)]
        for i, what in enumerate(["pause call ms", "resume call ms", "pause_ms seen by clients"]):
            xs = [x[i] for x in v]
            xs.sort()
            print(f"{cond}\t{name}\t{what}\tmedian {med(xs):.2f}\tp99 {xs[int(len(xs)*0.99)-1]:.2f}\tmin {xs[0]:.2f}\tmax {xs[-1]:.2f}")
    s = [x[2] for x in res[("store", cond)]]
    b = [x[2] for x in res[("baseline", cond)]]
    print(f"{cond}\tpause seen by clients, store - baseline: median {med(s) - med(b):+.2f} ms ({med(s)/med(b):.2f}x)")
PY
