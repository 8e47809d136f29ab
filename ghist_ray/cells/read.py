"""The one reader of an inference run's cells: done slides (those still in its
latest manifest), the panel they share, and one slide's columns, whole or in
record batches. Every consumer (exports, survival features, the analyses, the
summary, the notebooks) reads through it, so the checks live once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from ghist_ray.cells.layout import RunLayout, left_out_line
from ghist_ray.cells.schema import CellsMeta
from ghist_ray.errors import GhistError
from ghist_ray.slides.redact import redact

log = logging.getLogger(__name__)


class CellsRun:
    """The done slides of an inference output root and the panel they share.

    Parameters
    ----------
    uri
        The output root of ``ghist-ray infer`` (local folder or ``s3://``).
    progress
        Where the line about done slides that left the manifest goes.
    """

    def __init__(self, uri: str, progress: Callable[[str], None] = log.warning) -> None:
        self.uri = uri
        self.layout = RunLayout(uri)
        self.slides, left = self.layout.current_slides()
        if left:
            progress(left_out_line(redact(uri), left))
        if not self.slides:
            raise GhistError(f"{uri}: no done slides (no state/done/<slide>.json markers)")
        self.meta = self.slide_meta(self.slides[0])

    def _where(self, slide_id: str) -> str:
        return self.layout.cells_file(slide_id)

    def _dataset(self, slide_id: str) -> pads.Dataset:
        return _dataset(self.layout, slide_id)

    def slide_meta(self, slide_id: str) -> CellsMeta:
        """The slide's column meaning; a slide of another panel is an error."""
        meta = _meta(self.layout, slide_id, self._dataset(slide_id))
        first = getattr(self, "meta", None)
        if first is not None and not meta.same_panel(first):
            raise GhistError(
                f"{self._where(slide_id)}: other cell types or genes than slide "
                f"{self.slides[0]!r} (made by another model?)"
            )
        return meta

    def _check(self, slide_id: str, columns: list[str] | None, schema: pa.Schema) -> None:
        missing = [c for c in columns or [] if c not in schema.names]
        if missing:
            raise GhistError(f"{self._where(slide_id)}: missing columns {missing[:5]}")

    def batches(self, slide_id: str, columns: list[str], batch_rows: int) -> Iterator[pd.DataFrame]:
        """The slide's ``columns`` in frames of at most ``batch_rows`` cells."""
        for batch in self.arrow_batches(slide_id, columns, batch_rows):
            yield batch.to_pandas()

    def arrow_batches(
        self, slide_id: str, columns: list[str], batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        """As :meth:`batches`, in Arrow (no copy into pandas)."""
        self.slide_meta(slide_id)
        dataset = self._dataset(slide_id)
        self._check(slide_id, columns, dataset.schema)
        try:
            for batch in dataset.to_batches(columns=columns, batch_size=batch_rows):
                if batch.num_rows:
                    yield batch
        except (pa.ArrowInvalid, OSError) as exc:
            raise GhistError(f"{self._where(slide_id)}: unreadable ({exc})") from None

    def table(self, slide_id: str, columns: list[str] | None = None) -> pa.Table:
        """The slide's ``columns`` (all by default), whole, in Arrow."""
        self.slide_meta(slide_id)
        dataset = self._dataset(slide_id)
        self._check(slide_id, columns, dataset.schema)
        return _table(self.layout, slide_id, dataset, columns)

    def read(self, slide_id: str, columns: list[str] | None = None) -> pd.DataFrame:
        """The slide's ``columns`` (all by default), whole (one slide in memory)."""
        return self.table(slide_id, columns).to_pandas()

    def n_cells(self, slide_id: str) -> int:
        return int(self._dataset(slide_id).count_rows())

    def type_codes(
        self, column: pa.Array | pa.ChunkedArray | pd.Series, slide_id: str
    ) -> np.ndarray:
        """Index of each ``cell_type`` among the model's types; unknown names are an error."""
        values = pa.array(column) if isinstance(column, pd.Series) else column
        codes = pc.index_in(values, value_set=pa.array(self.meta.type_names))
        if codes.null_count:
            bad = pc.unique(pc.filter(values, pc.is_null(codes))).to_pylist()[:3]
            raise GhistError(
                f"{self._where(slide_id)}: cell types {bad} are not among {self.meta.type_names}"
            )
        return codes.to_numpy(zero_copy_only=False)

    def types(self, column: pd.Series, slide_id: str) -> pd.Categorical:
        """``cell_type`` as a categorical over the model's types."""
        return pd.Categorical.from_codes(self.type_codes(column, slide_id), self.meta.type_names)


def _dataset(layout: RunLayout, slide_id: str) -> pads.Dataset:
    path = layout.cells_file(slide_id)
    try:
        return pads.dataset(path, filesystem=layout.fs, format="parquet")
    except (FileNotFoundError, pa.ArrowInvalid, OSError) as exc:
        raise GhistError(
            f"{path}: slide {slide_id!r} is marked done but its cells are unreadable "
            f"({exc.__class__.__name__})"
        ) from None


def _meta(layout: RunLayout, slide_id: str, dataset: pads.Dataset) -> CellsMeta:
    try:
        return CellsMeta.from_schema(dataset.schema)
    except GhistError as exc:
        raise GhistError(f"{layout.cells_file(slide_id)}: {exc}") from None


def _table(
    layout: RunLayout, slide_id: str, dataset: pads.Dataset, columns: list[str] | None
) -> pa.Table:
    try:
        return dataset.to_table(columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise GhistError(f"{layout.cells_file(slide_id)}: unreadable ({exc})") from None


def read_cells(out: str, slide_id: str) -> tuple[pd.DataFrame, CellsMeta]:
    """One committed slide's cells and what their columns mean.

    Parameters
    ----------
    out
        The output root of ``ghist-ray infer``.
    slide_id
        A done slide of that run.
    """
    layout = RunLayout(out)
    if slide_id not in layout.done_slides():
        raise GhistError(f"{out}: slide {slide_id!r} has no committed cells (not done)")
    dataset = _dataset(layout, slide_id)
    meta = _meta(layout, slide_id, dataset)
    cells = _table(layout, slide_id, dataset, None).to_pandas()
    cells.insert(0, "slide_id", slide_id)
    return cells, meta


def read_cohort(out: str) -> pd.DataFrame:
    """Every done slide's cells as one frame (``slide_id`` a string); done slides
    that left the latest run's manifest are left out, with a warning."""
    layout = RunLayout(out)
    done, left = layout.current_slides()
    if left:
        log.warning(left_out_line(redact(out), left))
    if not done:
        return pd.DataFrame()
    files = [layout.cells_file(s) for s in done]
    partitioning = pads.partitioning(pa.schema([("slide_id", pa.string())]), flavor="hive")
    dataset = pads.dataset(
        files,
        filesystem=layout.fs,
        format="parquet",
        partitioning=partitioning,
        partition_base_dir=layout.path("cells"),
    )
    table = dataset.to_table()
    return table.select(
        ["slide_id", *(n for n in table.column_names if n != "slide_id")]
    ).to_pandas()
