"""What the command-line tools share: how they report what a user can fix, and the command a model card or an
evaluation report records."""

from __future__ import annotations

import shlex
import sys
from pathlib import PurePath

EXIT_USAGE = 2  # bad data, options, weights or run folder: the message says what to fix


def error_exit(problem: Exception) -> int:
    """One `error:` line on stderr instead of a traceback; returns the exit status."""
    print(f"error: {problem}", file=sys.stderr)
    return EXIT_USAGE


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
