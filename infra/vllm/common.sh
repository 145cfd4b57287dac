# Shared by the launch recipes in this folder: sourced, not run.
# Flags every CapFlow vLLM server gets, and why (see README.md for the longer story):
#   --enable-prefix-caching   every call on one sample starts with the same system text and
#                             image/video (byte-identical: the client caches the data URLs),
#                             so the router, 3-4 agents and the judge reuse one prefill.
#   --gpu-memory-utilization  the share of GPU memory vLLM takes for weights + KV cache.
#   --max-num-seqs            the continuous-batching width; keep the config's
#                             endpoint max_inflight >= this so the batch stays full.
# The API key, if any, is read by vLLM from $VLLM_API_KEY (never put it on the command
# line, where `ps` shows it); CapFlow reads the same variable via `api_key_env`.
set -euo pipefail

: "${HOST:=127.0.0.1}"
: "${GPU_MEM_UTIL:=0.90}"
: "${MAX_NUM_SEQS:=256}"

COMMON_FLAGS=(
  --host "$HOST"
  --enable-prefix-caching
  --gpu-memory-utilization "$GPU_MEM_UTIL"
  --max-num-seqs "$MAX_NUM_SEQS"
)
# Request logging (prompts) is off by default in current vLLM; --disable-log-requests was
# removed, so it is not passed.

# One image or one video per prompt is all CapFlow sends; the limit also sizes vLLM's
# start-up memory profiling, so a tight limit leaves more memory for the KV cache.
VISION_FLAGS=(--limit-mm-per-prompt '{"image": 1, "video": 1}')
# Optional: MM_MAX_PIXELS caps Qwen2.5-VL's dynamic resolution (28x28 pixels per visual
# token; 1003520 = 1280 tokens per image) for large scans and posters.
if [[ -n "${MM_MAX_PIXELS:-}" ]]; then
  VISION_FLAGS+=(--mm-processor-kwargs "{\"max_pixels\": ${MM_MAX_PIXELS}}")
fi

# Print the command, then replace this shell with it (signals reach vLLM directly).
run() {
  echo "+ $*" >&2
  if [[ "${DRY_RUN:-0}" == 1 ]]; then return 0; fi
  exec "$@"
}
