"""``ray job submit … -- python jobs/train.py --config run.yaml --shards URI --out URI``

Runs ``ghist-ray train``. Re-submitting with the same ``train.name`` and ``--out``
resumes from the last Ray Train checkpoint under ``<out>/runs/<name>``.
"""

from _entry import run

if __name__ == "__main__":
    run("train")
