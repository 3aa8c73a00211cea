#!/usr/bin/env bash
# The CUDA path, proved in one run on one GPU (sized for one H200: under 8 minutes).
#
#   scripts/gpu_check.sh [OUT]          # OUT defaults to gpu-check-<UTC time>/; PYTHON=.venv/bin/python
#
#   1. gpu-tests    the gpu-marked tests: fused SDPA forced at every official attention geometry,
#                   parity with transformers in float32, bfloat16 and float16 (tests/modeling/test_cuda.py)
#   2. model-bench  the model benchmark at the official sizes on cuda (benchmarks.run --device cuda)
#   3. server       perceiver-serve --require-gpu on official-size text, image and flow models with
#                   device = "cuda", dtype = "auto"; its /models and /metrics before and after
#   4. sweep-*      the load generator against it at 1…64 concurrent clients (text, image, flow)
#
# Everything lands in OUT: each step's stdout (NAME.out) and stderr (NAME.log), gpu-tests.xml,
# model-bench/results.{json,md}, sweep-*.json (the load generator's results), server.log,
# models.json, metrics-*.txt, device.json, nvidia-smi.txt, summary.txt. A failing step
# is recorded in summary.txt and the later ones still run; the exit status is 1 if any failed,
# 2 if there is no CUDA device. Each step has a time limit, so the whole run stays bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}
PYTHON=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: torch sees no CUDA device ($PYTHON); nothing to check here" >&2
  exit 2
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
failed=0

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$OUT/summary.txt"; }

# step NAME SECONDS COMMAND...: run under a time limit; stdout in OUT/NAME.out, stderr in OUT/NAME.log.
step() {
  local name=$1 limit=$2 started=$SECONDS rc=0
  shift 2
  log "$name: started (limit ${limit} s)"
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.out" 2>"$OUT/$name.log" || rc=$?
  log "$name: exit $rc after $((SECONDS - started)) s"
  if [ "$rc" -ne 0 ]; then failed=1; fi
  return 0
}

"$PYTHON" -m benchmarks.gpu_check device >"$OUT/device.json"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
log "device: $(tr -d '\n' <"$OUT/device.json" | tr -s ' ')"

step gpu-tests 100 "$PYTHON" -m pytest tests/modeling/test_cuda.py -m gpu -q -p no:cacheprovider \
  --junitxml "$OUT/gpu-tests.xml"
step model-bench 170 "$PYTHON" -m benchmarks.run --device cuda --reps 3 --threads 8 --out "$OUT/model-bench"
step repository 40 "$PYTHON" -m benchmarks.gpu_check repository "$OUT/repository" --device cuda --dtype auto

port=$("$PYTHON" -m benchmarks.gpu_check port)
url="http://127.0.0.1:$port"
log "server: starting on $url"
"$PYTHON" -m perceiver_serve.cli --model-repository "$OUT/repository" --http-port "$port" --grpc-port -1 \
  --require-gpu --log-format json >"$OUT/server.log" 2>&1 &
server=$!
if "$PYTHON" -m benchmarks.gpu_check wait-ready "$url" 60; then
  log "server: ready"
  "$PYTHON" -m benchmarks.gpu_check fetch "$url/models" "$OUT/models.json"
  "$PYTHON" -m benchmarks.gpu_check fetch "$url/metrics" "$OUT/metrics-ready.txt"
  for sweep in "text text-mid 40 --levels 1,2,4,8,16,32,64" \
               "image image 40 --levels 1,2,4,8,16,32,64 --image-size 224" \
               "flow flow 30 --levels 1,4,16,64 --flow-size 368x496"; do
    read -r endpoint model limit extra <<<"$sweep"
    # shellcheck disable=SC2086  # $extra is a list of flags
    step "sweep-$endpoint" "$limit" "$PYTHON" -m benchmarks.loadgen sweep --endpoint "$endpoint" \
      --target "cuda=$url#$model" --requests 5000 --duration 3 $extra
    mv "$OUT/sweep-$endpoint.out" "$OUT/sweep-$endpoint.json"
  done
  "$PYTHON" -m benchmarks.gpu_check fetch "$url/metrics" "$OUT/metrics-after.txt"
else
  log "server: not ready within 60 s (see server.log)"
  failed=1
fi
kill -TERM "$server" 2>/dev/null || true
server_rc=0
wait "$server" || server_rc=$?
log "server: exit $server_rc"
if [ "$server_rc" -ne 0 ]; then failed=1; fi

log "done in $SECONDS s: $([ "$failed" -eq 0 ] && echo 'every step passed' || echo 'a step failed') ($OUT)"
exit "$failed"
