#!/usr/bin/env bash
# Builds the three images the Compose file runs:
#   gradebook:latest              (IMAGE)             the four daemons
#   gradebook-postgres:latest     (POSTGRES_IMAGE)    PostgreSQL for grading
#   gradebook-prometheus:latest   (PROMETHEUS_IMAGE)  Prometheus, scraping them all
#   docker/build-image.sh online    gradebook: multi-stage build from source (pulls rust:1-bookworm)
#   docker/build-image.sh offline   gradebook: cargo build on the host, then FROM scratch (pulls nothing)
# Both give the same gradebook layout: /usr/local/bin/gradebook, its shared
# libraries, user 10001, /data/{grading,log}. The PostgreSQL image is built
# the offline way in both modes: FROM scratch, from Debian's postgresql
# package on the host (docker/make-postgres-rootfs.sh; user 10002), and so
# is the Prometheus image, from Debian's prometheus package
# (docker/make-prometheus-rootfs.sh; user 10001, to read the certs volume).
# The offline build takes the binary from $CARGO_TARGET_DIR/release
# (default target/release).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-offline}
image=${IMAGE:-gradebook:latest}
postgres_image=${POSTGRES_IMAGE:-gradebook-postgres:latest}
prometheus_image=${PROMETHEUS_IMAGE:-gradebook-prometheus:latest}
target_dir=${CARGO_TARGET_DIR:-target}
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
case "$mode" in
online)
    docker build -t "$image" .
    ;;
offline)
    cargo build --release --locked
    docker/make-rootfs.sh "$target_dir/release/gradebook" "$context/gradebook/rootfs"
    docker build -t "$image" -f docker/runtime.Dockerfile "$context/gradebook"
    ;;
*)
    echo "usage: $0 online|offline" >&2
    exit 2
    ;;
esac
docker/make-postgres-rootfs.sh "$context/postgres/rootfs"
docker build -t "$postgres_image" -f docker/postgres.Dockerfile "$context/postgres"
docker/make-prometheus-rootfs.sh "$context/prometheus"
docker build -t "$prometheus_image" -f docker/prometheus.Dockerfile "$context/prometheus"
docker image ls "$image"
docker image ls "$postgres_image"
docker image ls "$prometheus_image"
