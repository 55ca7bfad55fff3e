#!/usr/bin/env bash
# Build the training and serving images for linux/amd64, push them to Amazon ECR and print their URIs.
#
# Usage: scripts/build_push.sh [options]
#   --region REGION        AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION, then `aws configure get region`)
#   --account ID           12-digit AWS account id of the registry (default: the caller's, from STS)
#   --train-repo NAME      ECR repository of the training image (default: detector-train)
#   --serve-repo NAME      ECR repository of the serving image (default: detector-serve)
#   --tag TAG              image tag (default: the git short revision, "-dirty" appended when tracked
#                          files have uncommitted changes); every image is also tagged "latest"
#   --build-arg KEY=VALUE  override a pin of containers/versions.env for this build (repeatable)
#   --no-push              build and tag only: no ECR repository, login or push
#   --dry-run              print the commands instead of running them (STS is still asked for the
#                          account when --account is not given)
#   -h, --help             show this help
#
# Progress, commands and the tools' own output go to stderr. stdout carries exactly two lines, last:
#   TRAIN_IMAGE_URI=<account>.dkr.ecr.<region>.amazonaws.com/<train-repo>:<tag>
#   SERVE_IMAGE_URI=<account>.dkr.ecr.<region>.amazonaws.com/<serve-repo>:<tag>
# so a script can capture them, e.g. `eval "$(scripts/build_push.sh --region eu-west-1)"`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly VERSIONS_FILE="containers/versions.env"
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
push=1 dry_run=0
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
    --no-push) push=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

# --- tools -------------------------------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1; }
if [[ "${dry_run}" == 0 ]]; then
  have docker || die "docker is not installed or not on PATH: install Docker Engine or Docker Desktop (https://docs.docker.com/get-docker/)"
  docker info >/dev/null 2>&1 \
    || die "cannot reach the Docker daemon ('docker info' failed): start Docker, or give your user access to it (the docker group)"
fi
if [[ "${push}" == 1 && "${dry_run}" == 0 ]] || [[ -z "${account}" ]]; then
  have aws || die "the AWS CLI (aws) is not installed or not on PATH: install AWS CLI v2 (https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html)"
fi

# --- where to ----------------------------------------------------------------------------------
if [[ -z "${region}" ]]; then
  region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
fi
if [[ -z "${region}" ]] && have aws; then
  region="$(aws configure get region 2>/dev/null || true)"
fi
[[ -n "${region}" ]] || die "no AWS region: pass --region, set AWS_REGION, or run 'aws configure set region REGION'"
[[ "${region}" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]] || die "--region '${region}' does not look like an AWS region (for example eu-west-1)"

if [[ -z "${account}" ]]; then
  if ! account="$(aws sts get-caller-identity --query Account --output text 2>&1)"; then
    die "not logged in to AWS: 'aws sts get-caller-identity' failed (${account//$'\n'/ }). Run 'aws configure' or 'aws sso login', or pass --account"
  fi
fi
[[ "${account}" =~ ^[0-9]{12}$ ]] || die "account id '${account}' is not a 12-digit AWS account id"

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
fi
[[ "${tag}" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] \
  || die "--tag '${tag}' is not a valid image tag (letters, digits, _ . -, at most 128, not starting with . or -)"

domain="amazonaws.com"
if [[ "${region}" == cn-* ]]; then domain="amazonaws.com.cn"; fi
registry="${account}.dkr.ecr.${region}.${domain}"
train_uri="${registry}/${train_repo}"
serve_uri="${registry}/${serve_repo}"

# --- build arguments: the pins, overrides, version and revision ----------------------------------
[[ -f "${ROOT}/${VERSIONS_FILE}" ]] || die "${VERSIONS_FILE} not found under ${ROOT}"
build_args=()
while IFS= read -r line || [[ -n "${line}" ]]; do
  [[ "${line}" =~ ^[[:space:]]*(#|$) ]] && continue
  [[ "${line}" =~ ^[A-Z][A-Z0-9_]*= ]] || die "${VERSIONS_FILE}: expected KEY=VALUE lines, got '${line}'"
  build_args+=(--build-arg "${line}")
done <"${ROOT}/${VERSIONS_FILE}"
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
    echo "+ aws ecr get-login-password --region ${region} | docker login --username AWS --password-stdin ${registry}" >&2
  else
    log "logging in to ${registry}"
    aws ecr get-login-password --region "${region}" | docker login --username AWS --password-stdin "${registry}" >&2 \
      || die "docker login to ${registry} failed: check that your AWS identity may call ecr:GetAuthorizationToken"
  fi
fi

# --- build -------------------------------------------------------------------------------------
# BuildKit is required (RUN --mount). SageMaker accepts only Docker v2 image manifests: no
# provenance attestation (it turns the image into an index) and Docker media types.
export DOCKER_BUILDKIT=1
build() {
  local name="$1" uri="$2"
  run docker build --platform "${PLATFORM}" --provenance=false --output type=docker \
    --file "${ROOT}/containers/${name}/Dockerfile" --target "${name}" "${build_args[@]}" \
    --tag "${uri}:${tag}" --tag "${uri}:latest" "${ROOT}"
}
build train "${train_uri}"
build serve "${serve_uri}"

if [[ "${push}" == 1 ]]; then
  for ref in "${train_uri}:${tag}" "${train_uri}:latest" "${serve_uri}:${tag}" "${serve_uri}:latest"; do
    run docker push "${ref}"
  done
fi

echo "TRAIN_IMAGE_URI=${train_uri}:${tag}"
echo "SERVE_IMAGE_URI=${serve_uri}:${tag}"
