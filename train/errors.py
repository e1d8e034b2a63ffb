"""The errors that stop a run for a reason the user can act on: the command line reports each as one `error:`
line instead of a traceback."""

from __future__ import annotations

__all__ = ["Diverged", "RunError"]


class RunError(ValueError):
    """A run that cannot start or go on for a reason the user can fix (the run folder, its checkpoint, options
    that do not fit it): the command line reports it as one `error:` line."""


class Diverged(RunError):
    """Too many steps of a run were not finite, or all of them were: the run stops without saving or exporting,
    so its checkpoint stays at the last step before those."""
