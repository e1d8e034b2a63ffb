"""The command a model card or an evaluation report records (`shown_command`), and the data paths in it
(`shown_path`). What every command line shares (its name, its `error:` line) is the library's: `ssd.cli.program`,
`ssd.cli.error_exit`."""

from __future__ import annotations

import shlex
from pathlib import PurePath


def shown_path(word: str) -> str:
    """A path to the VOC data outside the working directory (absolute, or up through `..`) from its VOCdevkit
    folder on, as a user who unpacked VOC has it, not as the machine that wrote a card or report did; any other
    word as it is."""
    path = PurePath(word)
    if (path.is_absolute() or ".." in path.parts) and "VOCdevkit" in path.parts:
        return str(PurePath(*path.parts[path.parts.index("VOCdevkit"):]))
    return word


def shown_command(prog: str, words: list[str]) -> str:
    """`prog` and `words` as a shell line, for a card or report that others read, the VOC paths as `shown_path`
    gives them."""
    return " ".join([prog, *(shlex.quote(shown_path(w)) for w in words)])
