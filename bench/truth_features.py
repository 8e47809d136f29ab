"""The demo's survival features from the cohort's true cells: the ceiling the planted
risk allows, to set the model's C-index against. Writes one row per slide
(``truth_T``, ``truth_Fib``, ``truth_MalArea``: T and fibroblast shares, mean
malignant nucleus area) for ``ghist-ray survival --features``::

    python bench/truth_features.py demo_out/cohort truth.csv
    ghist-ray survival --config configs/demo.yaml --clinical demo_out/cohort/clinical.csv \\
        --features truth.csv --manifest demo_out/cohort/manifest.parquet \\
        --feature 'truth_*' --out truth_survival/
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def truth_features(cohort: Path) -> pd.DataFrame:
    """One row per slide of ``cohort/truth/*.parquet``."""
    rows = []
    for path in sorted((cohort / "truth").glob("*.parquet")):
        cells = pd.read_parquet(path)
        kind = cells["cell_type"]
        rows.append(
            {
                "slide_id": path.stem,
                "truth_T": float((kind == "T").mean()),
                "truth_Fib": float((kind == "Fibroblast").mean()),
                "truth_MalArea": float(cells.loc[kind == "Malignant", "area_um2"].mean()),
            }
        )
    return pd.DataFrame(rows)


if __name__ == "__main__":
    truth_features(Path(sys.argv[1])).to_csv(sys.argv[2], index=False)
