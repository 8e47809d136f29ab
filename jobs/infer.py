"""``ray job submit … -- python jobs/infer.py --manifest URI --model PATH|models:/name/v --out URI``

Runs ``ghist-ray infer``. Re-submitting with the same ``--out`` skips the slides
whose done marker exists and redoes failed or unfinished ones.
"""

from _entry import run

if __name__ == "__main__":
    run("infer")
