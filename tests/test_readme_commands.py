"""The commands that README.md and docs/*.md show still parse: for every `python -m MODULE ...`,
`python SCRIPT.py ...`, `torchrun ... -m MODULE ...` and console command (`ssd-detect`, `ssd-train`, ...) of this
project, in a code block or an inline code span, the module's own argparse parser answers `--help`, and every
flag the command uses is one that help names. Commands of other programs (pip, git, pytest) are left alone.

The parsers run in this process (runpy, `--help` exits before any work), so that torch is imported once."""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import shlex
import sys
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The installed names of the checkout's packages (pyproject.toml's package-dir).
INSTALLED = {"ssd_train": "train", "ssd_visualize": "visualize"}
PACKAGES = {"ssd", "train", "visualize", *INSTALLED}
SCRIPT_DIRS = {"bench", "gpu", "ssd", "train", "visualize", "ui", "tests"}
# Scripts with no command line of their own: they are checked to exist and to be given no flags.
NO_PARSER = {"app.py"}
PLACEHOLDERS = {"...", "…"}
CONSOLE = {name: target.split(":")[0]
           for name, target in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"].items()}


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str
    kind: str  # "module" or "script"
    target: str  # a dotted module of the checkout, or a script's path from the root
    flags: tuple[str, ...]

    def __str__(self):
        return f"{self.page}:{self.line}: {self.text}"


def _module(name: str) -> str:
    top, _, rest = name.partition(".")
    return ".".join(filter(None, (INSTALLED.get(top, top), rest)))


def _flags(args: list[str]) -> tuple[str, ...]:
    flags = []
    for a in args:
        if a.startswith("-") and a != "-" and not re.fullmatch(r"-[\d.]+(e-?\d+)?", a):
            flags.append(a.split("=", 1)[0])
    return tuple(flags)


def _command(tokens: list[str]) -> tuple[str, str, tuple[str, ...]] | None:
    """(kind, target, flags) for one simple command of this project, else None."""
    tokens = [t for t in tokens if t not in PLACEHOLDERS]
    while tokens and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", tokens[0]):  # VAR=value prefixes
        tokens = tokens[1:]
    if tokens[:1] == ["nice"]:
        tokens = tokens[3:] if tokens[1:2] == ["-n"] else tokens[1:]
    if not tokens:
        return None
    program, args = Path(tokens[0]).name, tokens[1:]
    if program in CONSOLE:
        return "module", _module(CONSOLE[program]), _flags(args)
    if program == "torchrun":
        if "-m" not in args:
            return None
        i = args.index("-m")
        module, args = args[i + 1], args[i + 2:]
    elif re.fullmatch(r"python(3(\.\d+)?)?", program) and args:
        if args[0] == "-m" and len(args) > 1:
            module, args = args[1], args[2:]
        elif args[0].endswith(".py"):
            script = args[0]
            path = Path(script)
            if (ROOT / path).is_file() or path.parts[0] in SCRIPT_DIRS or len(path.parts) == 1:
                return "script", script, _flags(args[1:])
            return None
        else:
            return None
    else:
        return None
    if module.split(".")[0] not in PACKAGES:
        return None
    return "module", _module(module), _flags(args)


def _split(text: str) -> list[list[str]]:
    """The simple commands of one shell line (split at &&, ||, |, ; and redirections; comments dropped)."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        tokens = list(lex)
    except ValueError:  # an unbalanced quote: not a shell line
        return []
    commands, current = [], []
    for t in tokens:
        if t and all(c in "&|;<>" for c in t):
            commands.append(current)
            current = []
        else:
            current.append(t)
    return [c for c in [*commands, current] if c]


def _shell_lines(text: str):
    """(line number, logical line) of every fenced block that is not Python, and of every inline code span."""
    lines = text.splitlines()
    fence, block_lang, pending, start = False, "", "", 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence, block_lang = not fence, stripped[3:].strip().lower() if not fence else ""
            continue
        if fence:
            if block_lang in {"python", "py", "json", "yaml", "yml", "toml", "text", "csv"}:
                continue
            content = re.sub(r"^\s*\$\s+", "", line)
            if not pending:
                start = number
            if content.rstrip().endswith("\\"):
                pending += content.rstrip()[:-1] + " "
                continue
            yield start, pending + content
            pending = ""
        else:
            for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", line):
                yield number, span


@cache
def documented_commands() -> tuple[Command, ...]:
    found = []
    for page in PAGES:
        for number, line in _shell_lines(page.read_text()):
            for tokens in _split(line):
                parsed = _command(tokens)
                if parsed:
                    found.append(Command(str(page.relative_to(ROOT)), number, line.strip(), *parsed))
    return tuple(found)


@cache
def help_text(kind: str, target: str) -> tuple[int, str]:
    """(exit status, output) of TARGET --help, run in this process."""
    out, argv = io.StringIO(), sys.argv
    sys.argv = [target, "--help"]
    status = 0
    try:
        # A module that tests imported before runs again as __main__, as `python -m` would run it.
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if kind == "module":
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(str(ROOT / target), run_name="__main__")
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return status, out.getvalue()


def test_the_pages_show_commands_of_every_kind():
    kinds = {(c.kind, c.target.split(".")[0].split("/")[0]) for c in documented_commands()}
    assert {("module", "ssd"), ("module", "train"), ("module", "visualize"), ("script", "bench")} <= kinds, kinds


@pytest.mark.parametrize("command", documented_commands(), ids=str)
def test_a_documented_command_parses(command: Command):
    if command.kind == "script":
        assert (ROOT / command.target).is_file(), f"{command}: no file {command.target}"
        if command.target in NO_PARSER:
            assert not command.flags, f"{command}: {command.target} takes no flags"
            return
    status, text = help_text(command.kind, command.target)
    assert status == 0 and "usage:" in text, f"{command}: --help exited with {status}:\n{text[-2000:]}"
    unknown = [f for f in command.flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
    assert not unknown, f"{command}: {command.target} has no {', '.join(unknown)} (its --help:\n{text})"


def test_ci_runs_the_readmes_full_test_command():
    """.ci/run runs exactly the README's full test command, listing the slowest tests."""
    readme = (ROOT / "README.md").read_text()
    (command,) = [line for line in readme.splitlines() if "requirements-dev.txt" in line and "pytest" in line]
    assert command.endswith("python -m pytest"), command
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert f"{command} --durations=25" in ci
