"""What every stage of one sample's path needs: config, registry, backends by model role."""

from __future__ import annotations

from dataclasses import dataclass

from capflow_core.backends.base import Backend
from capflow_core.config import Config
from capflow_core.registry import Registry

ROUTER_MAX_TOKENS = 48  # {"domain":"infographic_document","confidence":10} is ~20 Qwen tokens
JUDGE_MAX_TOKENS = 128


@dataclass
class Context:
    config: Config
    registry: Registry
    backends: dict[str, Backend]  # by role: vlm, llm, judge, eval_judge
    ocr_ready: bool = True  # False when Tesseract is missing (warned once at start-up)

    def max_tokens(self, budget: int) -> int:
        cap = self.config.generation.max_tokens_cap
        return min(budget, cap) if cap else budget

    def sampling(self) -> dict[str, float | int]:
        gen = self.config.generation
        return {"temperature": gen.temperature, "top_p": gen.top_p, "seed": gen.seed}
