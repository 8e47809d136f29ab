"""``ray job submit … -- python jobs/survival.py --cells URI --clinical FILE --out URI``

Runs ``ghist-ray survival`` on the per-cell output of ``jobs/infer.py``.
"""

from _entry import run

if __name__ == "__main__":
    run("survival")
