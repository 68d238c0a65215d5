#!/usr/bin/env bash
# End-to-end test of the Swarm stack (docker/gradebook-stack.yml) on a
# one-node swarm, offline, with locally built images: deploys the stack
# with grading at tag swarm-1 and waits until every daemon is healthy;
# while a reader reads a student's page through the portal and counts
# every failed read, deploys tag swarm-2 (a rolling, start-first update of
# grading's three replicas) and waits until all three run it; then deploys
# tag swarm-broken, whose health check fails, and waits until Swarm has
# rolled the service back on its own to swarm-2. Asserts counts: 0 failed
# reads, three healthy grading tasks on the right tag after each step.
# Needs gradebook:latest and gradebook-postgres:latest
# (docker/build-image.sh offline). Joins the machine to a swarm only if it
# is in none, and leaves it again; always cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
stack=${STACK:-gradebook-swarm}
file=docker/gradebook-stack.yml
grading_service=${stack}_grading
passed=0
certs=$(mktemp -d)
reads_log=$(mktemp)
reader_pid=
made_swarm=false

stack_containers() { docker ps -aq --filter "label=com.docker.stack.namespace=$stack"; }
no_containers() { [ -z "$(stack_containers)" ]; }

# shellcheck source=docker/poll.sh
source docker/poll.sh

cleanup() {
    if [ -n "$reader_pid" ]; then kill "$reader_pid" 2>/dev/null || true; fi
    docker stack rm "$stack" >/dev/null 2>&1 || true
    until_true 90 no_containers || true
    docker volume ls -q --filter "label=com.docker.stack.namespace=$stack" | xargs -r docker volume rm >/dev/null 2>&1 || true
    docker image rm gradebook:swarm-1 gradebook:swarm-2 gradebook:swarm-broken >/dev/null 2>&1 || true
    if $made_swarm; then docker swarm leave --force >/dev/null 2>&1 || true; fi
    rm -rf "$certs" "$reads_log"
}
fail() {
    echo "FAILED: $*"
    docker service ls --filter "label=com.docker.stack.namespace=$stack" || true
    docker service ps --no-trunc "$grading_service" 2>/dev/null | head -20 || true
    docker service logs --raw --tail 40 "$grading_service" 2>/dev/null || true
    cleanup
    echo "swarm e2e: $passed passed, 1 failed"
    exit 1
}
trap cleanup EXIT

step_started=0
step() { step_started=$(date +%s%N); echo "== $1"; }
done_step() {
    passed=$((passed + 1))
    echo "   ok in $(( ($(date +%s%N) - step_started) / 1000000 )) ms"
}

deploy() {
    local out
    out=$(GRADING_IMAGE=$1 docker stack deploy --resolve-image never -c "$file" "$stack" 2>&1) || { echo "$out"; return 1; }
}
# The images of grading's healthy tasks, sorted, one per line.
healthy_grading() {
    docker ps --filter "label=com.docker.swarm.service.name=$grading_service" --filter health=healthy --format '{{.Image}}' | sort
}
# Whether exactly three grading tasks run, all healthy, all on image $1.
grading_on() {
    [ "$(healthy_grading | tr '\n' ' ')" = "$1 $1 $1 " ] &&
        [ "$(docker ps -q --filter "label=com.docker.swarm.service.name=$grading_service" | wc -l)" = 3 ]
}
update_state() { docker service inspect "$grading_service" --format '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}'; }
update_is() { [ "$(update_state)" = "$1" ]; }
# Every daemon's container healthy: three registries, two logs, three
# grading, PostgreSQL and the portal.
all_healthy() {
    [ "$(docker ps -q --filter "label=com.docker.stack.namespace=$stack" --filter health=healthy | wc -l)" = 10 ]
}

step "a one-node swarm, and grading's images: two good tags and one whose health check fails"
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null || fail "docker swarm init"
    made_swarm=true
fi
for tag in 1 2; do
    printf 'FROM gradebook:latest\nLABEL org.opencontainers.image.version=swarm-%s\n' "$tag" |
        docker build -q -t "gradebook:swarm-$tag" - >/dev/null 2>&1 || fail "build gradebook:swarm-$tag"
done
printf '%s\n' 'FROM gradebook:latest' 'LABEL org.opencontainers.image.version=swarm-broken' \
    'HEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD ["/usr/local/bin/gradebook", "health-check", "127.0.0.1:1"]' |
    docker build -q -t gradebook:swarm-broken - >/dev/null 2>&1 || fail "build gradebook:swarm-broken"
done_step

step "docker stack deploy with grading at swarm-1; wait until every daemon is healthy"
deploy gradebook:swarm-1 || fail "stack deploy"
until_true 240 all_healthy || fail "not every daemon became healthy"
grading_on gradebook:swarm-1 || fail "grading does not run swarm-1 three times"
done_step

step "the portal answers through the mesh; a reader starts counting reads"
portal_container=$(docker ps -q --filter "label=com.docker.swarm.service.name=${stack}_portal" | head -1)
docker cp "$portal_container:/data/certs/." "$certs" >/dev/null 2>&1 || fail "copy the certificates out"
token=$(docker exec "$portal_container" /usr/local/bin/gradebook users token admin --data-dir /data) || fail "users token"
api() { curl -sf --max-time 5 --cacert "$certs/ca.crt" -H "Authorization: Bearer $token" "$@"; }
until_true 60 api https://localhost:8080/api/students || fail "the portal does not list students"
student=$(api https://localhost:8080/api/students | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
[ -n "$student" ] || fail "no student"
grade=$(api -X POST -H 'Content-Type: application/json' -H "Idempotency-Key: swarm-$(date +%s%N)" \
    -d '{"title":"Swarm quiz","type":"quiz","score":91}' "https://localhost:8080/api/students/$student/grades") || fail "add a grade"
grep '"title":"Swarm quiz"' <<<"$grade" >/dev/null || fail "the grade was not acknowledged: $grade"
(
    while true; do
        body=$(curl -s --max-time 5 --cacert "$certs/ca.crt" -H "Authorization: Bearer $token" \
            -w '\n%{http_code}' "https://localhost:8080/api/students/$student") || true
        status=${body##*$'\n'}
        if [ "$status" = 200 ] && grep 'Swarm quiz' <<<"$body" >/dev/null; then
            echo ok
        else
            echo "failed HTTP $status ${body%$'\n'*}" | cut -c1-200
        fi
        sleep 0.05
    done
) >>"$reads_log" &
reader_pid=$!
until_true 30 grep -q . "$reads_log" || fail "the reader read nothing"
done_step

step "a rolling update to swarm-2 (start-first, one task at a time)"
deploy gradebook:swarm-2 || fail "stack deploy of swarm-2"
until_true 300 update_is completed || fail "the update to swarm-2 did not complete (state: $(update_state))"
until_true 60 grading_on gradebook:swarm-2 || fail "grading does not run swarm-2 three times: $(healthy_grading | tr '\n' ' ')"
done_step

step "an update to swarm-broken, whose health check fails, rolls back to swarm-2 on its own"
deploy gradebook:swarm-broken || fail "stack deploy of swarm-broken"
until_true 300 update_is rollback_completed || fail "no rollback (state: $(update_state))"
message=$(docker service inspect "$grading_service" --format '{{.UpdateStatus.Message}}')
echo "   swarm: $message"
image=$(docker service inspect "$grading_service" --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}')
[ "$image" = gradebook:swarm-2 ] || fail "the service's image is $image after the rollback"
until_true 60 grading_on gradebook:swarm-2 || fail "grading does not run swarm-2 three times after the rollback: $(healthy_grading | tr '\n' ' ')"
done_step

step "no read failed through the updates and the rollback"
kill "$reader_pid" 2>/dev/null || true
wait "$reader_pid" 2>/dev/null || true
reader_pid=
reads=$(grep -c . "$reads_log" || true)
failed=$(grep -c '^failed' "$reads_log" || true)
echo "   $reads reads, $failed failed"
grep '^failed' "$reads_log" | head -5 || true
[ "$reads" -gt 0 ] || fail "no reads"
[ "$failed" = 0 ] || fail "$failed of $reads reads failed"
done_step

echo "swarm e2e: $passed passed, 0 failed"
