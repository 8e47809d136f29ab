"""The cells Parquet read by duckdb as the README shows: hive partitions by slide,
odd slide ids (URL-quoted folder names) included."""

from __future__ import annotations

import duckdb
import pandas as pd

from ghist_ray.cells import read_cohort
from tests.export.conftest import CommittedRun

# The README's query, word for word.
COUNTS = """
SELECT slide_id, cell_type, count(*) AS cells
FROM read_parquet('{out}/cells/*/*.parquet', hive_partitioning = true,
                  hive_types = {{'slide_id': VARCHAR}})
GROUP BY slide_id, cell_type
ORDER BY slide_id, cell_type
"""


def test_duckdb_counts_cells_by_slide_and_type_as_read_cohort(
    committed_run: CommittedRun,
) -> None:
    found = duckdb.sql(COUNTS.format(out=committed_run.out)).df()
    cohort = read_cohort(str(committed_run.out))
    expected = (
        cohort.groupby(["slide_id", "cell_type"]).size().rename("cells").reset_index()
    ).sort_values(["slide_id", "cell_type"], ignore_index=True)
    assert found["slide_id"].nunique() == 2 and "50% tumour/a b" in set(found["slide_id"])
    pd.testing.assert_frame_equal(found, expected, check_dtype=False)
