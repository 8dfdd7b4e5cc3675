#!/usr/bin/env bash
# A/B timing of harness builds over several bench/attention_gpu.py argument sets (two interleaved rounds each),
# decode kernel only (--skip-sdpa). Logs under $OUT as ab_<set>_<build>_<round>.log; a per-row table of the
# change against the first build follows (bench/gpu_harness/ab_table.py).
#   bash bench/gpu_harness/ab_shapes.sh "ARGS1;ARGS2;..." BASE_LIB LIB...
# A LIB may carry environment settings for its runs: LIB@VAR=VALUE[,VAR=VALUE] (one build, several knobs).
# e.g. ab_shapes.sh ";--quick --shape 32,8,64;--quick --widths 4/3,3/4" build/gpu_base/lib... build/gpu_new/lib...
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/out}"
mkdir -p "$out"
IFS=';' read -r -a sets <<<"$1"
shift
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
for i in "${!sets[@]}"; do
  read -r -a args <<<"${sets[$i]}"
  for round in 1 2; do
    for spec in "$@"; do
      lib=${spec%%@*}
      envs=()
      [[ $spec == *@* ]] && IFS=',' read -r -a envs <<<"${spec#*@}"
      name=$(python3 bench/gpu_harness/ab_table.py --name "$spec")
      env "${envs[@]}" TQ_KERNELS_LIB="$lib" timeout 200 python3 bench/attention_gpu.py --skip-sdpa "${args[@]}" \
        >"$out/ab_set${i}_${name}_$round.log" 2>&1 || echo "set $i $name round $round failed"
    done
  done
  echo "== set $i: ${sets[$i]:-(default)}"
  python3 bench/gpu_harness/ab_table.py "$out" "set$i" "$@"
done
