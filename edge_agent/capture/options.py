"""The ``--capture-*`` flags of ``edge-agent classify`` and ``run`` (the ``[capture]`` config section)."""

from __future__ import annotations

from pathlib import Path

import click

from edge_agent.options import option_group

# flag parameter name -> field of CaptureConfig
_FIELDS = {
    "capture_dir": "dir",
    "capture_below": "below",
    "capture_sample": "sample",
    "capture_max_mb": "max_mb",
    "capture_rate": "rate",
}

_OPTIONS = [
    click.option(
        "--capture-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="Keep uncertain frames (and their result) here for retraining [config: capture.dir].",
    ),
    click.option(
        "--capture-below",
        type=click.FloatRange(0.0, 1.0),
        default=None,
        metavar="SCORE",
        help="Capture frames whose top-1 score is below SCORE (default 0.5).",
    ),
    click.option(
        "--capture-sample",
        type=click.FloatRange(0.0, 100.0),
        default=None,
        metavar="PERCENT",
        help="Also capture this share of confident frames, for unbiased evaluation (default 0).",
    ),
    click.option(
        "--capture-max-mb",
        type=click.FloatRange(0.0, min_open=True),
        default=None,
        metavar="MB",
        help="Disk the captures may use; the oldest are deleted first (default 500).",
    ),
    click.option(
        "--capture-rate",
        type=click.FloatRange(0.0, 6000.0, min_open=True),
        default=None,
        metavar="N",
        help="At most N captures a minute (default 60).",
    ),
]


#: Adds the ``--capture-*`` flags to a click command; it receives them as one ``capture`` dict
#: keyed like the ``[capture]`` section (None = not given).
capture_options = option_group("capture", _OPTIONS, {param: (field,) for param, field in _FIELDS.items()})
