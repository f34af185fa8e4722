#!/usr/bin/env bash
# The DPO-step measurements of issue #7 in one GPU call: real-size HunyuanVideo (random bf16 weights),
# LoRA r=64 on to_q/to_k/to_v/to_out.0, at the three sizes, for every lever prefopt exposes.
# The device image lacks diffusers/pymoo/pluggy: carry them as wheels in .whl (see the device docs), then
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
# and run:  bash benchmarks/gpu_matrix.sh "$OUT"
set -uo pipefail
out=${1:-benchmarks/gpu-results}
mkdir -p "$out"
export PREFOPT_LOAD_PLUGINS="" PYTHONUNBUFFERED=1
run() { python3 benchmarks/dpo_step.py --size full --dtype bfloat16 --lora-rank 64 --steps 3 --warmup 1 "$@"; }
for size in "33 320 512" "61 480 848" "61 720 1280"; do
  set -- $size
  tag="${1}x${2}x${3}"
  run --frames "$1" --height "$2" --width "$3" --gradient-checkpointing \
      --json "$out/$tag-ckpt-all.json" 2>&1 | tee "$out/$tag-ckpt-all.txt"
  run --frames "$1" --height "$2" --width "$3" --gradient-checkpointing --checkpoint-every 2 \
      --variants "prefopt joint,prefopt split" --json "$out/$tag-ckpt-2.json" 2>&1 | tee "$out/$tag-ckpt-2.txt"
  run --frames "$1" --height "$2" --width "$3" --gradient-checkpointing --offload \
      --variants "prefopt split" --json "$out/$tag-offload.json" 2>&1 | tee "$out/$tag-offload.txt"
  run --frames "$1" --height "$2" --width "$3" --gradient-checkpointing --attention-backend _native_cudnn \
      --variants "prefopt joint" --json "$out/$tag-cudnn.json" 2>&1 | tee "$out/$tag-cudnn.txt"
done
