"""``ray job submit … -- python jobs/prepare.py --manifest URI --out URI [--reference CSV]``

Runs ``ghist-ray prepare --resume``: re-submitting is safe, complete shards at
``--out`` are kept and the job ends at once, and the ``split=…`` folders an
interrupted attempt left are replaced.
"""

from _entry import run

if __name__ == "__main__":
    run("prepare", "--resume")
