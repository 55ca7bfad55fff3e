#!/usr/bin/env bash
# Build the training and serving images for linux/amd64, push them to Amazon ECR and print their URIs.
#
# Usage: scripts/build_push.sh [options]
#   --flavour cuda|cpu     cuda (default): the CUDA images (containers/versions.env); cpu: CPU torch on
#                          debian:bookworm-slim for CPU endpoints, Batch Transform, serverless and small
#                          training jobs (containers/cpu.env over versions.env); default tags get "-cpu"
#   --region REGION        AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION, then `aws configure get region`)
#   --account ID           12-digit AWS account id of the registry (default: the caller's, from STS)
#   --train-repo NAME      ECR repository of the training image (default: detector-train)
#   --serve-repo NAME      ECR repository of the serving image (default: detector-serve)
#   --tag TAG              image tag (default: the git short revision, "-dirty" appended when tracked
#                          files have uncommitted changes); every image is also tagged "latest"
#                          ("latest-cpu" for the cpu flavour)
#   --build-arg KEY=VALUE  override a pin of containers/versions.env for this build (repeatable)
#   --network MODE         network of the build's RUN steps (e.g. host, to reach a package index on
#                          127.0.0.1)
#   --no-push              build and tag only: no ECR repository, login or push
#   --local                build and tag local names (<repo>:<tag>, e.g. detector-serve:cpu): no AWS at
#                          all, no region or account needed (implies --no-push)
#   --dry-run              print the commands instead of running them (STS is still asked for the
#                          account when --account is not given)
#   -h, --help             show this help
#
# Progress, commands and the tools' own output go to stderr. stdout carries exactly two lines, last:
#   TRAIN_IMAGE_URI=<account>.dkr.ecr.<region>.amazonaws.com/<train-repo>:<tag>
#   SERVE_IMAGE_URI=<account>.dkr.ecr.<region>.amazonaws.com/<serve-repo>:<tag>
# so a script can capture them, e.g. `eval "$(scripts/build_push.sh --region eu-west-1)"`.
#
# The docker client is $DOCKER (default: docker). BuildKit is needed (RUN --mount): a client with the
# buildx plugin builds with `docker buildx build`; one older than 23 without it, with its classic
# `DOCKER_BUILDKIT=1 docker build` (scripts/engine.sh up names such a client when PATH's cannot).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly VERSIONS_FILE="containers/versions.env"
readonly DOCKERFILE="containers/Dockerfile"
DOCKER="${DOCKER:-docker}"
readonly PLATFORM="linux/amd64"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "build_push.sh: error: $*" >&2; exit 1; }
log() { echo "build_push.sh: $*" >&2; }
show() { printf '+' >&2; printf ' %q' "$@" >&2; printf '\n' >&2; }
# Print a command, then run it unless --dry-run; its output goes to stderr.
run() {
  show "$@"
  if [[ "${dry_run}" == 0 ]]; then "$@" >&2; fi
}

region="" account="" tag=""
train_repo="detector-train" serve_repo="detector-serve"
push=1 dry_run=0 local=0 flavour="cuda" network=""
overrides=()

need_value() { [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die "option $1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --region) need_value "$@"; region="$2"; shift 2 ;;
    --account) need_value "$@"; account="$2"; shift 2 ;;
    --train-repo) need_value "$@"; train_repo="$2"; shift 2 ;;
    --serve-repo) need_value "$@"; serve_repo="$2"; shift 2 ;;
    --tag) need_value "$@"; tag="$2"; shift 2 ;;
    --build-arg) need_value "$@"; overrides+=("$2"); shift 2 ;;
    --flavour | --flavor) need_value "$@"; flavour="$2"; shift 2 ;;
    --network) need_value "$@"; network="$2"; shift 2 ;;
    --no-push) push=0; shift ;;
    --local) local=1; push=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

case "${flavour}" in
  cuda) flavour_file="" flavour_suffix="" ;;
  cpu) flavour_file="containers/cpu.env" flavour_suffix="-cpu" ;;
  *) die "--flavour '${flavour}': expected cuda or cpu" ;;
esac
[[ -z "${network}" || "${network}" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "--network '${network}' is not a network name"

# --- tools -------------------------------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1; }
if [[ "${dry_run}" == 0 ]]; then
  have "${DOCKER}" || die "${DOCKER} is not installed or not on PATH: install Docker Engine or Docker Desktop (https://docs.docker.com/get-docker/)"
  "${DOCKER}" info >/dev/null 2>&1 \
    || die "cannot reach the Docker daemon ('${DOCKER} info' failed): start Docker, or give your user access to it (the docker group), or run scripts/engine.sh up"
fi
if [[ "${local}" == 0 ]] && { [[ "${push}" == 1 && "${dry_run}" == 0 ]] || [[ -z "${account}" ]]; }; then
  have aws || die "the AWS CLI (aws) is not installed or not on PATH: install AWS CLI v2 (https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html)"
fi

# How to build with BuildKit: `buildx` (the plugin), `classic` (DOCKER_BUILDKIT=1 with a client older
# than 23, whose builder is BuildKit without attestations), or nothing that can.
builder="buildx"
if [[ "${dry_run}" == 0 ]] && ! "${DOCKER}" buildx version >/dev/null 2>&1; then
  client_version="$("${DOCKER}" version --format '{{.Client.Version}}' 2>/dev/null || true)"
  client_version="${client_version%%$'\n'*}"
  if [[ "${client_version}" =~ ^([0-9]+)\. ]] && (( BASH_REMATCH[1] < 23 )); then
    builder="classic"
  else
    die "${DOCKER} (client ${client_version:-of unknown version}) has no buildx plugin, and its legacy builder cannot build these images (RUN --mount): install the buildx plugin (docker-buildx-plugin), or set DOCKER to a client that has it or is older than 23 (scripts/engine.sh up prints one)"
  fi
fi

# --- where to ----------------------------------------------------------------------------------
# Local names (--local) need neither a region nor an account.
if [[ "${local}" == 0 ]]; then
  if [[ -z "${region}" ]]; then
    region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
  fi
  if [[ -z "${region}" ]] && have aws; then
    region="$(aws configure get region 2>/dev/null || true)"
  fi
  [[ -n "${region}" ]] || die "no AWS region: pass --region, set AWS_REGION, or run 'aws configure set region REGION' (or --local to build local images only)"
  [[ "${region}" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]] || die "--region '${region}' does not look like an AWS region (for example eu-west-1)"

  if [[ -z "${account}" ]]; then
    if ! account="$(aws sts get-caller-identity --query Account --output text 2>&1)"; then
      die "not logged in to AWS: 'aws sts get-caller-identity' failed (${account//$'\n'/ }). Run 'aws configure' or 'aws sso login', or pass --account"
    fi
  fi
  [[ "${account}" =~ ^[0-9]{12}$ ]] || die "account id '${account}' is not a 12-digit AWS account id"
fi

repo_pattern='^([a-z0-9]+([._-][a-z0-9]+)*/)*[a-z0-9]+([._-][a-z0-9]+)*$'
for repo in "${train_repo}" "${serve_repo}"; do
  [[ "${repo}" =~ ${repo_pattern} && ${#repo} -le 256 ]] \
    || die "'${repo}' is not a valid ECR repository name (lowercase letters, digits, and . _ - / between them)"
done

if [[ -z "${tag}" ]]; then
  tag="$(git -C "${ROOT}" rev-parse --short HEAD 2>/dev/null)" \
    || die "${ROOT} is not a git checkout, so there is no revision to tag with: pass --tag"
  if [[ -n "$(git -C "${ROOT}" status --porcelain --untracked-files=no)" ]]; then
    tag="${tag}-dirty"
  fi
  tag="${tag}${flavour_suffix}"
fi
[[ "${tag}" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] \
  || die "--tag '${tag}' is not a valid image tag (letters, digits, _ . -, at most 128, not starting with . or -)"

if [[ "${local}" == 1 ]]; then
  registry=""
  train_uri="${train_repo}"
  serve_uri="${serve_repo}"
else
  domain="amazonaws.com"
  if [[ "${region}" == cn-* ]]; then domain="amazonaws.com.cn"; fi
  registry="${account}.dkr.ecr.${region}.${domain}"
  train_uri="${registry}/${train_repo}"
  serve_uri="${registry}/${serve_repo}"
fi
latest="latest${flavour_suffix}"

# --- build arguments: the pins, overrides, version and revision ----------------------------------
build_args=()
read_pins() {  # KEY=VALUE lines of a file, in order, as --build-arg pairs
  local file="$1" line
  [[ -f "${ROOT}/${file}" ]] || die "${file} not found under ${ROOT}"
  while IFS= read -r line || [[ -n "${line}" ]]; do
    [[ "${line}" =~ ^[[:space:]]*(#|$) ]] && continue
    [[ "${line}" =~ ^[A-Z][A-Z0-9_]*= ]] || die "${file}: expected KEY=VALUE lines, got '${line}'"
    build_args+=(--build-arg "${line}")
  done <"${ROOT}/${file}"
}
read_pins "${VERSIONS_FILE}"
if [[ -n "${flavour_file}" ]]; then read_pins "${flavour_file}"; fi
for override in "${overrides[@]+"${overrides[@]}"}"; do
  [[ "${override}" =~ ^[A-Z][A-Z0-9_]*= ]] || die "--build-arg '${override}': expected KEY=VALUE"
  build_args+=(--build-arg "${override}")
done
version="$(sed -n '/^version = "/{s/^version = "\(.*\)"$/\1/p;q;}' "${ROOT}/pyproject.toml")"
revision="$(git -C "${ROOT}" rev-parse HEAD 2>/dev/null || echo unknown)"
build_args+=(--build-arg "VERSION=${version:-0.0.0}" --build-arg "GIT_REVISION=${revision}")

# --- ECR repositories and login ----------------------------------------------------------------
ensure_repository() {
  local name="$1" error
  if [[ "${dry_run}" == 1 ]]; then
    show aws ecr describe-repositories --region "${region}" --registry-id "${account}" --repository-names "${name}"
    log "  and only if that reports RepositoryNotFoundException:"
  elif error="$(aws ecr describe-repositories --region "${region}" --registry-id "${account}" \
      --repository-names "${name}" 2>&1 >/dev/null)"; then
    log "ECR repository ${name} exists"
    return 0
  elif [[ "${error}" != *RepositoryNotFoundException* ]]; then
    die "cannot look up ECR repository ${name} in ${region}: ${error//$'\n'/ }"
  fi
  run aws ecr create-repository --region "${region}" --registry-id "${account}" --repository-name "${name}" \
    --image-scanning-configuration scanOnPush=true --image-tag-mutability MUTABLE
}

if [[ "${push}" == 1 ]]; then
  ensure_repository "${train_repo}"
  ensure_repository "${serve_repo}"
  if [[ "${dry_run}" == 1 ]]; then
    echo "+ aws ecr get-login-password --region ${region} | ${DOCKER} login --username AWS --password-stdin ${registry}" >&2
  else
    log "logging in to ${registry}"
    aws ecr get-login-password --region "${region}" | "${DOCKER}" login --username AWS --password-stdin "${registry}" >&2 \
      || die "docker login to ${registry} failed: check that your AWS identity may call ecr:GetAuthorizationToken"
  fi
fi

# --- build -------------------------------------------------------------------------------------
# BuildKit is required (RUN --mount). SageMaker accepts only Docker v2 image manifests: no
# provenance attestation (buildx's turns the image into an index) and Docker media types. The
# classic builder of clients before 23 makes neither.
export DOCKER_BUILDKIT=1
build() {
  local name="$1" uri="$2" command=()
  if [[ "${builder}" == buildx ]]; then
    command=("${DOCKER}" buildx build --platform "${PLATFORM}" --provenance=false --output type=docker)
  else
    command=("${DOCKER}" build --platform "${PLATFORM}")
  fi
  if [[ -n "${network}" ]]; then command+=(--network "${network}"); fi
  run "${command[@]}" --file "${ROOT}/${DOCKERFILE}" --target "${name}" "${build_args[@]}" \
    --tag "${uri}:${tag}" --tag "${uri}:${latest}" "${ROOT}"
}
build train "${train_uri}"
build serve "${serve_uri}"

if [[ "${push}" == 1 ]]; then
  for ref in "${train_uri}:${tag}" "${train_uri}:${latest}" "${serve_uri}:${tag}" "${serve_uri}:${latest}"; do
    run "${DOCKER}" push "${ref}"
  done
fi

echo "TRAIN_IMAGE_URI=${train_uri}:${tag}"
echo "SERVE_IMAGE_URI=${serve_uri}:${tag}"
