#!/usr/bin/env bash
# One device call of a multi-call transfer: copy what this call carried into /root, which outlives the call
# while the machine stays warm (the checkout copy is refreshed each call). Wheel parts (.device/ortgpu-e2e/
# partNN) go to /root/ortgpu-e2e, weight-pack parts (build/e2e-real/packNN) to /root/e2e-real-pack.
# Copying a part again (an ignored path left from an earlier call) is harmless: same name, same bytes.
#   bash bench/gpu_e2e/device_stash.sh
set -euo pipefail
mkdir -p /root/ortgpu-e2e /root/e2e-real-pack
shopt -s nullglob
for part in .device/ortgpu-e2e/part*/; do cp "$part"* /root/ortgpu-e2e/; done
for part in build/e2e-real/pack*/; do cp "$part"* /root/e2e-real-pack/; done
echo "stashed: wheel $(ls /root/ortgpu-e2e | tr '\n' ' ')| pack $(ls /root/e2e-real-pack | tr '\n' ' ')"
du -sh /root/ortgpu-e2e /root/e2e-real-pack
