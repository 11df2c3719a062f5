#!/usr/bin/env bash
# Start a real single-node SLURM cluster for CI: munged, slurmctld and slurmd as plain daemons
# (no systemd), one partition, no accounting. Installs Debian's packages when missing.
#
#   bash .ci/slurm_up.sh      # idempotent: a cluster that already answers is left as it is
#   bash .ci/slurm_down.sh    # stops the daemons this script started, by pid
#
# Must run as root. Writes /etc/slurm/slurm.conf (the job-step side of the Snakemake SLURM
# plugin drops SLURM_* variables, so a custom SLURM_CONF is not seen inside jobs).
# The node is `localhost` (slurmd -N localhost), so the machine's hostname does not matter.
# Accounting is off: sacct cannot answer, so workflows on this cluster must use
# `slurm-status-command: squeue` (profiles/slurm-ci does); MinJobAge keeps finished jobs
# visible to squeue and `scontrol show job` for an hour, and every finished job is written by
# slurmctld to the job-completion log $LUS_SLURM_LOGDIR/jobcomp.log (JobCompType=jobcomp/filetxt).
set -euo pipefail

PARTITION=${LUS_SLURM_PARTITION:-ci}
LOGDIR=${LUS_SLURM_LOGDIR:-/var/log/slurm}
CONF=/etc/slurm/slurm.conf
RUN=/run/lus-slurm # pid files of the daemons started here
SPOOL_CTLD=/var/spool/slurmctld
SPOOL_D=/var/spool/slurmd
NODE=localhost

log() { echo "slurm_up: $*" >&2; }
die() {
    log "ERROR: $*"
    for f in "$LOGDIR"/slurmctld.log "$LOGDIR"/slurmd.log "$LOGDIR"/munged.log; do
        [ -f "$f" ] && { echo "--- tail $f" >&2; tail -n 20 "$f" >&2; }
    done
    exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root"

pid_alive() { # pidfile -> true when the process in it runs
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

cluster_answers() {
    timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP' &&
        timeout 10 sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'
}

# ---------------------------------------------------------------- packages
install_packages() {
    local pkgs=(munge slurmctld slurmd slurm-client)
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    # keep the packages' maintainer scripts from starting services (no systemd here anyway)
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/lus-slurm-apt.log 2>&1; then
        apt-get update -q >>/tmp/lus-slurm-apt.log 2>&1 || true
        apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/lus-slurm-apt.log 2>&1 ||
            { tail -n 30 /tmp/lus-slurm-apt.log >&2; [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d; die "apt-get install failed"; }
    fi
    [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
    return 0
}
install_packages

# ---------------------------------------------------------------- munge
mkdir -p "$RUN" "$LOGDIR" /etc/munge /var/lib/munge /var/log/munge /run/munge
id munge >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin munge
if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
fi
chown munge:munge /etc/munge /etc/munge/munge.key /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge

# a munged that answers is kept (whoever started it); else start ours
if ! timeout 5 munge -n </dev/null >/dev/null 2>&1; then
    if pid_alive "$RUN/munged.pid"; then kill "$(cat "$RUN/munged.pid")" 2>/dev/null || true; sleep 0.5; fi
    rm -f /run/munge/munged.socket.2 /run/munge/munged.socket.2.lock
    # munged forks into the background and writes its pid file itself
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid --log-file=/var/log/munge/munged.log ||
        die "munged did not start"
    for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    cp /run/munge/munged.pid "$RUN/munged.pid"
fi
timeout 5 munge -n </dev/null | timeout 5 unmunge >/dev/null || die "munge does not answer"

# ---------------------------------------------------------------- slurm.conf
# the node's real hardware, as slurmd itself sees it
HW=$(slurmd -C | head -n 1)
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$HW"; }
CPUS=$(field CPUs)
BOARDS=$(field Boards)
SOCKETS=$(field SocketsPerBoard)
CORES=$(field CoresPerSocket)
THREADS=$(field ThreadsPerCore)
MEM=$(field RealMemory)
[ -n "$CPUS" ] && [ -n "$MEM" ] || die "could not read the node's hardware from 'slurmd -C': $HW"
# leave a little memory to the OS and the daemons; a node whose RealMemory is above what
# slurmd finds is drained ("Low RealMemory")
MEM=$((MEM * 95 / 100))

mkdir -p /etc/slurm "$SPOOL_CTLD" "$SPOOL_D"
chmod 0755 "$SPOOL_CTLD" "$SPOOL_D"
cat >"$CONF.tmp" <<EOF
# written by .ci/slurm_up.sh: a single-node CI cluster, no accounting, no cgroups.
ClusterName=lusci
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# start batch jobs as soon as they are submitted (the default waits up to 3 s)
SchedulerParameters=batch_sched_delay=0
# a job that asks for no memory gets 1 GB a CPU, not the whole node
DefMemPerCPU=1000
ReturnToService=2
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SPOOL_CTLD
SlurmdSpoolDir=$SPOOL_D
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGDIR/jobcomp.log
# finished jobs stay visible to squeue --states=all (the plugin's status command) and
# scontrol show job for an hour
MinJobAge=3600
InactiveLimit=0
KillWait=10
Waittime=0
SlurmctldTimeout=60
SlurmdTimeout=60
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS Boards=$BOARDS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
# idempotent: a cluster that answers with this very configuration is left running
if cmp -s "$CONF.tmp" "$CONF" && pid_alive "$RUN/slurmctld.pid" && pid_alive "$RUN/slurmd.pid" && cluster_answers; then
    rm -f "$CONF.tmp"
    log "cluster already up"
    sinfo
    exit 0
fi
mv "$CONF.tmp" "$CONF"
chmod 0644 "$CONF"
log "wrote $CONF (CPUs=$CPUS RealMemory=$MEM partition=$PARTITION)"

# ---------------------------------------------------------------- daemons
# (re)start both so they read the configuration just written
for d in slurmd slurmctld; do
    if pid_alive "$RUN/$d.pid"; then
        kill "$(cat "$RUN/$d.pid")" 2>/dev/null || true
        for _ in $(seq 50); do pid_alive "$RUN/$d.pid" || break; sleep 0.2; done
    fi
    rm -f "$RUN/$d.pid"
done
slurmctld || die "slurmctld did not start"
slurmd -N "$NODE" || die "slurmd did not start"

for _ in $(seq 60); do
    cluster_answers && break
    sleep 0.5
done
state=$(timeout 10 sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null || true)
case "$state" in
    idle* | mix* | alloc*) ;;
    *)
        # a node left DOWN/DRAINED by an earlier run: bring it back
        timeout 10 scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
        sleep 1
        cluster_answers || die "node $NODE is not usable (state: ${state:-none})"
        ;;
esac

# ---------------------------------------------------------------- self-test
sinfo
timeout 60 srun -N1 -n1 -t 1 hostname >/dev/null || die "srun hostname failed"
out=$(mktemp -d)
jid=$(timeout 30 sbatch --parsable -t 1 -o "$out/%j.out" --wrap 'echo sbatch-ok') || die "sbatch failed"
for _ in $(seq 120); do
    st=$(timeout 10 scontrol show job "$jid" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
    [ "$st" = COMPLETED ] && break
    case "$st" in FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL) die "sbatch test job $jid: $st" ;; esac
    sleep 0.25
done
[ "$st" = COMPLETED ] && grep -q sbatch-ok "$out/$jid.out" || die "sbatch test job $jid did not complete (state ${st:-unknown})"
rm -rf "$out"
log "cluster up: sinfo, srun and sbatch answer (partition $PARTITION, node $NODE)"
