#!/usr/bin/env bash
# A real single-node SLURM cluster on localhost, for CI and for trying the templates on a laptop.
#
#   bash slurm/ci/local-cluster.sh start   # install Debian's slurm + munge if missing, start the daemons
#   bash slurm/ci/local-cluster.sh status
#   bash slurm/ci/local-cluster.sh stop    # stop the daemons this script started (by their pids)
#
# Needs root (the daemons run as root with proctrack/linuxproc and task/none: no cgroups). Idempotent:
# `start` on a running cluster does nothing, `stop` on a stopped one does nothing. Everything lives in
# $HPCBENCH_SLURM_DIR (default /tmp/hpcbench-slurm): slurm.conf, spool and state directories, logs,
# pids. Clients find the cluster with SLURM_CONF=$HPCBENCH_SLURM_DIR/slurm.conf (`env` prints it).
set -euo pipefail

DIR=${HPCBENCH_SLURM_DIR:-/tmp/hpcbench-slurm}
CONF=$DIR/slurm.conf
NODE=$(hostname -s)

log() { echo "local-cluster: $*" >&2; }

# the pid file's process is alive and is still that daemon (a stale file after a reboot names another)
alive() {
    [[ -f $DIR/$1.pid ]] || return 1
    local pid
    pid=$(cat "$DIR/$1.pid")
    kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]]
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    log "installing Debian's slurmctld, slurmd, slurm-client and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d-style guard: the packages must not start their own daemons with the system config
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# slurmctld/slurmd ports: the standard ones unless the machine already runs a SLURM on them
pick_ports() {
    CTLD_PORT=${HPCBENCH_SLURMCTLD_PORT:-6817}
    D_PORT=${HPCBENCH_SLURMD_PORT:-$((CTLD_PORT + 1))}
    while listening "$CTLD_PORT" || listening "$D_PORT"; do
        CTLD_PORT=$((CTLD_PORT + 10)); D_PORT=$((CTLD_PORT + 1))
    done
}

write_conf() {
    local cpus mem
    pick_ports
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
    mkdir -p "$DIR"/{ctld,d,log}
    cat >"$CONF" <<EOF
# written by slurm/ci/local-cluster.sh
ClusterName=hpcbench-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.daemon.pid
SlurmdPidFile=$DIR/slurmd.daemon.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=$CTLD_PORT
SlurmdPort=$D_PORT
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
}

start_munge() {
    if alive munged; then return; fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
    chmod 0400 /etc/munge/munge.key
    # a munged from the package or an earlier run owns the socket already: use it
    if munge -n </dev/null >/dev/null 2>&1; then return; fi
    local before
    before=$(pgrep -x munged || true)
    runuser -u munge -- /usr/sbin/munged
    local pid
    for _ in $(seq 50); do
        pid=$(pgrep -x munged | grep -vxF "$before" | head -1 || true)
        [[ -n $pid ]] && munge -n </dev/null >/dev/null 2>&1 && break
        sleep 0.1
    done
    [[ -n $pid ]] || { log "munged did not start"; exit 1; }
    echo "$pid" >"$DIR/munged.pid"
}

start_daemon() {  # name, command...
    local name=$1; shift
    if alive "$name"; then return; fi
    "$@" >>"$DIR/log/$name.out" 2>&1 &
    echo $! >"$DIR/$name.pid"
}

wait_idle() {
    for _ in $(seq 120); do
        state=$(SLURM_CONF=$CONF sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
        case $state in
            idle*|mixed*|allocated*) log "node $NODE is $state"; return 0 ;;
            down*|drain*) SLURM_CONF=$CONF scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    log "node $NODE did not come up; logs in $DIR/log"
    tail -5 "$DIR"/log/*.log >&2 || true
    return 1
}

case ${1:-} in
    start)
        [[ $(id -u) == 0 ]] || { log "needs root (the daemons run as root)"; exit 2; }
        install_packages
        mkdir -p "$DIR"
        if ! alive slurmctld; then write_conf; fi
        start_munge
        start_daemon slurmctld /usr/sbin/slurmctld -D -i -f "$CONF"
        start_daemon slurmd /usr/sbin/slurmd -D -f "$CONF" -N "$NODE"
        wait_idle
        echo "export SLURM_CONF=$CONF"
        ;;
    stop)
        for name in slurmd slurmctld munged; do
            if alive "$name"; then
                pid=$(cat "$DIR/$name.pid")
                kill "$pid" 2>/dev/null || true
                for _ in $(seq 50); do alive "$name" || break; sleep 0.1; done
                if alive "$name"; then kill -9 "$pid" 2>/dev/null || true; fi
            fi
            rm -f "$DIR/$name.pid"
        done
        log "stopped"
        ;;
    status)
        for name in munged slurmctld slurmd; do
            if alive "$name"; then echo "$name: running (pid $(cat "$DIR/$name.pid"))"; else echo "$name: stopped"; fi
        done
        ;;
    env)
        echo "export SLURM_CONF=$CONF"
        ;;
    *)
        echo "usage: $0 start|stop|status|env" >&2
        exit 2
        ;;
esac
