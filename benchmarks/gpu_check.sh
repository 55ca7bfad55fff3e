#!/usr/bin/env bash
# The GPU numbers in one run, on a machine with a GPU and nothing to download (or, with --cpu, the same
# steps shortened on the CPU, to check the script itself).
#
# Usage: benchmarks/gpu_check.sh [--cpu] [--out DIR] [--skip-build]
#   --cpu         the CPU path: detectron2 as installed, short runs of every benchmark
#   --out DIR     where the results go (default: $OUT when set, else gpu-check/)
#   --skip-build  do not build detectron2's ops (already built in .gpu/detectron2)
#
# What it needs in .gpu/ (an ignored folder, prepared on a machine with the network; see docs/training.md,
# "GPU numbers"): detectron2's sources at the commit pinned in containers/versions.env in
# .gpu/detectron2, and wheels of what the GPU machine lacks in .gpu/wheels (fvcore, iopath, yacs,
# omegaconf, hydra-core, antlr4-python3-runtime, termcolor, pycocotools, portalocker). With --cpu neither.
#
# Steps, each timed, each result a JSON file in DIR:
#   1. environment.json   GPU, driver, torch, CUDA, Python (nvidia-smi -L)
#   2. build              pip install of .gpu/wheels; detectron2's ops compiled in place for this GPU's
#                         architecture only (TORCH_CUDA_ARCH_LIST from torch, MAX_JOBS = cores)
#   3. train.json         benchmarks/train_throughput.py --gpu: detector train (auto: fp16) against
#                         DefaultTrainer fp32 and AMPTrainer, R50-FPN at 800 x 1066, batch 16, images/s
#   4. serve.json         benchmarks/serve_latency.py --model-only: the serving Predictor against
#                         DefaultPredictor, R50-FPN, 800 px images, p50 of one-image calls
#   5. transfer.json      benchmarks/transfer.py: a small model trained here, then fine-tuned (AP)
# A step that fails is recorded in summary.txt and the next one still runs; the exit status is 1 then.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

cpu=0 skip_build=0 out="${OUT:-gpu-check}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu) cpu=1; shift ;;
    --skip-build) skip_build=1; shift ;;
    --out) [[ $# -ge 2 ]] || { echo "gpu_check.sh: --out needs a folder" >&2; exit 2; }; out="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "${out}"
out="$(cd "${out}" && pwd)"
PYTHON="${PYTHON:-$(command -v python3)}"
summary="${out}/summary.txt"
: >"${summary}"
failed=0

step() {  # step NAME COMMAND...: run, time, record
  local name="$1" start code
  shift
  echo "gpu_check.sh: --- ${name}" >&2
  start="$(date +%s)"
  "$@" >"${out}/${name}.log" 2>&1
  code=$?
  printf '%-12s %5d s  exit %d\n' "${name}" "$(( $(date +%s) - start ))" "${code}" | tee -a "${summary}" >&2
  if [[ "${code}" != 0 ]]; then
    failed=1
    tail -n 20 "${out}/${name}.log" >&2
  fi
  return 0
}

# shellcheck disable=SC2329  # run through step
environment() {
  "${PYTHON}" - "${out}/environment.json" <<'EOF'
import json, platform, subprocess, sys
import torch
gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip() if torch.cuda.is_available() else ""
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "nvidia_smi": gpus,
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if torch.cuda.is_available() else None,
        "cpus": __import__("os").cpu_count()}
open(sys.argv[1], "w").write(json.dumps(info, indent=2) + "\n")
print(json.dumps(info))
EOF
}

# shellcheck disable=SC2329  # run through step
build() {
  if [[ -d .gpu/wheels ]]; then
    "${PYTHON}" -m pip install --no-index --find-links .gpu/wheels fvcore iopath yacs omegaconf hydra-core \
      antlr4-python3-runtime termcolor pycocotools portalocker || return 1
  fi
  [[ -d .gpu/detectron2 ]] || { echo "no .gpu/detectron2: see the usage above" >&2; return 1; }
  local arch
  arch="$("${PYTHON}" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))')" || return 1
  (cd .gpu/detectron2 && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${arch}" MAX_JOBS="$(nproc)" "${PYTHON}" setup.py build_ext --inplace) || return 1
  PYTHONPATH="$(pwd)/.gpu/detectron2" "${PYTHON}" -c "import detectron2._C as ops; assert ops.has_cuda(); print('detectron2 ops for CUDA', ops.get_cuda_version())"
}

if [[ "${cpu}" == 1 ]]; then
  step environment environment
  # Short runs: the plumbing, not the numbers.
  step train "${PYTHON}" benchmarks/train_throughput.py --iters 4 --rounds 1 --no-profile --json "${out}/train.json"
  step serve "${PYTHON}" benchmarks/serve_latency.py --model-only --device cpu --images 2 --image-size 128 \
    --model-rounds 1 --model-calls 2 --json "${out}/serve.json"
  step transfer "${PYTHON}" benchmarks/transfer.py --source-iterations 4 --iterations 2 --images 8 --json "${out}/transfer.json"
else
  step environment environment
  if [[ "${skip_build}" == 0 ]]; then step build build; fi
  PYTHONPATH="$(pwd)/.gpu/detectron2${PYTHONPATH:+:${PYTHONPATH}}"
  export PYTHONPATH
  step train "${PYTHON}" benchmarks/train_throughput.py --gpu --rounds 2 --json "${out}/train.json"
  step serve "${PYTHON}" benchmarks/serve_latency.py --model-only --device cuda \
    --config COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml --image-size 800 --model-rounds 2 --model-calls 50 \
    --json "${out}/serve.json"
  step transfer "${PYTHON}" benchmarks/transfer.py --json "${out}/transfer.json"
fi
echo "gpu_check.sh: results in ${out}" >&2
cat "${summary}" >&2
exit "${failed}"
