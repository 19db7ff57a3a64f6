#!/usr/bin/env bash
# A real, local Apache Kafka 4.x broker for spanwatch tests, benchmarks and users:
# one combined broker+controller KRaft node on 127.0.0.1, no Docker, jars from
# Maven Central (scripts/kafka/pom.xml). See scripts/README.md.
#
#   bash scripts/kafka.sh setup|start|wait [timeout_s]|stop|kill|status|reset|env
#
# Environment (all optional):
#   KAFKA_HOME             state folder (libs/, config/, data/, logs/)   default <repo>/.kafka
#   KAFKA_PORT             PLAINTEXT listener on 127.0.0.1                default 19092
#   KAFKA_CONTROLLER_PORT  CONTROLLER listener on 127.0.0.1               default 19093
#   KAFKA_HEAP_OPTS        JVM heap flags                                 default "-Xms128m -Xmx512m"
#   KAFKA_OPTS             extra JVM flags for the broker (split on spaces)
#   KAFKA_STOP_TIMEOUT     seconds `stop` waits after SIGTERM             default 30
#   KAFKA_MVN_ARGS         extra Maven arguments for setup, e.g. "-o" (offline) or
#                          "-Dmaven.repo.local=/path"
#   JAVA, MVN, PYTHON      executables                                    default java, mvn, python3
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
POM="$SCRIPT_DIR/kafka/pom.xml"

KAFKA_HOME="${KAFKA_HOME:-$REPO_DIR/.kafka}"
mkdir -p "$KAFKA_HOME"
KAFKA_HOME="$(cd "$KAFKA_HOME" && pwd)" # absolute, so it works from any directory
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
JAVA="${JAVA:-java}"
MVN="${MVN:-mvn}"
PYTHON="${PYTHON:-python3}"

LIBS="$KAFKA_HOME/libs"
CONF_DIR="$KAFKA_HOME/config"
DATA_DIR="$KAFKA_HOME/data"
LOG_DIR="$KAFKA_HOME/logs"
PID_FILE="$KAFKA_HOME/kafka.pid"
STAMP="$LIBS/.setup-stamp"
SERVER_PROPS="$CONF_DIR/server.properties"
LOG4J2_XML="$CONF_DIR/log4j2.xml"
SERVER_LOG="$LOG_DIR/server.log"
CONSOLE_LOG="$LOG_DIR/kafka.out"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
# Put on the java command line so we can tell *our* broker from any other process.
MARKER="-Dspanwatch.kafka.home=$KAFKA_HOME"

die() {
    echo "kafka.sh: error: $*" >&2
    exit 1
}
info() { echo "kafka.sh: $*"; }

now() { echo "${EPOCHREALTIME:-$(date +%s.%N)}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH ($2)"; }

check_port_var() {
    # shellcheck disable=SC2015 # die when either test fails
    [[ "$2" =~ ^[0-9]+$ ]] && ((10#$2 > 0 && 10#$2 < 65536)) || die "$1 must be a TCP port, got '$2'"
}
check_port_var KAFKA_PORT "$KAFKA_PORT"
check_port_var KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT"
[[ "$KAFKA_PORT" != "$KAFKA_CONTROLLER_PORT" ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"

log_tail() {
    local n="${1:-40}" f
    if [[ -s "$SERVER_LOG" ]] && grep -qE '^\[[^]]*\] (ERROR|FATAL) ' "$SERVER_LOG"; then
        echo "----- first errors in $SERVER_LOG -----" >&2
        grep -E -A2 '^\[[^]]*\] (ERROR|FATAL) ' "$SERVER_LOG" | head -n 12 >&2
    fi
    for f in "$SERVER_LOG" "$CONSOLE_LOG"; do
        if [[ -s "$f" ]]; then
            echo "----- last $n lines of $f -----" >&2
            tail -n "$n" "$f" >&2
        fi
    done
}

# Listening on a port from the kernel's ephemeral range races with outgoing
# connections, which may already hold it as their local port ("Address already
# in use" at bind time even though nothing listens there).
warn_ephemeral() {
    local lo hi p
    read -r lo hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || return 0
    for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
        if ((p >= lo && p <= hi)); then
            echo "kafka.sh: warning: port $p is in the ephemeral range $lo-$hi; it may be taken by an outgoing connection (prefer ports below $lo)" >&2
        fi
    done
}

# --- process bookkeeping ------------------------------------------------------

# Prints the broker pid if our broker is running (pid file + live process whose
# command line carries our marker, so a recycled pid is never mistaken for it).
running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(tr -dc '0-9' <"$PID_FILE")"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/cmdline" ]]; then
        tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$MARKER" || return 1
    fi
    echo "$pid"
}

clear_stale_pid() {
    if [[ -f "$PID_FILE" ]] && ! running_pid >/dev/null; then
        rm -f "$PID_FILE"
    fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True while pid $1 still exists in a way that may hold its sockets. A killed
# JVM's main thread can already be a zombie while its other threads are still
# exiting (and still own the listening sockets), so a zombie only counts as gone
# once it is the last task left.
alive() {
    local pid="$1"
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]]; then
        local tasks
        tasks="$(find "/proc/$pid/task" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
        ((tasks > 1)) || return 1
    fi
    return 0
}

# Waits until pid $1 is gone, at most $2 seconds. Returns 1 on timeout.
wait_gone() {
    local pid="$1" deadline=$((SECONDS + $2))
    while alive "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
    # Belt and braces: let the kernel finish closing the listeners (max 5 s) so
    # that an immediate `start` can bind them again.
    deadline=$((SECONDS + 5))
    while port_in_use "$KAFKA_PORT" || port_in_use "$KAFKA_CONTROLLER_PORT"; do
        ((SECONDS < deadline)) || break
        sleep 0.1
    done
}

# --- subcommands --------------------------------------------------------------

stamp_ok() { [[ -f "$STAMP" && "$(cat "$STAMP")" == "$1" ]] && ls "$LIBS"/kafka_2.13-*.jar >/dev/null 2>&1; }

cmd_setup() {
    local t0 hash rc=0
    t0="$(now)"
    [[ -f "$POM" ]] || die "missing $POM"
    hash="$(sha256sum "$POM" | awk '{print $1}')"
    if stamp_ok "$hash"; then
        info "setup: already done ($(find "$LIBS" -name '*.jar' | wc -l) jars in $LIBS, $(elapsed "$t0")s)"
        return 0
    fi
    need "$MVN" "install Maven, e.g. apt-get install maven"
    need "$JAVA" "install OpenJDK 17+, e.g. apt-get install openjdk-17-jre-headless"
    mkdir -p "$LOG_DIR"
    # One setup at a time per KAFKA_HOME. The lock fd is closed again before
    # returning so that a broker started afterwards does not inherit it.
    exec 9>"$KAFKA_HOME/.setup.lock"
    if command -v flock >/dev/null 2>&1; then flock 9; fi
    resolve_jars "$hash" "$t0" || rc=$?
    exec 9>&-
    return "$rc"
}

resolve_jars() {
    local hash="$1" t0="$2"
    if stamp_ok "$hash"; then # another process finished it while we waited
        info "setup: already done ($(elapsed "$t0")s)"
        return 0
    fi
    if running_pid >/dev/null; then
        die "the broker is running from $LIBS; run 'kafka.sh stop' before re-resolving its jars"
    fi
    info "setup: resolving Kafka jars from Maven Central into $LIBS ..."
    local tmp="$KAFKA_HOME/libs.tmp.$$" mvn_log="$LOG_DIR/setup-mvn.log"
    local -a extra=()
    read -r -a extra <<<"${KAFKA_MVN_ARGS:-}"
    rm -rf "$tmp"
    if ! "$MVN" -B -q "${extra[@]}" -f "$POM" dependency:copy-dependencies \
        -DoutputDirectory="$tmp" >"$mvn_log" 2>&1; then
        rm -rf "$tmp"
        tail -n 40 "$mvn_log" >&2
        die "setup: Maven could not resolve the jars (full output in $mvn_log)"
    fi
    ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "setup: no kafka_2.13 jar was resolved into $tmp"
    echo "$hash" >"$tmp/.setup-stamp"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    info "setup: done, $(find "$LIBS" -name '*.jar' | wc -l) jars, $(du -sh "$LIBS" | cut -f1) in $LIBS ($(elapsed "$t0")s)"
}

write_config() {
    mkdir -p "$CONF_DIR" "$DATA_DIR" "$LOG_DIR"
    # Consumer groups are mapped to __consumer_offsets partitions by this count,
    # so it must never change for existing data: reuse what is on disk.
    local offsets_partitions
    offsets_partitions="$(find "$DATA_DIR" -mindepth 1 -maxdepth 1 -type d -name '__consumer_offsets-*' ! -name '*.*' | wc -l)"
    ((offsets_partitions > 0)) || offsets_partitions=4
    cat >"$SERVER_PROPS" <<EOF
# Written by scripts/kafka.sh start; edits are overwritten on the next start.
process.roles=broker,controller
node.id=1
# Kafka 4.x dynamic KRaft quorum (formatted with --standalone). The static
# controller.quorum.voters must NOT be set alongside it.
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DATA_DIR
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
# 4 instead of the default 50 internal partitions: a clean restart takes ~3 s
# instead of ~5.5 s on a small machine.
offsets.topic.num.partitions=$offsets_partitions
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
# After a SIGKILL the restarted broker cannot register again until the controller
# expires its previous session (DuplicateBrokerRegistrationException); the 9 s
# default dominated crash-recovery time. Heartbeats are cheap on 127.0.0.1.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
auto.create.topics.enable=true
num.recovery.threads.per.data.dir=1
log.retention.hours=168
EOF
    cat >"$LOG4J2_XML" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by scripts/kafka.sh start. -->
<!-- shutdownHook="disable": otherwise log4j2 races Kafka's own shutdown hook and
     the last lines of a clean shutdown are lost. -->
<Configuration status="warn" shutdownHook="disable">
  <Appenders>
    <RollingFile name="server" fileName="$SERVER_LOG"
                 filePattern="$LOG_DIR/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="50MB"/>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="server"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.controller" level="INFO"/>
    <Logger name="kafka.log.LogCleaner" level="INFO"/>
    <Logger name="state.change.logger" level="INFO"/>
    <Logger name="kafka.authorizer.logger" level="INFO"/>
  </Loggers>
</Configuration>
EOF
}

format_storage() {
    # Formatted once; later starts reuse the data (and its cluster id).
    [[ -f "$DATA_DIR/meta.properties" ]] && return 0
    local cluster_id
    # base64url of a random UUID; one that starts with "-" (1 in 64) would
    # read as an option to the storage tool, so draw again, as Kafka's own
    # Uuid.randomUuid does
    cluster_id="$("$PYTHON" -c '
import base64, uuid
while (i := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
    pass
print(i)')"
    info "start: formatting $DATA_DIR (cluster id $cluster_id)"
    if ! "$JAVA" -Xmx256m -cp "$LIBS/*" -Dlog4j2.configurationFile="$LOG4J2_XML" \
        kafka.tools.StorageTool format -t "$cluster_id" -c "$SERVER_PROPS" --standalone \
        >"$LOG_DIR/format.log" 2>&1; then
        cat "$LOG_DIR/format.log" >&2
        die "start: formatting the storage failed"
    fi
}

cmd_start() {
    local pid
    if pid="$(running_pid)"; then
        info "start: already running (pid $pid) at $BOOTSTRAP"
        return 0
    fi
    clear_stale_pid
    need "$JAVA" "install OpenJDK 17+"
    need "$PYTHON" "needed to make a cluster id and for 'wait'"
    cmd_setup >/dev/null
    local port deadline=$((SECONDS + 5))
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
        # a few seconds of grace for a broker that is still going away
        while port_in_use "$port"; do
            ((SECONDS < deadline)) ||
                die "127.0.0.1:$port is already in use by another process; pick another KAFKA_PORT / KAFKA_CONTROLLER_PORT"
            sleep 0.2
        done
    done
    warn_ephemeral
    write_config
    format_storage

    # Keep the previous run's logs (as *.prev) for post-mortems of crash tests;
    # server.log then only holds this run, so its ERROR lines are this run's.
    local f
    for f in "$SERVER_LOG" "$CONSOLE_LOG"; do
        if [[ -f "$f" ]]; then mv -f "$f" "$f.prev"; fi
    done
    rm -f "$SERVER_LOG".[0-9]*
    rm -f "$PID_FILE"
    local -a heap opts
    read -r -a heap <<<"$KAFKA_HEAP_OPTS"
    read -r -a opts <<<"${KAFKA_OPTS:-}"
    local -a jvm=(
        "$JAVA" "${heap[@]}" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
        "${opts[@]}" "-Dlog4j2.configurationFile=$LOG4J2_XML" "-Dkafka.logs.dir=$LOG_DIR"
        "$MARKER" -cp "$LIBS/*" kafka.Kafka "$SERVER_PROPS"
    )
    # New session (setsid) + SIGHUP ignored (nohup): survives the calling shell.
    # The inner bash writes its own pid, then exec's java so that pid is the broker's.
    local -a launcher=(nohup)
    command -v setsid >/dev/null 2>&1 && launcher+=(setsid)
    # shellcheck disable=SC2016 # $$ and $@ are for the inner bash
    (
        exec 8>&- 9>&- # never let the broker inherit (and hold) our locks
        cd "$KAFKA_HOME"
        "${launcher[@]}" bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" "${jvm[@]}" \
            >"$CONSOLE_LOG" 2>&1 </dev/null &
    )
    local deadline=$((SECONDS + 10))
    until [[ -s "$PID_FILE" ]]; do
        ((SECONDS < deadline)) || die "start: the broker did not write $PID_FILE"
        sleep 0.05
    done
    # Catch immediate failures (bad config, port taken) here rather than in `wait`.
    sleep 1
    if ! pid="$(running_pid)"; then
        log_tail 40
        rm -f "$PID_FILE"
        die "start: the broker exited right away (see above, $SERVER_LOG and $CONSOLE_LOG)"
    fi
    info "start: broker started (pid $pid) at $BOOTSTRAP; logs in $LOG_DIR; run 'kafka.sh wait' until it answers"
}

cmd_wait() {
    local timeout="${1:-60}" pid t0
    [[ "$timeout" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "wait: timeout must be a number of seconds, got '$timeout'"
    t0="$(now)"
    pid="$(running_pid)" || {
        log_tail 20
        die "wait: the broker is not running (run 'kafka.sh start' first)"
    }
    need "$PYTHON" "needed for 'wait'"
    local rc=0
    "$PYTHON" - "$BOOTSTRAP" "$timeout" "$pid" <<'PY' || rc=$?
import logging, os, sys, time

logging.disable(logging.CRITICAL)  # kafka-python logs every refused connection
try:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaConfigurationError
except ImportError:
    print("kafka.sh: error: kafka-python is not installed (pip install kafka-python)", file=sys.stderr)
    sys.exit(4)

bootstrap, timeout, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + timeout
last = "no attempt"
while True:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        print("kafka.sh: error: wait: the broker process exited", file=sys.stderr)
        sys.exit(3)
    left = deadline - time.monotonic()
    if left <= 0:
        break
    admin = None
    try:
        ms = int(max(1.0, min(5.0, left)) * 1000)
        wanted = {
            "bootstrap_servers": bootstrap,
            "client_id": "spanwatch-kafka-wait",
            "request_timeout_ms": ms,
            "bootstrap_timeout_ms": ms,  # kafka-python 3.x
            "api_version_auto_timeout_ms": ms,  # kafka-python 2.x
            "reconnect_backoff_ms": 100,
            "reconnect_backoff_max_ms": 500,
        }
        known = KafkaAdminClient.DEFAULT_CONFIG
        admin = KafkaAdminClient(**{k: v for k, v in wanted.items() if k in known})
        cluster = admin.describe_cluster()
        brokers = cluster.get("brokers") or []
        unfenced = [b for b in brokers if not b.get("is_fenced")]
        if unfenced and cluster.get("controller_id", -1) not in (-1, None):
            admin.list_topics()
            sys.exit(0)
        last = f"cluster not ready yet: {cluster}"
    except SystemExit:
        raise
    except KafkaConfigurationError as exc:  # a bug in this script, not a slow broker
        print(f"kafka.sh: error: wait: {exc}", file=sys.stderr)
        sys.exit(4)
    except Exception as exc:  # NoBrokersAvailable, timeouts, ...
        last = f"{type(exc).__name__}: {exc}"
    finally:
        if admin is not None:
            try:
                admin.close()
            except Exception:
                pass
    time.sleep(0.25)
print(f"kafka.sh: error: wait: no answer from {bootstrap} after {timeout:g}s (last: {last})",
      file=sys.stderr)
sys.exit(2)
PY
    if ((rc == 0)); then
        info "wait: broker at $BOOTSTRAP answers metadata calls ($(elapsed "$t0")s)"
        return 0
    fi
    if ((rc == 4)); then exit 1; fi # client-side problem; the broker log won't help
    log_tail 40
    if ((rc == 3)); then rm -f "$PID_FILE"; fi
    exit 1
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        clear_stale_pid
        info "stop: not running"
        return 0
    fi
    info "stop: sending SIGTERM to pid $pid (waiting up to ${KAFKA_STOP_TIMEOUT}s)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$KAFKA_STOP_TIMEOUT"; then
        info "stop: still alive after ${KAFKA_STOP_TIMEOUT}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "stop: pid $pid survived SIGKILL"
    fi
    rm -f "$PID_FILE"
    info "stop: stopped"
}

cmd_kill() {
    local pid
    if ! pid="$(running_pid)"; then
        clear_stale_pid
        info "kill: not running"
        return 0
    fi
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "kill: pid $pid survived SIGKILL"
    rm -f "$PID_FILE"
    info "kill: sent SIGKILL to pid $pid"
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        echo "running (pid $pid) bootstrap=$BOOTSTRAP home=$KAFKA_HOME"
        return 0
    fi
    clear_stale_pid
    echo "not running (bootstrap would be $BOOTSTRAP) home=$KAFKA_HOME"
    return 3
}

cmd_reset() {
    cmd_stop
    rm -rf "$DATA_DIR" "$LOG_DIR" "$CONF_DIR"
    info "reset: deleted data, logs and config under $KAFKA_HOME (kept $LIBS)"
}

cmd_env() { echo "SPANWATCH_KAFKA__BOOTSTRAP_SERVERS=$BOOTSTRAP"; }

usage() {
    cat <<EOF
usage: $(basename "$0") <command>

  setup            resolve the Kafka jars into \$KAFKA_HOME/libs (quick when done)
  start            write config, format storage once, start the broker in the background
  wait [timeout_s] block until the broker answers metadata calls (default 60 s)
  stop             SIGTERM, wait up to \$KAFKA_STOP_TIMEOUT s (30), then SIGKILL
  kill             SIGKILL right away (crash tests)
  status           running or not, and the bootstrap address (exit 0 / 3)
  reset            stop and delete data, logs and config (keeps the jars)
  env              print SPANWATCH_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:<port>

KAFKA_HOME=$KAFKA_HOME KAFKA_PORT=$KAFKA_PORT KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT
EOF
}

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
    start | stop | kill | reset)
        # One state-changing command at a time per KAFKA_HOME (two concurrent
        # starts would otherwise race for the pid file).
        exec 8>"$KAFKA_HOME/.kafka.sh.lock"
        if command -v flock >/dev/null 2>&1; then flock 8; fi
        ;;
    esac
    case "$cmd" in
    setup) cmd_setup ;;
    start) cmd_start ;;
    wait) cmd_wait "$@" ;;
    stop) cmd_stop ;;
    kill) cmd_kill ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    env) cmd_env ;;
    -h | --help | help) usage ;;
    "") usage >&2; exit 2 ;;
    *) usage >&2; die "unknown command '$cmd'" ;;
    esac
}

main "$@"
