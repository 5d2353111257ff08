#!/usr/bin/env bash
# Installs the packages scripts/package.sh built (dpkg -i, as root) and checks what an operator
# would: every binary answers --version with the commit, every unit passes
# `systemd-analyze verify`, every man page renders (`man -l`), the bash completions parse,
# `promtool check rules` accepts the shipped alert rules.
# The packages are purged again at the end (also on failure). Usage: scripts/check-packages.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "check-packages: run as root (dpkg -i)" >&2
  exit 1
fi
debs=(target/debian/*.deb)
[ -e "${debs[0]}" ] || { echo "check-packages: no package in target/debian: run scripts/package.sh" >&2; exit 1; }
commit="${HOSTMOVE_COMMIT:-$(git rev-parse --short=12 HEAD)}"
pkgs=(hostmove-migrator hostmove-sql-proxy hostmove-tunnel)
trap 'dpkg --purge "${pkgs[@]}" >/dev/null 2>&1 || true' EXIT

dpkg -i "${debs[@]}" >/dev/null
fail=0
for bin in migrator sql-proxy tunnel; do
  v="$("/usr/bin/$bin" --version)"
  case "$v" in
    *"(git $commit)"*) echo "ok: $v" ;;
    *) echo "FAIL: /usr/bin/$bin --version says '$v', not commit $commit"; fail=1 ;;
  esac
  bash -n "/usr/share/bash-completion/completions/$bin" || { echo "FAIL: bash completion of $bin"; fail=1; }
  [ -s "/usr/share/zsh/vendor-completions/_$bin" ] || { echo "FAIL: no zsh completion of $bin"; fail=1; }
done
# The pages as packaged (a minimal Debian image may exclude /usr/share/man from installs).
unpacked="$(mktemp -d)"
trap 'dpkg --purge "${pkgs[@]}" >/dev/null 2>&1 || true; rm -rf "$unpacked"' EXIT
for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$unpacked"; done
pages=0
for page in "$unpacked"/usr/share/man/man1/*.1.gz; do
  err="$(MANWIDTH=80 man -l "$page" 2>&1 >/dev/null)" || true
  out="$(MANWIDTH=80 man -l "$page" 2>/dev/null | head -c 200)"
  if [ -n "$err" ] || [ -z "$out" ]; then echo "FAIL: man -l $page: $err"; fail=1; fi
  pages=$((pages + 1))
done
echo "ok: $pages man pages render"
units=(/lib/systemd/system/sql-proxy.service /lib/systemd/system/tunnel.service
       /lib/systemd/system/tunnel-check.service /lib/systemd/system/tunnel-check.timer
       /lib/systemd/system/migrator-serve.service /lib/systemd/system/migrator-lease-watch.service)
if out="$(systemd-analyze verify "${units[@]}" 2>&1)"; then
  echo "ok: systemd-analyze verify ${#units[@]} units"
else
  echo "FAIL: systemd-analyze verify:"; echo "$out"; fail=1
fi
rules=/usr/share/hostmove/prometheus/hostmove-alerts.yml
if out="$(promtool check rules "$rules" 2>&1)"; then
  echo "ok: promtool check rules $rules ($(echo "$out" | grep -o '[0-9]* rules found'))"
else
  echo "FAIL: promtool check rules $rules:"; echo "$out"; fail=1
fi
# (its JSON and every metric it queries are checked by tests/tests/observability.rs)
if grep -q '"panels"' /usr/share/hostmove/grafana/hostmove-dashboard.json 2>/dev/null; then
  echo "ok: Grafana dashboard installed"
else
  echo "FAIL: /usr/share/hostmove/grafana/hostmove-dashboard.json"; fail=1
fi
for f in /etc/hostmove/migrator.env /etc/hostmove/migrator.toml /etc/hostmove/sql-proxy.toml.example /etc/hostmove/tunnel.toml.example \
         /etc/hostmove/sites.json.example /usr/share/doc/hostmove-migrator/site-spec.schema.json; do
  [ -f "$f" ] || { echo "FAIL: $f not installed"; fail=1; }
done
exit $fail
