#!/usr/bin/env bash
# Lays out the PostgreSQL image's filesystem in ROOTFS from Debian's
# `postgresql` package installed on the host (the newest
# /usr/lib/postgresql/*/): the server binaries the container runs (postgres,
# initdb, pg_isready), the share files initdb reads, the few loadable modules
# a fresh cluster uses, the time zone data, Debian's dash as /bin/sh (initdb
# runs `postgres` through popen, and the entrypoint is a small shell script)
# with rm and mv, the shared libraries all of these link (from ldd, with the
# loader), a non-root `postgres` user (10002) and its data directory.
# docker/build-image.sh offline runs it, then docker/postgres.Dockerfile.
set -euo pipefail
rootfs=${1:?usage: make-postgres-rootfs.sh ROOTFS}
here=$(cd "$(dirname "$0")" && pwd)

# The newest installed major version.
pg=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null \
    | sed 's|^/usr/lib/postgresql/||; s|/bin/initdb$||' | sort -n | tail -1)
if [ -z "$pg" ]; then
    echo "make-postgres-rootfs.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2
    exit 1
fi
bin=/usr/lib/postgresql/$pg/bin
lib=/usr/lib/postgresql/$pg/lib
share=/usr/share/postgresql/$pg

rm -rf "$rootfs"
mkdir -p "$rootfs/bin" "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp" \
    "$rootfs$bin" "$rootfs$lib" "$rootfs$share" "$rootfs/usr/share" \
    "$rootfs/var/lib/postgresql" "$rootfs/var/run/postgresql"

# Executables: the server programs at Debian's paths (initdb finds postgres
# next to itself and the share directory relative to it), linked from
# /usr/local/bin for PATH; dash as /bin/sh; rm and mv for the entrypoint.
elves=()
for program in postgres initdb pg_isready; do
    install -m 0755 "$bin/$program" "$rootfs$bin/$program"
    ln -s "$bin/$program" "$rootfs/usr/local/bin/$program"
    elves+=("$bin/$program")
done
install -m 0755 /bin/dash "$rootfs/bin/sh"
install -m 0755 /bin/rm "$rootfs/bin/rm"
install -m 0755 /bin/mv "$rootfs/bin/mv"
elves+=(/bin/dash /bin/rm /bin/mv)

# Loadable modules a fresh cluster uses: PL/pgSQL, the snowball dictionaries
# initdb installs, the encoding conversions, logical and physical
# replication. Not the contrib modules, and not llvmjit (it links LLVM,
# ~100 MB; the entrypoint runs with jit=off).
for module in "$lib"/plpgsql.so "$lib"/dict_snowball.so "$lib"/*_and_*.so "$lib"/euc2004_sjis2004.so \
    "$lib"/libpqwalreceiver.so "$lib"/pgoutput.so; do
    install -m 0755 "$module" "$rootfs$lib/"
    elves+=("$module")
done

# Every shared library those link, at the same path, plus the loader.
"$(dirname "$0")/copy-libs.sh" "$rootfs" "${elves[@]}"
strip --strip-unneeded "$rootfs$bin"/* "$rootfs$lib"/*.so 2>/dev/null || true

# What initdb and the server read under the share directory: the catalog
# (postgres.bki, the *.sql files), the configuration samples, time zone
# abbreviations, text search data, and PL/pgSQL's extension files only.
cp -a "$share"/. "$rootfs$share/"
rm -rf "$rootfs$share/man" "$rootfs$share/contrib" "$rootfs$share/extension"
mkdir -p "$rootfs$share/extension"
cp -a "$share"/extension/plpgsql* "$rootfs$share/extension/"
# Debian builds PostgreSQL with --with-system-tzdata: the zone files.
cp -a /usr/share/zoneinfo "$rootfs/usr/share/zoneinfo"

install -m 0755 "$here/postgres-entrypoint.sh" "$rootfs/usr/local/bin/postgres-entrypoint"

cat > "$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
postgres:x:10002:10002:PostgreSQL:/var/lib/postgresql:/sbin/nologin
PASSWD
cat > "$rootfs/etc/group" <<'GROUP'
root:x:0:
postgres:x:10002:
GROUP
printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
chmod 1777 "$rootfs/tmp"
# The named volume starts as a copy of /var/lib/postgresql, so the server
# (uid 10002) owns it. The socket directory is world-writable and sticky,
# like /tmp (COPY gives files to root; one --chown COPY is enough).
chmod 0700 "$rootfs/var/lib/postgresql"
chmod 1777 "$rootfs/var/run/postgresql"
chown -R 10002:10002 "$rootfs/var/lib/postgresql"
