"""docs/deploy.md names only settings and commands that exist.

People copy a deployment guide into environment files and unit files. pydantic-settings ignores
a variable no field reads, and a misspelt subcommand fails only on the night it is run, so a
stale name in the guide breaks production quietly. Here every environment variable the page
names with a settings prefix must be read by some settings class (a field, or an alias), and
every `python -m ...` or `strangler ...` command it shows (in sh blocks, and in `ExecStart=`
lines) must parse as a real command with real options. Both sets are derived from the code at
test time, so a setting or command added tomorrow is known without touching this file.
"""

from __future__ import annotations

import functools
import importlib
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import typer
from pydantic import AliasChoices, AliasPath, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deploy.md"
PACKAGES = ("strangler", "proxy", "legacy_monolith", "extracted")

# -- the settings the code reads ------------------------------------------------------------


@functools.cache
def settings_classes() -> tuple[type[BaseSettings], ...]:
    """Every BaseSettings subclass defined in the packages (found as `grep BaseSettings` would,
    then imported: the apps create nothing at import time)."""
    found: list[type[BaseSettings]] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "BaseSettings" not in path.read_text(encoding="utf-8"):
                continue
            module = importlib.import_module(_module_name(path))
            found.extend(
                value
                for value in vars(module).values()
                if isinstance(value, type)
                and issubclass(value, BaseSettings)
                and value is not BaseSettings
                and value.__module__ == module.__name__
            )
    return tuple(found)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables `cls` reads, by pydantic-settings' rules: the prefix plus the
    field name, or the field's aliases instead (the prefixed name too with populate_by_name)."""
    config = cls.model_config
    prefix = config.get("env_prefix", "")
    target = config.get("env_prefix_target", "variable")
    by_name = bool(config.get("populate_by_name") or config.get("validate_by_name"))
    names: set[str] = set()
    for name, field in cls.model_fields.items():
        aliases = _aliases(field.validation_alias or field.alias)
        for alias in aliases:
            names.add(((prefix if target in ("alias", "all") else "") + alias).upper())
        if not aliases or by_name:
            names.add(((prefix if target in ("variable", "all") else "") + name).upper())
    return names


def _aliases(alias: str | AliasChoices | AliasPath | None) -> list[str]:
    if alias is None:
        return []
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasPath):
        return [str(alias.path[0])]
    return [c if isinstance(c, str) else str(c.path[0]) for c in alias.choices]


@functools.cache
def real_settings() -> frozenset[str]:
    return frozenset(name for cls in settings_classes() for name in env_names(cls))


@functools.cache
def settings_pattern() -> re.Pattern[str]:
    """A name that starts with one of the classes' prefixes, standing alone (so
    MONOLITH_PRODUCTS_SERVICE_URL is one name, not PRODUCTS_SERVICE_URL inside another)."""
    prefixes = {cls.model_config.get("env_prefix", "") for cls in settings_classes()} - {""}
    choices = "|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9_])(?:{choices})[A-Z0-9_]*[A-Z0-9](?![A-Za-z0-9_])")


def unknown_settings(text: str) -> list[str]:
    """The settings-like names in `text` that no settings class reads, in order of appearance."""
    named = dict.fromkeys(settings_pattern().findall(text))
    return [name for name in named if name not in real_settings()]


# -- the commands the code has --------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    line: int
    program: str  # "strangler" or "python -m <module>"
    args: tuple[str, ...]

    def __str__(self) -> str:
        return f"line {self.line}: {self.program} {shlex.join(self.args)}".rstrip()


_FENCE = re.compile(r"^\s*```\s*([\w+-]*)")
_SHELL = {"sh", "bash", "shell", "console"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"^python(3(\.\d+)?)?$")
_CONTROL = {"&&", "||", ";", "|", "&", "(", ")"}
_EXEC = re.compile(r"^\s*ExecStart(Pre|Post)?=[-@:+!]*(.*)$")


def commands_in(markdown: str) -> list[Command]:
    """This project's `python -m ...` and `strangler ...` commands, in shell blocks and in
    `ExecStart=` lines."""
    found: list[Command] = []
    block: str | None = None
    pending, start = "", 0
    for number, line in enumerate(markdown.splitlines(), 1):
        fence = _FENCE.match(line)
        if fence:
            block = None if block is not None else fence.group(1).lower()
            continue
        if block is None:
            continue
        executed = _EXEC.match(line)
        if executed:
            found.extend(_commands(executed.group(2), number))
        elif block in _SHELL:
            start = start if pending else number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            found.extend(_commands(pending + line, start))
            pending = ""
    return found


def _commands(text: str, line: int) -> list[Command]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    redirected = False
    for token in lexer:
        if token in _CONTROL:
            segments.append([])
            redirected = False
        elif set(token) <= set("<>&|;()"):
            redirected = True  # a redirection: the rest of the segment is its target
        elif not redirected:
            segments[-1].append(token)
    found: list[Command] = []
    for words in segments:
        while words and _ASSIGNMENT.match(words[0]):
            words = words[1:]
        if not words:
            continue
        head = Path(words[0]).name
        if head == "strangler":
            found.append(Command(line, "strangler", tuple(words[1:])))
        elif _PYTHON.match(head) and len(words) >= 3 and words[1] == "-m":
            if words[2].partition(".")[0] in PACKAGES:  # not `python -m venv`: never run others
                found.append(Command(line, f"python -m {words[2]}", tuple(words[3:])))
    return found


@functools.cache
def program(name: str) -> Any:
    """The command behind `strangler` (pyproject's script) or `python -m <module>`, as typer
    builds it (its click-style Command or Group)."""
    if name == "strangler":
        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        module_name = scripts["strangler"].partition(":")[0]
    else:
        module_name = name.removeprefix("python -m ")
    try:
        module = importlib.import_module(module_name)
        if hasattr(module, "__path__"):  # a package runs its __main__
            module = importlib.import_module(f"{module_name}.__main__")
    except ImportError:
        return None
    root = _root_typer(module)
    return typer.main.get_command(root) if root is not None else None


def _root_typer(module: ModuleType) -> typer.Typer | None:
    apps = [v for v in vars(module).values() if isinstance(v, typer.Typer)]
    nested = {id(g.typer_instance) for app in apps for g in app.registered_groups}
    roots = [app for app in apps if id(app) not in nested]
    return roots[0] if len(roots) == 1 else None


def problem_with(command: Command) -> str | None:
    """Why `command` would not run as written, or None when it parses."""
    current = program(command.program)
    if current is None:
        return f"{command}: no command line interface named {command.program!r}"
    args = list(command.args)
    path = command.program
    while hasattr(current, "list_commands"):  # a group: the next word names a subcommand
        if not args or args[0].startswith("-"):
            return f"{command}: {path} needs a subcommand"
        name, args = args[0], args[1:]
        found = current.get_command(typer.Context(current), name)
        if found is None:
            return f"{command}: {path} has no subcommand {name!r}"
        current, path = found, f"{path} {name}"
    try:  # parses options and arguments (unknown, missing, wrong type) without running
        current.make_context(path, args)
    except typer.Exit:
        return None  # --help
    except typer.TyperException as exc:
        return f"{command}: {exc}"
    return None


# -- the page -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_the_settings_classes_of_every_process_are_found() -> None:
    prefixes = {cls.model_config.get("env_prefix") for cls in settings_classes()}
    assert {"MONOLITH_", "PRODUCTS_SERVICE_", "PROXY_", "STRANGLER_"} <= prefixes


def test_every_setting_the_deploy_doc_names_is_read_by_a_settings_class(doc: str) -> None:
    named = set(settings_pattern().findall(doc))
    assert len(named) > 30, "the checker found almost no settings: is its pattern broken?"
    assert unknown_settings(doc) == []


def test_every_command_the_deploy_doc_shows_parses(doc: str) -> None:
    commands = commands_in(doc)
    assert {c.program for c in commands} >= {
        "strangler",
        "python -m proxy",
        "python -m legacy_monolith",
        "python -m extracted.products_service",
    }
    assert [p for c in commands if (p := problem_with(c))] == []


# -- the checkers catch what they are for ---------------------------------------------------


def test_a_made_up_setting_is_reported() -> None:
    text = "Set PROXY_PORT=8000 and PROXY_NO_SUCH_SETTING=1, then MONOLITH_PRODUCTS_SERVICE_URL."
    assert unknown_settings(text) == ["PROXY_NO_SUCH_SETTING"]


def test_a_made_up_subcommand_option_or_module_is_reported() -> None:
    markdown = "\n".join(
        [
            "```sh",
            "strangler no-such-command products",
            "cd /opt/shop && .venv/bin/strangler relay products --no-such-option",
            "MONOLITH_PORT=1 python -m legacy_monolith no-such-command",
            "python3 -m extracted.no_such_service serve",
            "python3 -m venv .venv   # not ours: neither checked nor imported",
            "strangler proxy",
            "strangler relay products --metrics-port 9464 \\",
            "  --until-drained > relay.log   # a real one, continued over two lines",
            "```",
            "```ini",
            "ExecStart=/opt/shop/.venv/bin/python -m proxy serve --no-such-option",
            "```",
        ]
    )
    problems = [problem_with(c) for c in commands_in(markdown)]
    assert len(problems) == 7
    assert "no subcommand 'no-such-command'" in str(problems[0])
    assert "--no-such-option" in str(problems[1])
    assert "no subcommand 'no-such-command'" in str(problems[2])
    assert "no command line interface" in str(problems[3])
    assert "needs a subcommand" in str(problems[4])
    assert problems[5] is None
    assert "--no-such-option" in str(problems[6])


def test_an_alias_is_a_setting_and_the_name_it_replaces_is_not() -> None:
    class Aliased(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="DEMO_")
        plain: str = ""
        renamed: str = Field(default="", validation_alias=AliasChoices("DEMO_NEW", "OLD_NAME"))

    assert env_names(Aliased) == {"DEMO_PLAIN", "DEMO_NEW", "OLD_NAME"}
