# Sourced by docker/e2e.sh and docker/swarm-e2e.sh: polling with a deadline.

# Polls `$@` until it succeeds, for at most $1 seconds.
until_true() {
    local patience=$1; shift
    local deadline=$(( $(date +%s) + patience ))
    until "$@" >/dev/null 2>&1; do
        (( $(date +%s) < deadline )) || return 1
        sleep 0.25
    done
}
