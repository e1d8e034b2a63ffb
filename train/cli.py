"""The command a model card or an evaluation report records (`shown_command`). What every command line shares
(its name, its `error:` line) is the library's: `ssd.cli.program`, `ssd.cli.error_exit`."""

from __future__ import annotations

import shlex
from pathlib import PurePath


def shown_command(prog: str, words: list[str]) -> str:
    """`prog` and `words` as a shell line, for a card or report that others read: a path to the VOC data outside
    the working directory (absolute, or up through `..`) is shown from its VOCdevkit folder on, as a user who
    unpacked VOC has it, not as the machine that made the file did."""
    def shown(word: str) -> str:
        path = PurePath(word)
        if (path.is_absolute() or ".." in path.parts) and "VOCdevkit" in path.parts:
            return str(PurePath(*path.parts[path.parts.index("VOCdevkit"):]))
        return word

    return " ".join([prog, *(shlex.quote(shown(w)) for w in words)])
