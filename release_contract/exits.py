"""Exit codes shared by ``edge-compile``, ``edge-agent`` and ``edge-registry``, and the one place
their errors become one line on stderr.

======  ==============================================================================
code    meaning
======  ==============================================================================
0       success
1       the work failed: a model that cannot load, a broker that refuses, a rollout
        that aborted, a compile that failed
2       usage: a bad option, config value or input the user gave (also click's own
        usage errors), or a model that is already compiled
3       something the command needs is not available: the Edge TPU compiler, a
        Docker engine
4       refused by verification: a bad signature, an untrusted key, a tampered or
        truncated download, an expired or replayed release, one that needs a newer
        Edge TPU runtime
======  ==============================================================================

Each tool's root error carries ``exit_code`` (1 unless a subclass says otherwise);
:class:`MappedErrorsGroup` turns it into :class:`UserError`, so no command maps errors on
its own. A closed stdout (``edge-agent classify | head``) ends the command quietly.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar, Tuple, Type

import click

OK = 0
FAILURE = 1
USAGE = 2
UNAVAILABLE = 3
VERIFICATION = 4


class UserError(click.ClickException):
    """One line on stderr (``Error: ...``), no traceback, and the given exit code."""

    def __init__(self, message: str, exit_code: int = FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click reads it per instance


class MappedErrorsGroup(click.Group):
    """A click group whose commands' errors (subclasses of ``roots``) become :class:`UserError`.

    Subclass it and set ``roots`` to the tool's root error classes.
    """

    roots: ClassVar[Tuple[Type[BaseException], ...]] = ()

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            sys.stderr.close()  # the reader of stdout is gone: end quietly
            raise SystemExit(OK) from None
        except self.roots as exc:
            raise UserError(str(exc), int(getattr(exc, "exit_code", FAILURE))) from exc
