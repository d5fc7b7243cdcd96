#!/usr/bin/env bash
# Stop the single-node CI cluster started by ci/slurm-up.sh: cancel its jobs, then stop slurmd,
# slurmctld and (only if slurm-up.sh started it) munged, each by its PID file, and wait for them to
# exit. Never stops anything by name. Safe to call twice, or when slurm-up.sh failed half-way.
# The state folder (logs included) is kept for inspection; its path is printed.
set -euo pipefail

STATE_FILE=${FSSEG_SLURM_STATE_FILE:-/tmp/fsseg-slurm-ci.path}
WAIT_SECONDS=${FSSEG_SLURM_WAIT_SECONDS:-30}   # bound on each wait below

say() { echo "slurm-down: $*"; }

if [[ ! -s $STATE_FILE ]]; then
    say "no cluster recorded in $STATE_FILE; nothing to stop"
    exit 0
fi
state=$(<"$STATE_FILE")
export SLURM_CONF=$state/slurm.conf

# The PID of a PID file whose process is alive and is the program we expect (not a recycled PID).
live_pid() {
    local pidfile=$1 name=$2 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$name" ]] || return 1
    echo "$pid"
}

# Cancel every job of this (private) cluster first, so no job step outlives slurmd.
if live_pid "$state/slurmctld.pid" slurmctld >/dev/null; then
    job_ids=$(squeue -h -o %i 2>/dev/null || true)
    if [[ -n $job_ids ]]; then
        say "cancelling jobs: $(echo "$job_ids" | tr '\n' ' ')"
        # shellcheck disable=SC2086  # one argument per job id
        scancel $job_ids 2>/dev/null || true
        deadline=$((SECONDS + WAIT_SECONDS))
        while (( SECONDS < deadline )) && squeue -h -t PENDING,RUNNING,COMPLETING -o %i 2>/dev/null | grep -q .
        do
            sleep 0.5
        done
    fi
fi

# Stop one daemon by its PID file: SIGTERM, a bounded wait, then SIGKILL.
stop() {
    local pidfile=$1 name=$2 pid
    if ! pid=$(live_pid "$pidfile" "$name"); then
        say "$name: not running"
        return 0
    fi
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + WAIT_SECONDS))
    while [[ -e /proc/$pid ]] && (( SECONDS < deadline )); do
        sleep 0.2
    done
    if [[ -e /proc/$pid ]]; then
        say "$name (pid $pid) still running after ${WAIT_SECONDS}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    [[ ! -e /proc/$pid ]] || { echo "slurm-down: ERROR: could not stop $name (pid $pid)" >&2; return 1; }
}

status=0
stop "$state/slurmd.pid" slurmd || status=1
stop "$state/slurmctld.pid" slurmctld || status=1
stop "$state/munge/munged.pid" munged || status=1   # only exists when slurm-up.sh started munged

if (( status == 0 )); then
    # the link slurm-up.sh made from the default config path, if it still points at this cluster
    if [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$state/slurm.conf" ]]; then
        rm -f /etc/slurm/slurm.conf
    fi
    rm -f "$STATE_FILE"
    say "stopped; logs kept in $state (slurmctld.log, slurmd.log, munge/munged.log)"
else
    say "some daemons did not stop; $STATE_FILE kept so this script can be run again"
fi
exit "$status"
