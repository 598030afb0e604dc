"""The tool registry: every tool MindBot knows, by name, and which of them a session gets.

Built-in tools live in one module each under ``mindbot/tools/``. A module offers its tools as
module-level ``Tool`` objects (``@tool`` functions) and, when they depend on settings (one per
configured database, one per YAML connector), from ``make_tools(settings) -> list[Tool]``.
Your own tool files load the same way, from ``tools.modules`` in the settings or
``ToolRegistry.load``.

A persona's ``tools:`` list names tools or whole modules (``calendar`` = every calendar tool);
a session gets those of them whose settings are configured.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from mindbot.errors import ConfigError
from mindbot.tools.base import Tool
from mindbot.tools.settings import ToolSettings

#: The built-in tool modules, in the order their tools are offered.
BUILTIN_MODULES = (
    "clock",
    "calculator",
    "weather",
    "news",
    "stocks",
    "calendar",
    "email",
    "sql",
    "iot",
    "connectors",
)


class ToolRegistry:
    """Tools by name, and the group (module) each belongs to.

    Args:
        settings: The tools' settings (passed to ``make_tools`` and ``Tool.available``).
    """

    def __init__(self, settings: ToolSettings | None = None):
        self.settings = settings or ToolSettings()
        self._tools: dict[str, Tool] = {}
        self._groups: dict[str, list[str]] = {}

    @classmethod
    def default(cls, settings: ToolSettings | None = None) -> ToolRegistry:
        """The built-in tools plus the modules named in ``settings.modules``.

        Raises:
            ConfigError: A module cannot be loaded, or two tools share a name.
        """
        registry = cls(settings)
        for name in BUILTIN_MODULES:
            registry.load(f"mindbot.tools.{name}", group=name)
        for module in registry.settings.modules:
            registry.load(module)
        return registry

    def add(self, tool: Tool, *, group: str | None = None) -> None:
        """Register one tool.

        Raises:
            ConfigError: A different tool already has that name.
        """
        if not isinstance(tool, Tool):
            raise ConfigError(f"{tool!r} is not a tool: decorate the function with @tool")
        known = self._tools.get(tool.name)
        if known is not None and known is not tool:
            raise ConfigError(f"two tools are called {tool.name!r}: rename one of them")
        self._tools[tool.name] = tool
        if group:
            members = self._groups.setdefault(group, [])
            if tool.name not in members:
                members.append(tool.name)

    def load(self, module: str | Path | ModuleType, *, group: str | None = None) -> list[Tool]:
        """Register the tools a module defines (``Tool`` objects and ``make_tools(settings)``).

        Args:
            module: A module, its import path (``"mytools.crm"``) or a ``.py`` file.
            group: The group name personas may use; default: the module's short name.

        Raises:
            ConfigError: The module cannot be imported or defines no tools.
        """
        loaded = _import(module) if not isinstance(module, ModuleType) else module
        group = group or loaded.__name__.rsplit(".", 1)[-1]
        tools = [value for value in vars(loaded).values() if isinstance(value, Tool)]
        make_tools = getattr(loaded, "make_tools", None)
        if callable(make_tools):
            tools.extend(make_tools(self.settings))
        if not tools and not callable(make_tools):
            raise ConfigError(f"tool module {loaded.__name__!r} defines no @tool functions")
        self._groups.setdefault(group, [])  # known even when the settings give it no tools
        for tool in tools:
            self.add(tool, group=group)
        return tools

    def get(self, name: str) -> Tool | None:
        """The tool called ``name``, if registered."""
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        """Every registered tool's name."""
        return list(self._tools)

    @property
    def groups(self) -> dict[str, list[str]]:
        """Group (module) name → its tools' names."""
        return {group: list(names) for group, names in self._groups.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._tools or name in self._groups

    def unknown(self, names: Iterable[str]) -> list[str]:
        """The names (of tools or groups) that the registry does not know."""
        return [name for name in names if name not in self]

    def select(self, names: Iterable[str]) -> list[Tool]:
        """The tools that ``names`` (tools or groups) allow and the settings make available."""
        chosen: dict[str, Tool] = {}
        for name in names:
            for member in self._groups.get(name, [name]):
                tool = self._tools.get(member)
                if tool is not None and tool.available(self.settings):
                    chosen[tool.name] = tool
        return list(chosen.values())


def _import(module: str | Path) -> ModuleType:
    try:
        if isinstance(module, Path) or str(module).endswith(".py"):
            path = Path(module).resolve()
            name = f"mindbot_user_tools.{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"not a Python file: {path}")
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[name] = loaded
            spec.loader.exec_module(loaded)
            return loaded
        return importlib.import_module(str(module))
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"cannot load tool module {str(module)!r}: {e}") from None
