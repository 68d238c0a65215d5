#!/usr/bin/env bash
# Lays out the Prometheus image's filesystem in CONTEXT from Debian's
# `prometheus` package installed on the host (apt-get install prometheus).
# CONTEXT/rootfs: /usr/bin/prometheus, the shared libraries it links (from
# ldd, with the loader), the classic web UI it serves from
# /usr/share/prometheus/web, the compose stack's configuration
# (docker/prometheus.yml) at /etc/prometheus/prometheus.yml and a non-root
# `prometheus` user. CONTEXT/data: its data directory /prometheus, apart
# because the Dockerfile copies it with --chown, which reaches only what is
# inside the source directory (COPY gives the rest to root). The user is
# uid 10001, the daemons' uid, so that it can read the `certs` volume (a
# 0700 directory of that uid) for its mutual TLS identity.
# docker/build-image.sh runs it, then docker/prometheus.Dockerfile.
set -euo pipefail
context=${1:?usage: make-prometheus-rootfs.sh CONTEXT}
here=$(cd "$(dirname "$0")" && pwd)

if [ ! -x /usr/bin/prometheus ]; then
    echo "make-prometheus-rootfs.sh: Prometheus is not installed (apt-get install prometheus)" >&2
    exit 1
fi
web=/usr/share/prometheus/web

rootfs=$context/rootfs
rm -rf "$rootfs" "$context/data"
mkdir -p "$rootfs/usr/bin" "$rootfs/etc/prometheus" "$rootfs/tmp" "$rootfs$web/static" \
    "$context/data/prometheus"

install -m 0755 /usr/bin/prometheus "$rootfs/usr/bin/prometheus"
# Every shared library it links, at the same path, plus the loader.
"$here/copy-libs.sh" "$rootfs" /usr/bin/prometheus

# The classic web UI, at the path the Debian build reads it from: the
# templates, Prometheus' own static files, and of the JavaScript libraries
# (symlinks into /usr/share/javascript, some of them large: moment-timezone's
# data is 200 MB) only the files the templates load.
cp -a "$web/templates" "$rootfs$web/templates"
for entry in "$web"/static/*; do
    if [ -L "$entry" ]; then
        grep -rhoE "static/$(basename "$entry")/[^\"?]+" "$web/templates" | sort -u | while read -r file; do
            install -D -m 0644 "$web/$file" "$rootfs$web/$file"
        done
    else
        cp -rL "$entry" "$rootfs$web/static/"
    fi
done

install -m 0644 "$here/prometheus.yml" "$rootfs/etc/prometheus/prometheus.yml"

cat > "$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
prometheus:x:10001:10001:Prometheus:/prometheus:/sbin/nologin
PASSWD
cat > "$rootfs/etc/group" <<'GROUP'
root:x:0:
prometheus:x:10001:
GROUP
echo "hosts: files dns" > "$rootfs/etc/nsswitch.conf"
chmod 1777 "$rootfs/tmp"
# The named volume starts as a copy of /prometheus, so Prometheus (uid
# 10001) owns its data.
chmod 0700 "$context/data/prometheus"
