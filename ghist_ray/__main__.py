"""``python -m ghist_ray <stage>``: the ``ghist-ray`` command, where no script is on PATH."""

from ghist_ray.cli import main

main()
