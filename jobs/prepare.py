"""``ray job submit … -- python jobs/prepare.py --manifest URI --out URI [--reference CSV]``

Runs ``ghist-ray prepare``. Re-submitting is safe: shards already complete at
``--out`` (their ``_dataset.json`` is written last) are kept and the job ends at
once; the ``split=…`` folders an interrupted attempt left on an object store are
replaced. Anything else at ``--out`` is left to ``prepare`` to refuse.
"""

import sys

from _entry import option, run


def resume_flags(out: str) -> list[str]:
    """Exit 0 if ``out`` holds complete shards; ``--overwrite`` if only a partial attempt."""
    from ghist_ray import uri
    from ghist_ray.shards import META

    fs, path = uri.filesystem(out)
    if fs.exists(f"{path}/{META}"):
        print(f"prepare: {out} is complete ({META} present); nothing to do")
        raise SystemExit(0)
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path)] if fs.isdir(path) else []
    partial = bool(names) and all(name.startswith("split=") for name in names)
    return ["--overwrite"] if partial else []


if __name__ == "__main__":
    out = option(sys.argv[1:], "--out")
    run("prepare", *(resume_flags(out) if out and "--help" not in sys.argv else []))
