#!/usr/bin/env bash
# End-to-end test of the container stack with the real Docker engine and
# Compose v2: builds the image offline, starts the stack, checks it with
# grpcurl and the portal's JSON API, kills grading's process with SIGKILL from
# the host (so the restart policy applies, as to a crash), restarts the whole
# stack, and checks the grade is still there. Prints how long each step took,
# dumps the containers' logs when a step fails, and always cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-gradebook-e2e}
passed=0

cleanup() { docker compose down -v --remove-orphans >/dev/null 2>&1 || true; }
fail() {
    echo "FAILED: $*"
    docker compose ps -a || true
    docker compose logs --no-color --tail 100 || true
    cleanup
    echo "e2e: $passed passed, 1 failed"
    exit 1
}
trap cleanup EXIT

step_started=0
step() { step_name=$1; step_started=$(date +%s%N); echo "== $step_name"; }
done_step() {
    passed=$((passed + 1))
    echo "   ok in $(( ($(date +%s%N) - step_started) / 1000000 )) ms"
}

# Polls `$@` until it succeeds, for at most $1 seconds.
until_true() {
    local patience=$1; shift
    local deadline=$(( $(date +%s) + patience ))
    until "$@" >/dev/null 2>&1; do
        (( $(date +%s) < deadline )) || return 1
        sleep 0.25
    done
}

healthy_count() { docker compose ps --format '{{.Service}} {{.Health}}' | grep -c ' healthy$' || true; }
all_healthy() { [ "$(healthy_count)" = 4 ]; }
api() { curl -sf --max-time 5 "http://127.0.0.1:8080/api$1"; }

cleanup
step "build the image offline (cargo on the host, FROM scratch)"
docker/build-image.sh offline >/dev/null || fail "image build"
done_step

step "docker compose up -d; wait until every container is healthy"
docker compose up -d --no-build >/dev/null 2>&1 || fail "compose up"
until_true 120 all_healthy || fail "not every container became healthy"
done_step

step "containers run as a non-root user and log to stdout"
for service in registry log grading portal; do
    id=$(docker compose ps -q "$service")
    [ "$(docker inspect -f '{{.Config.User}}' "$id")" = "10001:10001" ] || fail "$service runs as root"
    docker logs "$id" 2>/dev/null | grep "serving" >/dev/null || fail "$service does not log to stdout"
done
done_step

step "grpcurl from the host: list the registry's services, check every daemon's health"
grpcurl -plaintext 127.0.0.1:50051 list | grep -x gradebook.registry.v1.Registry >/dev/null || fail "registry reflection"
for port in 50051 50052 50053 8080; do
    grpcurl -plaintext "127.0.0.1:$port" grpc.health.v1.Health/Check | grep SERVING >/dev/null || fail "health of :$port"
done
listed=$(grpcurl -plaintext -d '{"include_unhealthy": true}' 127.0.0.1:50051 gradebook.registry.v1.Registry/List)
for address in registry:50051 log:50052 grading:50053 portal:8080; do
    grep "\"address\": \"$address\"" <<<"$listed" >/dev/null || fail "$address is not advertised: $listed"
done
done_step

step "add a grade through the portal's JSON API"
until_true 30 api /students || fail "portal API"
student=$(api /students | python3 -c 'import json,sys; print(json.load(sys.stdin)["students"][0]["id"])')
grade=$(curl -sf --max-time 5 -X POST -H 'content-type: application/json' \
    -d '{"title":"Container quiz","type":"quiz","score":88}' \
    "http://127.0.0.1:8080/api/students/$student/grades" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') \
    || fail "add a grade"
has_grade() { api "/students/$student" | grep "$grade" >/dev/null; }
has_grade || fail "the grade is not listed"
done_step

step "SIGKILL grading's process from the host; the restart policy brings it back"
container=$(docker compose ps -q grading)
restarts=$(docker inspect -f '{{.RestartCount}}' "$container")
pid=$(docker inspect -f '{{.State.Pid}}' "$container")
kill -9 "$pid"
restarted() { [ "$(docker inspect -f '{{.RestartCount}}' "$container")" -gt "$restarts" ]; }
until_true 60 restarted || fail "grading was not restarted"
until_true 60 all_healthy || fail "grading did not become healthy again"
until_true 30 has_grade || fail "the portal does not serve the grade after the restart"
done_step

step "docker compose restart; the grade is still there"
docker compose restart >/dev/null 2>&1 || fail "compose restart"
until_true 120 all_healthy || fail "not healthy after restart"
until_true 30 has_grade || fail "the grade is gone after a restart"
done_step

step "docker compose stop: every daemon exits 0 on SIGTERM within the stop timeout"
docker compose stop >/dev/null 2>&1 || fail "compose stop"
for service in registry log grading portal; do
    code=$(docker inspect -f '{{.State.ExitCode}}' "$(docker compose ps -aq "$service")")
    [ "$code" = 0 ] || fail "$service exited with $code on SIGTERM"
done
done_step

step "docker compose down -v"
docker compose down -v >/dev/null 2>&1 || fail "compose down"
[ -z "$(docker compose ps -q)" ] || fail "containers left"
done_step

echo "e2e: $passed passed, 0 failed"
