"""What every ``jobs/<stage>.py`` does: run ``ghist-ray <stage>`` with this process's arguments.

All logic stays in the package: an entrypoint only names its stage. Under
``ray job submit --working-dir .`` Ray puts the uploaded working directory first
on ``PYTHONPATH``, so ``ghist_ray`` is the submitted copy of the package (its
dependencies come from the cluster's image, see ``cluster/``). ``--config``
may be a URI (``s3://bucket/run.yaml``): the stage's loader reads it.
"""

from __future__ import annotations

import sys


def run(stage: str, *extra: str) -> None:
    """``ghist-ray <stage> <argv…> <extra…>``; exits with the stage's status."""
    from ghist_ray.cli import app

    sys.stdout.reconfigure(line_buffering=True)  # progress lines reach `ray job logs -f` live
    app([stage, *sys.argv[1:], *extra], prog_name="ghist-ray")
