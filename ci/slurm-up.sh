#!/usr/bin/env bash
# Start a single-node SLURM cluster on loopback for the CI test of the SLURM profile (tests/test_slurm.py).
#
#   ci/slurm-up.sh          # as root; prints the state folder and the log paths
#   snakemake --profile profiles/slurm-ci --configfile config/ci_slurm.yaml
#   ci/slurm-down.sh        # stops every daemon this script started, by PID file
#
# Needs root on Debian (12) or a derivative: installs Debian's slurm-wlm and munge with apt-get when they
# are missing. Everything of the cluster (slurm.conf, state, spool, PID files, logs) lives in one fresh
# state folder under $TMPDIR (default /tmp); its path is written to $FSSEG_SLURM_STATE_FILE (default
# /tmp/fsseg-slurm-ci.path), which ci/slurm-down.sh and the tests read. Outside it, this script only
# adds its host name to /etc/hosts if it does not resolve, creates /run/munge, and links
# /etc/slurm/slurm.conf to the state folder's config (see below why; an existing real config there
# makes it stop with an error instead).
#
# SLURM 22.05 of Debian 12 without an accounting database: `sacct` does not work, so the profiles
# poll with squeue, which sees a finished job for MinJobAge seconds only (kept at 300 here).
set -euo pipefail

STATE_FILE=${FSSEG_SLURM_STATE_FILE:-/tmp/fsseg-slurm-ci.path}
WAIT_SECONDS=${FSSEG_SLURM_WAIT_SECONDS:-60}   # bound on every wait below

say() { echo "slurm-up: $*"; }
die() { echo "slurm-up: ERROR: $*" >&2; exit 1; }

# A PID file's process is alive (and is the program we expect, not a recycled PID).
alive() {
    local pidfile=$1 name=$2 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm ]] && [[ $(</proc/"$pid"/comm) == "$name" ]]
}

[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, runs munged as user munge, slurmd as root)"

# --- an already running cluster of ours is reused -------------------------------------------------
if [[ -s $STATE_FILE ]]; then
    old=$(<"$STATE_FILE")
    if alive "$old/slurmctld.pid" slurmctld && alive "$old/slurmd.pid" slurmd; then
        say "a cluster started by this script is already running (state folder $old); reusing it"
        say "config: $old/slurm.conf (linked from /etc/slurm/slurm.conf)"
        exit 0
    fi
    die "$STATE_FILE names $old but its daemons are not running; run ci/slurm-down.sh first"
fi

# --- packages -------------------------------------------------------------------------------------
need_install=0
for program in slurmctld slurmd sbatch squeue sinfo scancel munged munge unmunge; do
    command -v "$program" >/dev/null 2>&1 || need_install=1
done
if [[ $need_install -eq 1 ]]; then
    command -v apt-get >/dev/null 2>&1 || die "slurm-wlm/munge are missing and apt-get is not available"
    export DEBIAN_FRONTEND=noninteractive
    # The packages' init scripts must not start daemons with the default /etc/slurm config: deny
    # service starts during the install (Docker images already ship such a policy-rc.d).
    own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        own_policy=1
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    say "installing slurm-wlm and munge with apt-get (log: /tmp/fsseg-slurm-apt.log)"
    if ! apt-get install -y -q slurm-wlm munge >/tmp/fsseg-slurm-apt.log 2>&1; then
        say "apt-get install failed without an index update; running apt-get update and retrying"
        apt-get update -q >>/tmp/fsseg-slurm-apt.log 2>&1 \
            || die "apt-get update failed; see /tmp/fsseg-slurm-apt.log"
        apt-get install -y -q slurm-wlm munge >>/tmp/fsseg-slurm-apt.log 2>&1 \
            || die "apt-get install slurm-wlm munge failed; see /tmp/fsseg-slurm-apt.log"
    fi
    if (( own_policy )); then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
fi
say "$(slurmctld -V), $(munged -V 2>&1 | head -n 1)"

# --- the node name must resolve (slurmd looks itself up by it) -------------------------------------
node=$(hostname -s)
if ! getent hosts "$node" >/dev/null; then
    say "adding '127.0.0.1 $node' to /etc/hosts"
    echo "127.0.0.1 $node" >> /etc/hosts
fi

# --- /etc/slurm/slurm.conf ------------------------------------------------------------------------
# The client commands would find the cluster through SLURM_CONF, but the plugin's job-step runner
# (snakemake-executor-plugin-slurm-jobstep) drops every SLURM_* variable before its nested `srun`,
# which then only reads the compiled-in default /etc/slurm/slurm.conf. So that path becomes a link to
# our config (below); a real config there, or anything but a link left by this script, is never touched.
DEFAULT_CONF=/etc/slurm/slurm.conf
if [[ -e $DEFAULT_CONF || -L $DEFAULT_CONF ]]; then
    target=$(readlink "$DEFAULT_CONF" || true)
    if [[ $target != */fsseg-slurm.*/slurm.conf ]]; then
        die "$DEFAULT_CONF exists and is not a link made by this script; refusing to replace a real" \
            "cluster's config (the workflow's jobs need their srun to find this cluster's config there)"
    fi
fi

# --- state folder ---------------------------------------------------------------------------------
state=$(mktemp -d "${TMPDIR:-/tmp}/fsseg-slurm.XXXXXX")
chmod 755 "$state"              # munged (user munge) must reach its own subfolder
mkdir -p "$state/ctld" "$state/spool" "$state/munge"
chown munge:munge "$state/munge"
chmod 700 "$state/munge"
echo "$state" > "$STATE_FILE"
say "state folder $state (recorded in $STATE_FILE)"

# --- munge: reuse a working munged, else start our own --------------------------------------------
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munge already works (a munged not started by this script); using it"
else
    install -d -o munge -g munge -m 755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        install -d -o munge -g munge -m 700 /etc/munge
        runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    fi
    # --force: the state folder sits under world-writable /tmp, which munged otherwise rejects
    runuser -u munge -- munged --force --pid-file="$state/munge/munged.pid" \
        --log-file="$state/munge/munged.log" \
        || die "munged did not start; see $state/munge/munged.log"
    for _ in $(seq 1 "$((WAIT_SECONDS * 10))"); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n | unmunge >/dev/null || die "munge -n | unmunge fails; see $state/munge/munged.log"
    say "munged started (pid $(<"$state/munge/munged.pid"))"
fi

# --- slurm.conf -----------------------------------------------------------------------------------
cpus=4                                                   # overcommit 2 cores: small jobs run side by side
memory=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)   # MB, as `free -m` says
cat > "$state/slurm.conf" <<EOF
# Written by ci/slurm-up.sh: a single-node cluster on loopback for CI, everything under $state.
ClusterName=fsseg-ci
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
# squeue (the CI profile's status command) sees a finished job for MinJobAge seconds only
MinJobAge=300
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$state/slurm.conf

# The default config path points at ours (checked above that nothing else lives there).
mkdir -p /etc/slurm
ln -sfn "$SLURM_CONF" "$DEFAULT_CONF"

# --- daemons (they fork into the background and write their PID files) ---------------------------
slurmctld -f "$SLURM_CONF" || die "slurmctld did not start; see $state/slurmctld.log"
slurmd -f "$SLURM_CONF" || die "slurmd did not start; see $state/slurmd.log"

deadline=$((SECONDS + WAIT_SECONDS))
node_state=""
until [[ $node_state == idle ]]; do
    if (( SECONDS > deadline )); then
        die "node $node is not idle after ${WAIT_SECONDS}s (state '${node_state:-none}'); logs:" \
            "$state/slurmctld.log $state/slurmd.log; stop the rest with ci/slurm-down.sh"
    fi
    # a daemon writes its PID file a moment after forking; a written one must name a live process
    for daemon in slurmctld slurmd; do
        if [[ -s $state/$daemon.pid ]] && ! alive "$state/$daemon.pid" "$daemon"; then
            die "$daemon exited; see $state/$daemon.log"
        fi
    done
    sleep 0.2
    node_state=$(sinfo -h -N -n "$node" -o %T 2>/dev/null | head -n 1 || true)
done

say "slurmctld pid $(<"$state/slurmctld.pid"), slurmd pid $(<"$state/slurmd.pid"); node $node idle"
say "logs: $state/slurmctld.log $state/slurmd.log"
say "config: $SLURM_CONF (linked from $DEFAULT_CONF, so sbatch/squeue/sinfo find it without SLURM_CONF)"
