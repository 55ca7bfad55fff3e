#!/usr/bin/env bash
# Start a container engine when none is reachable, and stop what was started.
#
# Usage: scripts/engine.sh up | down | status
#   up       print the lines to use the engine (export DOCKER_HOST=..., and export DOCKER=... when the
#            `docker` first on PATH cannot build with BuildKit). An engine already reachable (DOCKER_HOST,
#            or the default socket) is used as it is. Otherwise Debian's docker.io is installed if
#            dockerd is missing (root and apt needed), and dockerd is started in the background with
#            its own data root, exec root, socket and pidfile under $DETECTOR_ENGINE_DIR.
#   down     stop the dockerd that `up` started (by the PID it recorded), and nothing else.
#            Images stay in the data root: the next `up` finds them again.
#   status   say whether an engine is reachable and whether `up` started it.
#
#   eval "$(scripts/engine.sh up)"; docker run --rm -p 127.0.0.1:8080:8080 -v "$PWD/model:/opt/ml/model:ro" detector-serve:cpu serve
#
# Environment: DETECTOR_ENGINE_DIR (default /var/lib/detector-engine) holds the images, containers,
# socket, pidfile and dockerd.log; DETECTOR_ENGINE_START_TIMEOUT (seconds, default 60).
# Progress and errors go to stderr; stdout carries only the export lines, for eval.
set -euo pipefail

readonly DIR="${DETECTOR_ENGINE_DIR:-/var/lib/detector-engine}"
readonly SOCKET="${DIR}/docker.sock"
readonly PIDFILE="${DIR}/dockerd.pid"
readonly LOG="${DIR}/dockerd.log"
readonly START_TIMEOUT="${DETECTOR_ENGINE_START_TIMEOUT:-60}"

die() { echo "engine.sh: error: $*" >&2; exit 1; }
log() { echo "engine.sh: $*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

# Any docker client, to ask the engine whether it answers.
client() {
  command -v docker || { [[ -x /usr/bin/docker ]] && echo /usr/bin/docker; } || true
}

# A client that can build with BuildKit: one with the buildx plugin, or one older than 23 (their
# classic `DOCKER_BUILDKIT=1 docker build` is BuildKit; from 23 on it needs buildx).
buildkit_client() {
  local candidate version
  for candidate in $(type -ap docker) /usr/bin/docker; do
    [[ -x "${candidate}" ]] || continue
    if "${candidate}" buildx version >/dev/null 2>&1; then echo "${candidate}"; return; fi
    version="$("${candidate}" version --format '{{.Client.Version}}' 2>/dev/null | head -n 1 || true)"
    if [[ "${version}" =~ ^([0-9]+)\. ]] && (( BASH_REMATCH[1] < 23 )); then echo "${candidate}"; return; fi
  done
}

reachable() {  # $1: DOCKER_HOST value
  local docker
  docker="$(client)"
  [[ -n "${docker}" ]] && DOCKER_HOST="$1" timeout 10 "${docker}" info >/dev/null 2>&1
}

started_pid() {  # the PID of a dockerd this script started and that still runs, or nothing
  [[ -f "${PIDFILE}" ]] || return 0
  local pid
  pid="$(cat "${PIDFILE}" 2>/dev/null || true)"
  if [[ "${pid}" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/${pid}/comm" 2>/dev/null)" == dockerd ]]; then
    echo "${pid}"
  fi
}

# `export DOCKER=...` names a client that builds with BuildKit when the `docker` first on PATH cannot
# (scripts/build_push.sh runs $DOCKER).
print_exports() {
  echo "export DOCKER_HOST=$1"
  local first builder
  first="$(command -v docker || true)"
  builder="$(buildkit_client)"
  if [[ -n "${builder}" && "${builder}" != "${first}" ]]; then
    echo "export DOCKER=${builder}"
  fi
}

install_engine() {
  [[ "$(id -u)" == 0 ]] || die "dockerd is not installed and installing it needs root: run 'sudo apt-get install docker.io docker-compose', or install Docker Engine (https://docs.docker.com/engine/install/)"
  have apt-get || die "dockerd is not installed and this is not a Debian-like system: install Docker Engine (https://docs.docker.com/engine/install/)"
  log "installing Debian's docker.io and docker-compose"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io docker-compose >&2 \
    || die "apt-get install docker.io docker-compose failed (see above)"
}

up() {
  if [[ -n "${DOCKER_HOST:-}" ]] && reachable "${DOCKER_HOST}"; then
    log "using the engine at DOCKER_HOST=${DOCKER_HOST}"
    print_exports "${DOCKER_HOST}"
    return
  fi
  if [[ -n "$(started_pid)" ]] && reachable "unix://${SOCKET}"; then
    log "using the dockerd started earlier (PID $(started_pid))"
    print_exports "unix://${SOCKET}"
    return
  fi
  if reachable "unix:///var/run/docker.sock"; then
    log "using the engine at /var/run/docker.sock"
    print_exports "unix:///var/run/docker.sock"
    return
  fi
  have dockerd || install_engine
  have dockerd || die "dockerd is still not on PATH after installing docker.io"
  [[ "$(id -u)" == 0 ]] || die "starting dockerd needs root (or start your own engine and set DOCKER_HOST)"
  mkdir -p "${DIR}/data" "${DIR}/exec"
  rm -f "${SOCKET}" "${PIDFILE}"
  log "starting dockerd (data root ${DIR}/data, log ${LOG})"
  # setsid: the daemon outlives this shell and its terminal; it is stopped by `down`, by PID.
  setsid dockerd --data-root "${DIR}/data" --exec-root "${DIR}/exec" -H "unix://${SOCKET}" \
    --pidfile "${PIDFILE}" --storage-driver overlay2 >>"${LOG}" 2>&1 </dev/null &
  local pid=$! waited=0
  until reachable "unix://${SOCKET}"; do
    if ! kill -0 "${pid}" 2>/dev/null; then
      tail -n 20 "${LOG}" >&2 || true
      die "dockerd exited while starting (the last lines of ${LOG} are above)"
    fi
    if (( waited >= START_TIMEOUT )); then
      kill "${pid}" 2>/dev/null || true
      die "dockerd did not answer within ${START_TIMEOUT} s (see ${LOG})"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  log "dockerd is up (PID ${pid}) after ${waited} s"
  print_exports "unix://${SOCKET}"
}

down() {
  local pid
  pid="$(started_pid)"
  if [[ -z "${pid}" ]]; then
    log "no dockerd started by engine.sh is running; nothing to stop"
    return
  fi
  log "stopping dockerd (PID ${pid}); its containers stop with it"
  kill -TERM "${pid}"
  for _ in $(seq 1 60); do
    kill -0 "${pid}" 2>/dev/null || { log "dockerd stopped"; return; }
    sleep 1
  done
  log "dockerd did not stop within 60 s: killing it"
  kill -KILL "${pid}" 2>/dev/null || true
}

status() {
  local pid
  pid="$(started_pid)"
  if [[ -n "${pid}" ]]; then
    echo "dockerd started by engine.sh: PID ${pid}, DOCKER_HOST=unix://${SOCKET}"
  elif [[ -n "${DOCKER_HOST:-}" ]] && reachable "${DOCKER_HOST}"; then
    echo "an engine answers at DOCKER_HOST=${DOCKER_HOST} (not started by engine.sh)"
  elif reachable "unix:///var/run/docker.sock"; then
    echo "an engine answers at /var/run/docker.sock (not started by engine.sh)"
  else
    echo "no engine reachable"
    return 1
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" ;;
  *) die "expected 'up', 'down' or 'status' (see --help)" ;;
esac
