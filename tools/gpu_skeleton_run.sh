#!/usr/bin/env bash
# The gpu profile's generation part (SD-1.5 + the LCM-LoRA) on hub-layout skeletons: one
# short run that proves the stages end to end at the published sizes and records each
# stage's wall time and peak host RSS / VRAM (BENCHMARKS.md, "gpu profile on skeletons").
#
#   bash tools/gpu_skeleton_run.sh OUT [DEPTH] [STEPS] [PER_PROMPT] [RESOLUTION] [cpu]
#   bash tools/gpu_skeleton_run.sh build/gpu-run full 100 8 512     # a GPU machine, ~6 min
#   bash tools/gpu_skeleton_run.sh build/cpu-run small 2 2 64 cpu   # a CPU rehearsal
#
# It runs the stage scripts (no dvc) in a scratch copy of HEAD, with params.yaml set to
# the gpu profile, on the skeletons `python -m cxrlab.skeletons` writes, offline. Inputs:
# data/raw/pneumoniamnist/pneumoniamnist.npz and data/prepared/clip_subset (`dvc pull`).
# WHEELS=dir installs the wheels there first (a machine that lacks the project's packages).
set -u
OUT=$(realpath -m "$1") DEPTH=${2:-full} STEPS=${3:-100} PER=${4:-8} RES=${5:-512} CPU=${6:-}
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d) LOGS=$OUT/logs
mkdir -p "$LOGS" && : > "$OUT/summary.txt"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HOME=$WORK/hf
if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=$WORK/site
fi
export PYTHONPATH=$WORK/code/src:${PYTHONPATH:-}
mkdir -p "$WORK/code" && git -C "$REPO" archive HEAD | tar -x -C "$WORK/code" && cd "$WORK/code"
mkdir -p data/raw/pneumoniamnist data/prepared
cp "$REPO/data/raw/pneumoniamnist/pneumoniamnist.npz" data/raw/pneumoniamnist/ || exit 1
cp -r "$REPO/data/prepared/clip_subset" data/prepared/ || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
python3 -c "import torch, diffusers, transformers, peft; print('torch', torch.__version__, \
'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'peft', \
peft.__version__, 'cuda', torch.cuda.is_available())"

stage() {  # NAME COMMAND...: its log under $LOGS, its wall time and peak memory in summary.txt
  local name=$1 t0 rc; shift
  t0=$(date +%s.%N)
  "$@" > "$LOGS/$name.log" 2>&1; rc=$?
  printf '%-28s rc=%s wall=%6.1fs  %s\n' "$name" "$rc" "$(awk "BEGIN{print $(date +%s.%N) - $t0}")" \
    "$(grep -o 'done in.*' "$LOGS/$name.log" | tail -1)" | tee -a "$OUT/summary.txt"
  [ "$rc" = 0 ] || tail -20 "$LOGS/$name.log"
  return "$rc"
}

# params.yaml: the gpu profile, its diffusion part (the other parts' skeletons are not
# built yet), at STEPS LoRA steps, PER_PROMPT images per class and sampler, RESOLUTION px.
set_params() {  # [no-ckpt]
  python3 - "$STEPS" "$PER" "$RES" "$CPU" "$@" <<'PY'
import sys
import yaml
steps, per_prompt, res = (int(a) for a in sys.argv[1:4])
flags = set(sys.argv[4:])
p = yaml.safe_load(open("params.yaml"))
gpu = p["profiles"]["gpu"]
for part in ("clip", "segmentation", "captioning"):
    gpu.pop(part, None)
p["profile"] = "gpu"
gpu["lora"].update(steps=steps, eval_every=max(1, steps // 2), val_per_class=50)
gpu["diffusion"]["model"]["resolution"] = res
gpu["diffusion"]["generate"].update(per_prompt=per_prompt, batch_size=16)
if "no-ckpt" in flags:
    gpu["lora"]["gradient_checkpointing"] = False
if "cpu" in flags:
    gpu.update(device="cpu", precision="fp32")
yaml.safe_dump(p, open("params.yaml", "w"), sort_keys=False)
PY
}

stage skeletons python3 -m cxrlab.skeletons --depth "$DEPTH" "$HF_HOME" || exit 1
set_params
stage hub_check python3 -m cxrlab.hub check || exit 1
for s in train_vae train_diffusion_base train_lcm_lora train_lora; do
  stage "$s" python3 "stages/$s.py" || exit 1
done
grep -h "saved models/diffusion/lora" "$LOGS/train_lora.log"
for v in base lora; do stage "generate_$v" python3 stages/generate_images.py "$v"; done
grep -h "images/s" "$LOGS"/generate_*.log
python3 -c "
import numpy as np
for v in ('base', 'lora'):
    for s in ('lcm', 'ddim'):
        x = np.load(f'data/generated/{v}/{s}.npz')['images']
        print(v, s, x.shape, x.dtype, 'mean %.1f std %.1f' % (x.mean(), x.std()))
"
# the same LoRA step without gradient checkpointing, for the memory it saves
STEPS=20 set_params no-ckpt
rm -rf data/checkpoints
stage train_lora_no_checkpointing python3 stages/train_lora.py
rm -rf "$WORK"
