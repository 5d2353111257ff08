#!/usr/bin/env bash
# Builds the Debian packages, one per role, into target/debian/:
#   hostmove-migrator   migrator; units migrator-serve, migrator-lease-watch
#   hostmove-sql-proxy  sql-proxy; unit sql-proxy (system user sql-proxy)
#   hostmove-tunnel     tunnel; unit tunnel
# each with its man pages and bash/zsh completions (generated from the binary's own clap
# definition: `<binary> generate-docs --out DIR`), an example config in /etc/hostmove/ and the
# runbooks. Release builds, `--version` naming the commit (HOSTMOVE_COMMIT).
# Needs: cargo, dpkg-deb, gzip (Debian's dpkg and gzip packages). Usage: scripts/package.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export HOSTMOVE_COMMIT="${HOSTMOVE_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}"
version="$(cargo metadata --no-deps --format-version 1 \
  | sed -n 's/.*"name":"migrator","version":"\([^"]*\)".*/\1/p')"
version="${version:-0.1.0}"
arch="$(dpkg --print-architecture)"
out="target/debian"
# Only this build's packages: check-packages.sh installs every .deb found here, and an older
# build's left beside them would be installed over these.
rm -f "$out"/hostmove-*.deb
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "package: building release binaries (commit $HOSTMOVE_COMMIT)"
cargo build --release --locked -p migrator -p sql-proxy -p tunnel --bins

mkdir -p "$out"
# make_pkg PACKAGE BINARY DESCRIPTION DEPENDS
make_pkg() {
  local pkg="$1" bin="$2" desc="$3" depends="$4"
  local root="$work/$pkg"
  mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/man/man1" \
    "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
    "$root/lib/systemd/system" "$root/etc/hostmove" "$root/usr/share/doc/$pkg"
  # Stripped, as Debian ships binaries (the release profile keeps line tables for benchmarks).
  install -s -m 0755 "target/release/$bin" "$root/usr/bin/$bin"
  local docs="$work/docs-$bin"
  "target/release/$bin" generate-docs --out "$docs" >/dev/null
  for page in "$docs"/man/*.1; do
    gzip -9n < "$page" > "$root/usr/share/man/man1/$(basename "$page").gz"
  done
  install -m 0644 "$docs/completions/$bin.bash" "$root/usr/share/bash-completion/completions/$bin"
  install -m 0644 "$docs/completions/_$bin" "$root/usr/share/zsh/vendor-completions/_$bin"
  install -m 0644 LICENSE "$root/usr/share/doc/$pkg/copyright" 2>/dev/null \
    || printf 'Apache-2.0\n' > "$root/usr/share/doc/$pkg/copyright"
  install -m 0644 README.md "$root/usr/share/doc/$pkg/README.md"
  cat > "$root/DEBIAN/control" <<CONTROL
Package: $pkg
Version: $version+git$HOSTMOVE_COMMIT
Architecture: $arch
Maintainer: hostmove developers <hostmove@localhost>
Depends: $depends
Section: admin
Priority: optional
Homepage: https://localhost/hostmove
Description: $desc
 Part of hostmove, the toolkit that moves a shared-hosting platform between
 datacenters while the sites keep running.
CONTROL
}

conffiles() { # PACKAGE FILE...
  local pkg="$1"; shift
  printf '%s\n' "$@" > "$work/$pkg/DEBIAN/conffiles"
}

# --- migrator
make_pkg hostmove-migrator migrator "operator CLI and engine of hostmove (waves, cutover, dashboard)" \
  "libc6, openssh-client"
install -m 0644 packaging/units/migrator-serve.service packaging/units/migrator-lease-watch.service \
  "$work/hostmove-migrator/lib/systemd/system/"
install -m 0644 packaging/etc/migrator.env "$work/hostmove-migrator/etc/hostmove/migrator.env"
install -m 0644 packaging/etc/migrator.toml "$work/hostmove-migrator/etc/hostmove/migrator.toml"
# The site spec: an example using every field (copy it to /etc/hostmove/sites.json) and its
# JSON schema (also printed by `migrator site schema --json`)
install -m 0644 packaging/etc/sites.example.json "$work/hostmove-migrator/etc/hostmove/sites.json.example"
install -m 0644 docs/site-spec.schema.json "$work/hostmove-migrator/usr/share/doc/hostmove-migrator/site-spec.schema.json"
mkdir -p "$work/hostmove-migrator/usr/share/doc/hostmove-migrator/runbooks"
install -m 0644 runbooks/*.md "$work/hostmove-migrator/usr/share/doc/hostmove-migrator/runbooks/"
conffiles hostmove-migrator /etc/hostmove/migrator.env /etc/hostmove/migrator.toml
# Monitoring: Prometheus alert rules and the Grafana dashboard of a campaign (every component)
mkdir -p "$work/hostmove-migrator/usr/share/hostmove/prometheus" "$work/hostmove-migrator/usr/share/hostmove/grafana"
install -m 0644 packaging/prometheus/hostmove-alerts.yml "$work/hostmove-migrator/usr/share/hostmove/prometheus/"
install -m 0644 packaging/grafana/hostmove-dashboard.json "$work/hostmove-migrator/usr/share/hostmove/grafana/"

# --- sql-proxy: the packaged unit is the repository's, with the packaged paths
make_pkg hostmove-sql-proxy sql-proxy "MySQL wire-protocol proxy keeping old database endpoints answering" \
  "libc6, adduser"
sed -e 's|/usr/local/bin/sql-proxy|/usr/bin/sql-proxy|g' \
    -e 's|--config /etc/sql-proxy/proxy.toml|--config /etc/hostmove/sql-proxy.toml|' \
    -e 's|/usr/local/share/doc/hostmove/sql-proxy-restarts.md|/usr/share/doc/hostmove-sql-proxy/sql-proxy-restarts.md|' \
    sql-proxy/dist/sql-proxy.service > "$work/hostmove-sql-proxy/lib/systemd/system/sql-proxy.service"
install -m 0644 packaging/etc/sql-proxy.toml "$work/hostmove-sql-proxy/etc/hostmove/sql-proxy.toml.example"
install -m 0644 sql-proxy/README.md runbooks/sql-proxy-restarts.md "$work/hostmove-sql-proxy/usr/share/doc/hostmove-sql-proxy/"
cat > "$work/hostmove-sql-proxy/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && ! getent passwd sql-proxy >/dev/null; then
  adduser --system --group --quiet --no-create-home --home /var/lib/sql-proxy sql-proxy >/dev/null 2>&1
fi
exit 0
POSTINST
chmod 0755 "$work/hostmove-sql-proxy/DEBIAN/postinst"

# --- tunnel
make_pkg hostmove-tunnel tunnel "WireGuard links between datacenters (kernel or wireguard-go)" \
  "libc6, wireguard-tools, iproute2"
install -m 0644 packaging/units/tunnel.service packaging/units/tunnel-check.service \
  packaging/units/tunnel-check.timer "$work/hostmove-tunnel/lib/systemd/system/"
install -m 0644 packaging/etc/tunnel.toml "$work/hostmove-tunnel/etc/hostmove/tunnel.toml.example"
install -m 0644 tunnel/README.md "$work/hostmove-tunnel/usr/share/doc/hostmove-tunnel/README.md"

for pkg in hostmove-migrator hostmove-sql-proxy hostmove-tunnel; do
  find "$work/$pkg" -type d -exec chmod 0755 {} +
  dpkg-deb --root-owner-group --build "$work/$pkg" "$out/${pkg}_${version}+git${HOSTMOVE_COMMIT}_${arch}.deb" >/dev/null
  echo "package: $out/${pkg}_${version}+git${HOSTMOVE_COMMIT}_${arch}.deb"
done
