#!/usr/bin/env bash
# Issue #7's DPO-step measurements on one GPU: real-size HunyuanVideo (random bf16 weights), LoRA r=64 on
# to_q/to_k/to_v/to_out.0, 256 valid text tokens (the floor's count) unless a row says otherwise.
# Each stage fits one device call (10 minutes); every run starts with or beside the straightforward step.
#
# On this machine, once: bash benchmarks/device_wheels.sh (diffusers, pluggy, torchao → .whl/, ignored).
# The device call, carrying .whl:   bash benchmarks/gpu_matrix.sh "$OUT" small
# Stages: small (33×320×512), medium (61×480×848), paper (61×720×1280); smoke: one tiny run (setup check).
set -uo pipefail
out=${1:?usage: gpu_matrix.sh OUT_DIR small|medium|paper|smoke}
stage=${2:?usage: gpu_matrix.sh OUT_DIR small|medium|paper|smoke}
python=${PYTHON:-python3}
budget=${BUDGET_S:-560}  # the device runs a command for 600 s at most; stop starting runs before that
mkdir -p "$out" && out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
# No pip install of prefopt there: its packages come from the checkout (plugins/ is `prefopt_plugins`).
site=/tmp/prefopt-site
if [ -d .whl ]; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl || exit 1
fi
mkdir -p "$site" && ln -sfn "$PWD/plugins" "$site/prefopt_plugins"
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PREFOPT_LOAD_PLUGINS="" PYTHONUNBUFFERED=1
"$python" -c "import torch, diffusers, peft; print('torch', torch.__version__, 'diffusers', diffusers.__version__, \
'peft', peft.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" | tee "$out/versions.txt"

run() {  # run TAG ARGS...: one benchmark invocation, its table and JSON under $out; skipped past the budget
  local tag=$1; shift
  local left=$((budget - SECONDS))
  if ((left < 60)); then echo "skipped $tag: ${left}s of the call's budget left" | tee "$out/$tag.txt"; return; fi
  timeout "$left" "$python" benchmarks/dpo_step.py --size full --dtype bfloat16 --lora-rank 64 \
      --gradient-checkpointing --json "$out/$tag.json" "$@" 2>&1 | tail -n 8 | tee "$out/$tag.txt"
}

# Runs in order of priority: when the budget runs out, the last ones are skipped (and say so).
case $stage in
  small)
    s=(--frames 33 --height 320 --width 512 --steps 3 --warmup 1)
    run small-base "${s[@]}"                                  # straightforward, joint, split (checkpoint all)
    run small-compile "${s[@]}" --variants "prefopt joint" --compile
    run small-cudnn "${s[@]}" --variants "prefopt joint" --attention-backend _native_cudnn
    run small-keepattn "${s[@]}" --variants "prefopt joint" --compile --checkpoint-save-attention   # 35 GiB predicted
    run small-split-nockpt "${s[@]}" --variants "prefopt split" --compile --checkpoint-every 0   # 70.4 GiB predicted
    run small-ckpt2 "${s[@]}" --variants "prefopt joint" --compile --checkpoint-every 2          # 74.0 GiB: the edge
    run small-fp8 "${s[@]}" --variants "straightforward,prefopt joint" --compile --fp8 tensorwise
    run small-flash "${s[@]}" --variants "prefopt joint" --attention-backend _native_flash
    run small-padded "${s[@]}" --variants "straightforward,prefopt joint" --text-padding keep   # text lever off
    run small-64tok "${s[@]}" --variants "straightforward,prefopt joint" --valid-text-tokens 64
    ;;
  medium)
    m=(--frames 61 --height 480 --width 848 --steps 2 --warmup 1)
    run medium-base "${m[@]}" --variants "straightforward,prefopt joint" --compile
    run medium-keepattn "${m[@]}" --variants "prefopt joint" --compile --checkpoint-save-attention   # 67.5 GiB predicted
    run medium-fp8 "${m[@]}" --variants "prefopt joint" --compile --fp8 tensorwise
    ;;
  paper)
    p=(--frames 61 --height 720 --width 1280 --steps 1 --warmup 1)
    run paper-base "${p[@]}" --variants "straightforward,prefopt split" --compile   # straightforward: OOM expected
    run paper-keepattn "${p[@]}" --variants "prefopt split" --compile --checkpoint-save-attention   # 72.9 GiB predicted
    run paper-offload "${p[@]}" --variants "prefopt joint" --compile --offload   # 40.6 GiB + 79 GiB over PCIe predicted
    run paper-cudnn "${p[@]}" --variants "prefopt split" --compile --attention-backend _native_cudnn  # joint: 80 GiB predicted
    ;;
  smoke)
    run smoke --size tiny --dtype float32 --steps 1 --warmup 1 --valid-text-tokens 10 --checkpoint-every 2 \
        --checkpoint-save-attention
    ;;
  *) echo "unknown stage $stage (small, medium, paper, smoke)"; exit 2 ;;
esac
