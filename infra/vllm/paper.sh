#!/usr/bin/env bash
# The paper's setup, matching configs/paper.yaml: one server per role, each on its port.
#   role   model                         port  GPUs (default)       tensor parallel
#   vlm    Qwen/Qwen2.5-VL-72B-Instruct  8000  0,1,2,3               TP=4 (or 8)
#   llm    Qwen/Qwen2.5-72B-Instruct     8001  4,5,6,7               TP=4 (or 8)
#   judge  Qwen/Qwen2.5-VL-7B-Instruct   8002  8                     1
# Start each role in its own terminal / unit / pod:
#   bash infra/vllm/paper.sh vlm
#   bash infra/vllm/paper.sh llm
#   bash infra/vllm/paper.sh judge
# Override GPUS=... TP=... PORT=... per role; keep each endpoint's `gpus` in the config
# equal to TP (it feeds the GPU-seconds cost model).
source "$(dirname "$0")/common.sh"
role="${1:?usage: paper.sh vlm|llm|judge}"

case "$role" in
  vlm)
    model=Qwen/Qwen2.5-VL-72B-Instruct; port=8000; gpus=0,1,2,3; tp=4; len=32768
    extra=("${VISION_FLAGS[@]}") ;;
  llm)
    # text-only summary agent: no multimodal flags
    model=Qwen/Qwen2.5-72B-Instruct; port=8001; gpus=4,5,6,7; tp=4; len=32768
    extra=() ;;
  judge)
    model=Qwen/Qwen2.5-VL-7B-Instruct; port=8002; gpus=8; tp=1; len=16384
    extra=("${VISION_FLAGS[@]}") ;;
  *) echo "unknown role '$role': use vlm, llm or judge" >&2; exit 2 ;;
esac

CUDA_VISIBLE_DEVICES="${GPUS:-$gpus}" run vllm serve "${MODEL:-$model}" \
  --port "${PORT:-$port}" \
  --tensor-parallel-size "${TP:-$tp}" \
  --max-model-len "${MAX_MODEL_LEN:-$len}" \
  "${COMMON_FLAGS[@]}" "${extra[@]}"
