"""MindBot's tools: what the assistant can do in the world, as LLM function calls.

- ``base``: what a tool is (``@tool``, ``ToolContext``, ``ToolError``).
- ``registry``: every known tool by name; a persona's ``tools:`` list picks a session's tools.
- ``session``: running a session's tool calls (timeouts, retries, filler, spoken confirmation
  of side effects, audit reports).
- ``settings``: endpoints and credentials, one section per tool.
- One module per built-in tool: ``clock``, ``calculator``, ``weather``, ``news``, ``stocks``,
  ``calendar``, ``email``, ``sql``, ``iot`` (MQTT) and ``connectors`` (HTTP APIs from YAML).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mindbot.tools.base import Tool, ToolContext, ToolError, ToolUnavailable, tool
    from mindbot.tools.registry import ToolRegistry
    from mindbot.tools.session import ToolSession
    from mindbot.tools.settings import ToolSettings

_EXPORTS = {
    "Tool": "base",
    "ToolContext": "base",
    "ToolError": "base",
    "ToolUnavailable": "base",
    "tool": "base",
    "ToolRegistry": "registry",
    "ToolSession": "session",
    "ToolSettings": "settings",
}

__all__ = [  # noqa: F822 (resolved by __getattr__)
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "ToolSession",
    "ToolSettings",
    "ToolUnavailable",
    "tool",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: the settings (read by mindbot.config) must not pull in Pipecat.
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mindbot.tools' has no attribute {name!r}")
    return getattr(import_module(f"mindbot.tools.{_EXPORTS[name]}"), name)
