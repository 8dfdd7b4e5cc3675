#!/usr/bin/env bash
# The one device call of the ORT CUDA end-to-end run (nothing is built there). Before it, the onnxruntime-gpu
# wheel parts part00..part06 of .device/ortgpu-e2e were copied into /root/ortgpu-e2e by one call each
# (bench/gpu_e2e/README.md); this call carries part07, build/e2e (CUDA custom-op library + graphs without
# weights) and runs: install ORT-GPU, fill weights, the CUDA-vs-CPU test, the decode benchmark at B = 1 and 8
# (tables last).
# --real: the real SmolLM2 instead (bench/gpu_e2e/stage_real.sh; its calls in build/e2e-real/calls.md): stash
# this call's pack part, rebuild model.onnx.data from /root/e2e-real-pack, run the test on build/e2e-real/models.
# --verify: the ORT CUDA op tests (tests/ort/test_cuda_ops.py, test_hadamard_promises.py) on build/e2e/lib, then the TensorRT plugin harness
# (build/trt-harness from plugins/trt/harness/build.sh: run_cases.py, then compare_with_ort.py on its cases).
#   bash bench/gpu_e2e/device_run.sh [--quick | --real | --verify]
set -uo pipefail
here=$PWD
out="${OUT:-/tmp/out}"
mode=random
[ "${1:-}" = --real ] && mode=real
[ "${1:-}" = --verify ] && mode=verify
mkdir -p "$out" /root/ortgpu-e2e
export PYTHONUNBUFFERED=1

if ! PYTHONPATH=/root/ortsite-e2e python3 -c "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers()" 2>/dev/null; then
  # part07 rides in this call, or an earlier call stashed it (device_stash.sh); the checksum below finds a gap
  if [ -d .device/ortgpu-e2e/part07 ]; then cp .device/ortgpu-e2e/part07/* /root/ortgpu-e2e/ || exit 1; fi
  cd /root/ortgpu-e2e || exit 1
  name=$(awk '{print $2}' SHA256)
  ls p?? | sort | xargs cat > "$name"
  sha256sum -c SHA256 || { ls -la; echo "device_run: wheel parts incomplete (machine replaced?)"; exit 3; }
  python3 -m pip install -q --no-index --no-deps --no-compile --target /root/ortsite-e2e "$name" || exit 1
  cd "$here"
fi
export PYTHONPATH="/root/ortsite-e2e:$here"
export TQEXPORT_ORT_LIBRARY="$here/build/e2e/lib/libtqexport_ort.so" TQEXPORT_E2E_MODELS="$here/build/e2e/models"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"

if [ "$mode" = verify ]; then
  timeout 300 python3 -m pytest -p no:cacheprovider -q --tb=short -rf tests/ort/test_cuda_ops.py \
    tests/ort/test_hadamard_promises.py 2>&1 \
    | tee "$out/test_cuda_ops.log" | tail -6
  rc=${PIPESTATUS[0]}
  work=/tmp/tq-cases
  rm -rf "$work"
  timeout 200 python3 plugins/trt/harness/run_cases.py --harness build/trt-harness/tq_trt_harness \
    --lib build/trt-harness/lib/libtqexport_trt.so --work "$work" --time 200 2>&1 | tee "$out/trt_cases.log" | tail -18
  rc2=${PIPESTATUS[0]}
  timeout 200 python3 plugins/trt/harness/compare_with_ort.py --ort-lib "$TQEXPORT_ORT_LIBRARY" --work "$work" 2>&1 \
    | tee "$out/trt_vs_ort.log" | tail -10
  rc3=${PIPESTATUS[0]}
  echo "device_run --verify: cuda op tests rc=$rc, trt harness rc=$rc2, trt vs ort rc=$rc3"
  exit $((rc | rc2 | rc3))
fi

if [ "$mode" = real ]; then
  real=build/e2e-real/models
  bash bench/gpu_e2e/device_stash.sh || exit 1
  start=$SECONDS
  python3 -m bench.gpu_e2e.unpack_real_weights --manifest "$real/weights_pack.json" --parts /root/e2e-real-pack \
    --out "$real/smollm2/model.onnx.data" --link-into "$real/smollm2-tq4" "$real/smollm2-tq4-w" || exit 3
  echo "weights unpacked in $((SECONDS - start)) s"
  TQEXPORT_E2E_MODELS="$here/$real" TQEXPORT_E2E_WEIGHTS=real timeout 420 python3 -m pytest -p no:cacheprovider \
    -rA -s --tb=short tests/gpu/test_converted_model_cuda.py 2>&1 | tee "$out/test_e2e_real.log" \
    | grep -E "^\||passed|failed|PASSED|FAILED|SKIPPED|Error|error" | tail -24
  exit "${PIPESTATUS[0]}"
fi

start=$SECONDS
python3 -m bench.gpu_e2e.fill_weights build/e2e/models/smol/model.onnx \
  --share-with build/e2e/models/smol-tq4/model.onnx build/e2e/models/smol-tq4-w/model.onnx \
  build/e2e/models/smol-tq4-buf/model.onnx build/e2e/models/smol-tq8/model.onnx
python3 -m bench.gpu_e2e.fill_weights build/e2e/models/llama8b/model.onnx \
  --share-with build/e2e/models/llama8b-tq4/model.onnx build/e2e/models/llama8b-tq3/model.onnx
echo "weights filled in $((SECONDS - start)) s"

timeout 330 python3 -m pytest -p no:cacheprovider -rA -s --tb=short tests/gpu/test_converted_model_cuda.py \
  2>&1 | tee "$out/test_e2e.log" | grep -E "max\||passed|failed|PASSED|FAILED|SKIPPED|Error|error" | tail -20
steps=30
[ "${1:-}" = --quick ] && steps=10
timeout 280 python3 bench/decode_ort_gpu.py --models build/e2e/models --steps "$steps" 2>&1 | tee "$out/bench.log" | tail -9
timeout 280 python3 bench/decode_ort_gpu.py --models build/e2e/models --steps "$steps" --batch 8 2>&1 \
  | tee "$out/bench_b8.log" | tail -9
