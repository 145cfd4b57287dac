"""Clean caption records and a test config for the quality-gate tests."""

from __future__ import annotations

from functools import lru_cache

from capflow_core.config import AcceptRule, Config, JudgeConfig, load_config
from capflow_core.config_quality import QualityConfig, RateBounds, WordBounds
from capflow_core.records import CaptionRecord, JudgeResult, Route
from capflow_core.registry import load_registry

IMAGE_DOMAINS = ("natural", "structure_math", "code_programming")
SUBJECTS = ("a red kayak", "a brass telescope", "an old lighthouse", "a bar chart", "a terminal")
PLACES = ("on a pebble beach", "beside a quiet harbour", "in a sunlit studio", "near a window")
DETAILS = (
    "The light falls from the left and leaves long soft shadows across the surface.",
    "Small labels in a clean sans-serif font name each part of the composition.",
    "A muted palette of greys and blues gives the whole scene a calm, orderly feel.",
    "Fine scratches and worn edges suggest that the object has been used for years.",
    "The framing is tight, so the main subject fills most of the picture area.",
)
VIDEO_EVENTS = (
    "At first a cyclist waits at the crossing, then the light turns green and she rides off.",
    "A chef slices onions while the pan heats; after a few seconds he adds them to the oil.",
    "The camera starts on a calm lake and later pans to a boat that finally reaches the dock.",
)


@lru_cache(maxsize=2)
def criteria(modality: str) -> tuple[str, ...]:
    """The registry's judge criteria for a modality."""
    return load_registry().judge[modality].criteria


def image_caption(i: int) -> str:
    subject, place = SUBJECTS[i % len(SUBJECTS)], PLACES[i % len(PLACES)]
    detail = " ".join(DETAILS[(i + k) % len(DETAILS)] for k in range(3))
    return f"The image shows {subject} {place}, photographed as item number {i}. {detail}"


def video_caption(i: int) -> str:
    event = VIDEO_EVENTS[i % len(VIDEO_EVENTS)]
    return (
        f"This clip, number {i}, follows a short everyday scene. {event} The background "
        "stays steady throughout and the colours remain natural and slightly warm."
    )


def record(
    i: int, domain: str, modality: str = "image", caption: str | None = None
) -> CaptionRecord:
    """One clean record: all scores 3, accepted, routed with confidence 0.9."""
    text = (
        caption
        if caption is not None
        else (video_caption(i) if modality == "video" else image_caption(i))
    )
    scores = dict.fromkeys(criteria(modality), 3)
    return CaptionRecord(
        asset_id=f"asset-{i:03d}",
        source_uri=f"file:///data/{i:03d}.{'mp4' if modality == 'video' else 'jpg'}",
        modality=modality,
        domain=domain,
        route=Route(domain, 0.9, skipped=False),
        caption=text,
        judge=JudgeResult(scores=scores, accepted=True, rule="min_each>=3", model="judge"),
        accepted=True,
        fingerprint=f"fp-{domain}",
        run_id="run-test",
    )


def clean_records() -> list[CaptionRecord]:
    """20 records: 5 in each of three image domains and 5 videos."""
    recs = [record(i, IMAGE_DOMAINS[i % 3]) for i in range(15)]
    return recs + [record(i, "video_temporal", "video") for i in range(15, 20)]


def gate_config(**quality: object) -> Config:
    """The tiny config with a strict rule (every score 3) and test thresholds."""
    base = load_config("configs/tiny.yaml")
    settings = {
        "words": WordBounds(min=20, max=120),
        "words_by_domain": {"code_programming": WordBounds(min=20, max=60)},
        "mostly": 1.0,
        "temporal_mostly": 1.0,
        "accept_rate": RateBounds(min=0.5, max=1.0),
        "max_domain_share": 0.5,
        "max_duplicate_caption_rate": 0.05,
        **quality,
    }
    return base.model_copy(
        update={
            "quality": QualityConfig(**settings),
            "judge": JudgeConfig(accept=AcceptRule(min_each=3)),
        }
    )
