"""Domain routing: a multiple-choice question over the registry's domain keys.

Skipped when the sample (or its source) carries a domain, and for video, which always goes
to the configured video domain (``router.video_domain``, default ``video_temporal``): the
registry has one video domain and routing frames of a clip as images would be meaningless.
"""

from __future__ import annotations

from capflow_core.backends.base import GenRequest, ImagePart, VideoPart
from capflow_core.calls import CallLog, call_structured, visual_messages
from capflow_core.context import ROUTER_MAX_TOKENS, Context
from capflow_core.errors import ItemError
from capflow_core.records import Route
from capflow_core.registry import render
from capflow_core.structured import CONFIDENCE_LEVELS, router_constraint


async def route(
    media: ImagePart | VideoPart, given_domain: str | None, ctx: Context, log: CallLog
) -> Route:
    """The sample's domain; raises ItemError(stage="route") when no valid reply came back."""
    if given_domain:
        ctx.registry.domain(given_domain)  # unknown keys are a configuration error
        return Route(given_domain, 1.0, skipped=True)
    if isinstance(media, VideoPart):
        return Route(ctx.config.router.video_domain, 1.0, skipped=True)
    keys = ctx.registry.image_domains()
    listing = "\n".join(f"- {k}: {ctx.registry.domains[k].description}" for k in keys)
    request = GenRequest(
        messages=visual_messages(
            ctx.registry.system_prompt, media, render(ctx.registry.router_prompt, domains=listing)
        ),
        max_tokens=ROUTER_MAX_TOKENS,
        tag="route",
        **ctx.sampling(),
    )
    value, error = await call_structured(ctx.backends["vlm"], request, router_constraint(keys), log)
    if error or not isinstance(value, dict):
        raise ItemError("route", "route_failed", error or "no reply")
    return Route(value["domain"], value["confidence"] / max(CONFIDENCE_LEVELS), skipped=False)
