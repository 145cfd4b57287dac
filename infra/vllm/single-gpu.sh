#!/usr/bin/env bash
# One GPU, one server: Qwen2.5-VL-7B-Instruct plays every role (router, agents, summary,
# judge), matching configs/single-gpu.yaml (http://127.0.0.1:8000/v1).
#   PORT=8000 GPU=0 bash infra/vllm/single-gpu.sh      (DRY_RUN=1 prints the command)
source "$(dirname "$0")/common.sh"
: "${MODEL:=Qwen/Qwen2.5-VL-7B-Instruct}"
: "${PORT:=8000}"
: "${MAX_MODEL_LEN:=32768}"   # image + 4 agents' outputs in the summary prompt fit easily

CUDA_VISIBLE_DEVICES="${GPU:-0}" run vllm serve "$MODEL" \
  --port "$PORT" \
  --max-model-len "$MAX_MODEL_LEN" \
  "${COMMON_FLAGS[@]}" "${VISION_FLAGS[@]}"
