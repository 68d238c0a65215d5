#!/usr/bin/env bash
# Lays out the runtime image's filesystem in ROOTFS from a built gradebook
# BINARY: the binary, the shared libraries it links (from ldd), a non-root
# user, and the data directories. Both image builds (online and offline) use
# it, so both images have exactly this layout.
set -euo pipefail
binary=${1:?usage: make-rootfs.sh BINARY ROOTFS}
rootfs=${2:?usage: make-rootfs.sh BINARY ROOTFS}

rm -rf "$rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/data/grading" "$rootfs/data/log" "$rootfs/data/certs" "$rootfs/data/portal"
install -m 0755 "$binary" "$rootfs/usr/local/bin/gradebook"
command -v strip >/dev/null && strip "$rootfs/usr/local/bin/gradebook"

# Every shared library the binary needs, at the same path, plus the loader.
"$(dirname "$0")/copy-libs.sh" "$rootfs" "$binary"

cat > "$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
gradebook:x:10001:10001:gradebook:/data:/sbin/nologin
PASSWD
cat > "$rootfs/etc/group" <<'GROUP'
root:x:0:
gradebook:x:10001:
GROUP
echo "hosts: files dns" > "$rootfs/etc/nsswitch.conf"
chmod 1777 "$rootfs/tmp"
# Named volumes start as a copy of these, so the daemons can write them.
chown -R 10001:10001 "$rootfs/data"
# The certificates' directory: its owner only.
chmod 0700 "$rootfs/data/certs"
