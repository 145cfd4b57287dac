#!/usr/bin/env bash
# A fine-tuned MetaCaptioner adapter served on its base model (single captioner mode).
#   NAME=metacaptioner-3 ADAPTER=/data/capflow/models/metacaptioner/3/adapter \
#     bash infra/vllm/lora.sh
# A registered model `model:metacaptioner/N` (see `capflow models`) is requested under the
# adapter name `metacaptioner-N` when the vlm role is served (captioner.model or
# `capflow evaluate --captioner model:metacaptioner/N` set it). By hand, in the config:
#   models: {vlm: {backend: openai, model: Qwen/Qwen2.5-VL-7B-Instruct,
#                  adapter: metacaptioner-3, endpoints: [{url: http://127.0.0.1:8003/v1}]}}
# Base-model requests ("model": the base id) still work on the same server.
source "$(dirname "$0")/common.sh"
: "${ADAPTER:?set ADAPTER to the adapter folder (adapter_config.json + weights)}"
: "${BASE:=Qwen/Qwen2.5-VL-7B-Instruct}"
: "${NAME:=metacaptioner}"
: "${PORT:=8003}"
: "${MAX_LORA_RANK:=64}"      # >= the rank the adapter was trained with
: "${MAX_MODEL_LEN:=32768}"

CUDA_VISIBLE_DEVICES="${GPU:-0}" run vllm serve "$BASE" \
  --port "$PORT" \
  --max-model-len "$MAX_MODEL_LEN" \
  --enable-lora \
  --lora-modules "${NAME}=${ADAPTER}" \
  --max-lora-rank "$MAX_LORA_RANK" \
  --max-loras 1 \
  "${COMMON_FLAGS[@]}" "${VISION_FLAGS[@]}"
