#!/usr/bin/env bash
# Stop the single-node CI cluster that .ci/slurm_up.sh started: slurmd, slurmctld, munged,
# each by the pid in its pid file (never by name). Safe to run when nothing is running.
set -uo pipefail

RUN=/run/lus-slurm

stop() { # name pidfile
    local name=$1 pidfile=$2 pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "slurm_down: $name ($pid) ignored SIGTERM, killing" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
        echo "slurm_down: stopped $name ($pid)" >&2
    fi
    rm -f "$pidfile"
}

# jobs still running would be orphaned: cancel them while the controller answers
if [ -s "$RUN/slurmctld.pid" ] && kill -0 "$(cat "$RUN/slurmctld.pid")" 2>/dev/null; then
    timeout 10 scancel --full --state=RUNNING --user=root 2>/dev/null || true
    timeout 10 scancel --state=PENDING --user=root 2>/dev/null || true
fi
stop slurmd "$RUN/slurmd.pid"
stop slurmctld "$RUN/slurmctld.pid"
stop munged "$RUN/munged.pid"
exit 0
