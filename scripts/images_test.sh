#!/usr/bin/env bash
# `make images-test`: build both images in the CPU flavour on this machine and run them for real.
#
#   1. engine   scripts/engine.sh up (installs and starts dockerd when none answers)
#   2. base     the debian:bookworm-slim of containers/cpu.env when a registry answers and this machine's
#               pip needs nothing of its own; else a base made from Debian packages
#               (scripts/local_base.py build), carrying this machine's pip settings
#   3. build    scripts/build_push.sh --local --flavour cpu --tag cpu, with torch from the package index
#               as this machine's pip finds it and detectron2 from the index's sdist (pure Python)
#   4. run      pytest tests/images --images: train, SIGTERM and resume, a bad channel, evaluate,
#               serve, docker-compose, the SageMaker SDK's local mode
#   5. report   the time of each part and the images' sizes
#
# The images stay in the engine's store as detector-train:cpu and detector-serve:cpu. What this run
# started (the index server, dockerd, containers) is stopped at exit, by PID; the next
# `eval "$(scripts/engine.sh up)"` finds the images again.
#
# Environment: PYTHON (default .venv/bin/python), DETECTOR_IMAGES_BASE (a base image to use as it is),
# DETECTOR_IMAGES_SKIP_BUILD=1 (run the tests on the images already built), DETECTOR_KEEP_ENGINE=1
# (leave a dockerd this run started running). Arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
readonly TAG="cpu"
readonly LOCAL_BASE="localhost/detector-base:bookworm"
# The sdist has no compiled ops (its detectron2._C stands in, naming the op asked for).
readonly SDIST_CHECK="import torch, detectron2, detectron2.layers; print('detectron2', detectron2.__version__, 'torch', torch.__version__)"
started_engine=0
index_pid=""
report=()

log() { echo "images_test.sh: $*" >&2; }
now() { date +%s; }
part_start=0
begin() { part_start="$(now)"; log "--- $1"; }
finish() { report+=("$(printf '%-8s %5d s  %s' "$1" "$(( $(now) - part_start ))" "${2:-}")"); }

# shellcheck disable=SC2329  # run by the EXIT trap
cleanup() {
  local code=$?
  if [[ -n "${index_pid}" ]]; then kill "${index_pid}" 2>/dev/null || true; wait "${index_pid}" 2>/dev/null || true; fi
  if [[ "${started_engine}" == 1 && "${DETECTOR_KEEP_ENGINE:-0}" != 1 ]]; then
    scripts/engine.sh down || true
  fi
  if (( ${#report[@]} )); then
    echo "images_test.sh: summary" >&2
    printf '  %s\n' "${report[@]}" >&2
  fi
  exit "${code}"
}
trap cleanup EXIT

# --- 1. engine ------------------------------------------------------------------------------------
begin engine
scripts/engine.sh status >/dev/null 2>&1 || started_engine=1
eval "$(scripts/engine.sh up)"
export DOCKER_HOST
export DOCKER="${DOCKER:-docker}"
engine_version="$("${DOCKER}" version --format '{{.Server.Version}}')"
finish engine "dockerd ${engine_version} at ${DOCKER_HOST}$([[ ${started_engine} == 1 ]] && echo ', started by this run')"

pin() { sed -n "s/^$1=//p" containers/cpu.env; }

if [[ "${DETECTOR_IMAGES_SKIP_BUILD:-0}" != 1 ]]; then
  # --- 2. base --------------------------------------------------------------------------------------
  begin base
  base="${DETECTOR_IMAGES_BASE:-}"
  pip_conf="$("${PYTHON}" scripts/local_base.py pip-conf)"
  if [[ -z "${base}" ]]; then
    slim="$(pin RUNTIME_IMAGE)"
    if [[ "${pip_conf}" == "[global]" ]] && timeout 300 "${DOCKER}" pull -q "${slim}" >/dev/null 2>&1; then
      base="${slim}"
      finish base "${base} (pulled)"
    else
      "${PYTHON}" scripts/local_base.py build --tag "${LOCAL_BASE}" >/dev/null
      base="${LOCAL_BASE}"
      finish base "${base}, made from Debian packages (no registry, or this machine's pip settings are needed)"
    fi
  else
    finish base "${base} (DETECTOR_IMAGES_BASE)"
  fi

  # --- 3. build -------------------------------------------------------------------------------------
  begin build
  if [[ "${base}" == "${LOCAL_BASE}" ]]; then
    ready="$(mktemp -u)"
    "${PYTHON}" scripts/local_base.py serve-indexes --ready-file "${ready}" &
    index_pid=$!
    # Listening before the build starts, or gone with its reason (a port in use, say) on stderr.
    until [[ -s "${ready}" ]]; do
      kill -0 "${index_pid}" 2>/dev/null || { index_pid=""; log "the index server did not start (see above)"; exit 1; }
      sleep 0.2
    done
    rm -f "${ready}"
  fi
  scripts/build_push.sh --local --flavour cpu --tag "${TAG}" --network host \
    --build-arg "BUILD_IMAGE=${base}" --build-arg "RUNTIME_IMAGE=${base}" \
    --build-arg TORCH_VERSION=2.14.1 --build-arg TORCHVISION_VERSION=0.29.1 \
    --build-arg TORCH_INDEX_URL=https://pypi.org/simple --build-arg DETECTRON2_SOURCE=sdist \
    --build-arg "DETECTRON2_CHECK=${SDIST_CHECK}" >/dev/null
  if [[ -n "${index_pid}" ]]; then kill "${index_pid}" 2>/dev/null || true; wait "${index_pid}" 2>/dev/null || true; index_pid=""; fi
  finish build "torch 2.14.1 from the package index, detectron2 from the pb1-detectron2 sdist, on ${base}"
fi

sizes="$("${DOCKER}" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^detector-(train|serve):${TAG} " | tr '\n' ' ')"
report+=("$(printf '%-8s %s' images "${sizes}")")

# --- 4. run ---------------------------------------------------------------------------------------
begin run
export DETECTOR_TRAIN_IMAGE="detector-train:${TAG}" DETECTOR_SERVE_IMAGE="detector-serve:${TAG}"
code=0
"${PYTHON}" -m pytest tests/images --images -p no:cacheprovider -v --durations=0 "$@" || code=$?
finish run "pytest tests/images: exit ${code}"
exit "${code}"
