#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, beside (never touching) the
# package node rabbit@localhost on 5672. For tests of failover across nodes.
#
#   local_cluster.sh start | stop | status | kill N | restart N
#
# Nodes warren1@localhost..warren3@localhost, AMQP on 127.0.0.1:5701-5703,
# Erlang distribution on 25701-25703, all state under
# ${WARREN_CLUSTER_DIR:-/tmp/warren-cluster}/warrenN. The nodes share the
# package node's Erlang cookie (/var/lib/rabbitmq/.erlang.cookie), so
# `rabbitmqctl -n warrenN@localhost ...` works as for the main node.
set -euo pipefail

BASE=${WARREN_CLUSTER_DIR:-/tmp/warren-cluster}
COOKIE_HOME=/var/lib/rabbitmq
SBIN=/usr/lib/rabbitmq/bin
NODES=(1 2 3)

node_name() { echo "warren$1@localhost"; }
node_dir() { echo "$BASE/warren$1"; }
amqp_port() { echo $((5700 + $1)); }

ctl() {
    # rabbitmqctl as root with the cookie home: same cookie as the main node.
    HOME=$COOKIE_HOME "$SBIN/rabbitmqctl" "$@"
}

write_config() {
    local n=$1 dir
    dir=$(node_dir "$n")
    mkdir -p "$dir/mnesia" "$dir/log"
    cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")
loopback_users = none
consumer_timeout = 604800000
heartbeat = 30
disk_free_limit.absolute = 50MB
cluster_partition_handling = pause_minority
CONF
    echo '[].' >"$dir/enabled_plugins"
    # Only loopback: Erlang distribution listens on every interface unless told.
    echo 'SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"' \
        >"$dir/rabbitmq-env.conf"
}

node_env() {
    local n=$1 dir
    dir=$(node_dir "$n")
    echo HOME=$COOKIE_HOME \
        RABBITMQ_NODENAME="$(node_name "$n")" \
        RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$dir/pid" \
        RABBITMQ_DIST_PORT=$((25700 + n)) \
        ERL_EPMD_ADDRESS=127.0.0.1
}

is_up() { ctl -n "$(node_name "$1")" -q status >/dev/null 2>&1; }

beam_pid() {
    local pidfile
    pidfile="$(node_dir "$1")/pid"
    [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null && cat "$pidfile"
}

boot() {
    local n=$1
    if is_up "$n"; then return 0; fi
    write_config "$n"
    (
        # A node outlives whoever started it, so it must not hold their descriptors (a
        # test run's flock would stay locked, a caller's pipe open, until the node dies).
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            if ((fd > 2 && fd != 255)); then eval "exec $fd>&-"; fi
        done
        # shellcheck disable=SC2046 # node_env is a list of NAME=value words
        exec env $(node_env "$n") "$SBIN/rabbitmq-server" -detached
    ) >>"$(node_dir "$n")/log/stdout.log" 2>&1 </dev/null
}

await() {
    # await_startup fails at once while the booting node is not in epmd yet.
    for _ in $(seq 90); do
        if ctl -n "$(node_name "$1")" -q await_startup --timeout 90 >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    echo "$(node_name "$1") did not start; see $(node_dir "$1")/log" >&2
    return 1
}

is_member() {
    ctl -n "$(node_name "$1")" -q cluster_status --formatter json 2>/dev/null |
        grep -q '"running_nodes":\[[^]]*"warren1@localhost"'
}

join() {
    local n=$1 name
    name=$(node_name "$n")
    if is_member "$n"; then return 0; fi
    local log
    log="$(node_dir "$n")/log/join.log"
    ctl -n "$name" -q stop_app >>"$log" 2>&1
    ctl -n "$name" -q join_cluster warren1@localhost >>"$log" 2>&1
    ctl -n "$name" -q start_app >>"$log" 2>&1
    await "$n"
}

urls() {
    for n in "${NODES[@]}"; do echo "amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/"; done
}

start() {
    mkdir -p "$BASE"
    for n in "${NODES[@]}"; do boot "$n" & done
    wait
    local pids=()
    for n in "${NODES[@]}"; do await "$n" & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p"; done
    pids=()
    join 2 & pids+=($!)
    join 3 & pids+=($!)
    for p in "${pids[@]}"; do wait "$p"; done
    urls
}

stop() {
    for n in "${NODES[@]}"; do
        if is_up "$n"; then ctl -n "$(node_name "$n")" -q stop & fi
    done
    wait
}

status() {
    local rc=0
    for n in "${NODES[@]}"; do
        if is_up "$n"; then echo "$(node_name "$n") up amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/"
        else echo "$(node_name "$n") down"; rc=1; fi
    done
    return $rc
}

kill_node() {
    local pid
    if pid=$(beam_pid "$1"); then kill -9 "$pid"; fi
    # The pid file outlives a kill -9; wait for the listener to go away.
    for _ in $(seq 50); do is_up "$1" || return 0; sleep 0.1; done
}

restart_node() {
    boot "$1"
    await "$1"
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
kill) kill_node "${2:?node 1-3}" ;;
restart) restart_node "${2:?node 1-3}" ;;
*) echo "usage: $0 start|stop|status|kill N|restart N" >&2; exit 2 ;;
esac
