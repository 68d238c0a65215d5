#!/usr/bin/env bash
# Builds the gradebook:latest image.
#   docker/build-image.sh online    multi-stage build from source (pulls rust:1-bookworm)
#   docker/build-image.sh offline   cargo build on the host, then FROM scratch (pulls nothing)
# Both give the same layout: /usr/local/bin/gradebook, its shared libraries,
# user 10001, /data/{grading,log}.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-offline}
image=${IMAGE:-gradebook:latest}
case "$mode" in
online)
    docker build -t "$image" .
    ;;
offline)
    cargo build --release --locked
    context=$(mktemp -d)
    trap 'rm -rf "$context"' EXIT
    docker/make-rootfs.sh target/release/gradebook "$context/rootfs"
    docker build -t "$image" -f docker/runtime.Dockerfile "$context"
    ;;
*)
    echo "usage: $0 online|offline" >&2
    exit 2
    ;;
esac
docker image ls "$image"
