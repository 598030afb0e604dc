"""The suite's scenario files: Pipecat's eval format, plus who places each call.

A file is a Pipecat scenario file (``pipecat.evals.scenario``: ``name``, ``scenarios`` with
their ``turns`` and ``expect``), loaded by Pipecat's own ``EvalScenarioFile``. MindBot adds one
optional key, which Pipecat's loader ignores: ``mindbot:``, who is calling. Like any scenario
key it may sit at the top of the file as the default for every scenario in it, and a scenario
that sets it replaces the whole value::

    mindbot:
      user_id: eval-oliver     # a known caller: stored, remembered and recalled across calls
      persona: tutor           # the persona the call asks for (default: the default persona)

The scenarios of a file run in file order, each as its own call, so a file can hold the calls
of one caller that depend on each other (memory across calls). Files without a ``name:`` are
fragments that scenario files ``!include`` and are not run; simulations (``persona:`` instead
of ``turns:``) need a persona LLM and are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pipecat.evals.scenario import EvalScenarioFile, EvalScriptScenario, is_scenario_file
from pipecat.utils.yaml import include_loader
from pydantic import BaseModel, ConfigDict, ValidationError

from mindbot.errors import ConfigError

SCENARIOS_DIR = Path(__file__).parent / "scenarios"
"""The packaged scenarios for the assistant."""

KNOWLEDGE_DIR = Path(__file__).parent / "knowledge"
"""The documents the packaged knowledge-base scenario asks about."""


class Caller(BaseModel):
    """Who places an eval call: a scenario's ``mindbot:`` block.

    Parameters:
        user_id: The client's user id: a known caller, stored and remembered across calls
            (``None``: an anonymous caller).
        persona: The persona the call asks for (``None``: the default persona).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: str | None = None
    persona: str | None = None


@dataclass
class SuiteScenario:
    """One scenario of the suite and the call that plays it.

    Parameters:
        scenario: The scenario, as Pipecat parsed it.
        caller: Who calls.
        path: The file it came from.
    """

    scenario: EvalScriptScenario
    caller: Caller = field(default_factory=Caller)
    path: Path | None = None

    @property
    def name(self) -> str:
        """``<file name>/<scenario name>``, as Pipecat names it."""
        return self.scenario.name


def scenario_files(paths: Sequence[Path] = ()) -> list[Path]:
    """The scenario files to run: ``paths`` (folders expanded, sorted), or the packaged ones.

    Args:
        paths: Files or folders; empty for the packaged scenarios.

    Raises:
        ConfigError: A path does not exist.
    """
    files: list[Path] = []
    for path in paths or [SCENARIOS_DIR]:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
            files.extend(p for p in found if is_scenario_file(p))
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"No scenario file or folder {path}")
    return files


def load_scenarios(paths: Sequence[Path] = (), *, only: str | None = None) -> list[SuiteScenario]:
    """Every scenario of the files, in order, with its caller.

    Args:
        paths: Files or folders; empty for the packaged scenarios.
        only: Keep only the scenarios whose name contains this.

    Raises:
        ConfigError: A file is malformed (the message names it), holds a simulation, or a
            ``mindbot:`` block is invalid.
    """
    loaded: list[SuiteScenario] = []
    for path in scenario_files(paths):
        loaded.extend(_load_file(path))
    if only:
        loaded = [s for s in loaded if only in s.name]
    return loaded


def _load_file(path: Path) -> list[SuiteScenario]:
    try:
        file = EvalScenarioFile.load(path)
        with path.open() as f:
            raw = yaml.load(f, include_loader(path.parent))
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot load the scenario file {path}: {e}") from None
    entries = raw.get("scenarios") if isinstance(raw.get("scenarios"), list) else [raw]
    suite = []
    for scenario, entry in zip(file.scenarios, entries, strict=True):
        if not isinstance(scenario, EvalScriptScenario):
            raise ConfigError(
                f"{path}: {scenario.name} is a simulation; mindbot eval runs scripted scenarios"
            )
        block = entry.get("mindbot", raw.get("mindbot")) if isinstance(entry, dict) else None
        suite.append(SuiteScenario(scenario, _caller(block, path, scenario.name), path))
    return suite


def _caller(block: object, path: Path, name: str) -> Caller:
    if block is None:
        return Caller()
    try:
        return Caller.model_validate(block)
    except ValidationError as e:
        problem = e.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "mindbot"
        raise ConfigError(f"{path}: {name}: mindbot.{where}: {problem['msg']}") from None
