"""The summary layer: a text-only LLM merges the agents' outputs into one caption."""

from __future__ import annotations

from capflow_core.backends.base import GenRequest
from capflow_core.calls import CallLog, call, text_messages
from capflow_core.context import Context
from capflow_core.errors import ItemError
from capflow_core.records import AgentOutput
from capflow_core.registry import Domain, render


def format_reports(domain: Domain, outputs: list[AgentOutput]) -> str:
    names = {a.key: a.name for a in domain.agents}
    return "\n\n".join(
        f"### {names.get(o.agent, o.agent)} ({o.role})\n{o.text.strip()}" for o in outputs
    )


async def summarize(domain: Domain, outputs: list[AgentOutput], ctx: Context, log: CallLog) -> str:
    """The caption. The summary model never sees pixels: only the agents' text."""
    agent = domain.summary
    request = GenRequest(
        messages=text_messages(
            ctx.registry.system_prompt,
            render(agent.prompt, reports=format_reports(domain, outputs)),
        ),
        max_tokens=ctx.max_tokens(agent.max_tokens),
        tag=f"summary:{agent.key}",
        **ctx.sampling(),
    )
    result = await call(ctx.backends[agent.model], request, log)
    if result.error:
        raise ItemError("summary", "model_error", result.error)
    return result.text.strip()
