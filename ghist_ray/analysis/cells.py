"""Reading an inference run slide by slide, for the analyses: done slides, one
slide's columns (whole or in record batches), the panel check across slides and
the slide → patient map. Nothing here holds more than one slide."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from ghist_ray.cohort.clinical import slide_patients
from ghist_ray.errors import GhistError
from ghist_ray.inference.postprocess import CellsMeta
from ghist_ray.inference.state import RunLayout, left_out_line
from ghist_ray.slides.redact import redact


class CellsRun:
    """The done slides of an inference output root (those still in its latest
    manifest) and the panel they share."""

    def __init__(self, uri: str, progress: Callable[[str], None] = print) -> None:
        self.uri = uri
        self.layout = RunLayout(uri)
        self.slides, left = self.layout.current_slides()
        if left:
            progress(left_out_line(redact(uri), left))
        if not self.slides:
            raise GhistError(f"{uri}: no done slides (no state/done/<slide>.json markers)")
        self.meta = self.slide_meta(self.slides[0])

    def _where(self, slide_id: str) -> str:
        return f"{self.layout.cells_file(slide_id)}"

    def _dataset(self, slide_id: str) -> pads.Dataset:
        path = self.layout.cells_file(slide_id)
        try:
            return pads.dataset(path, filesystem=self.layout.fs, format="parquet")
        except (FileNotFoundError, pa.ArrowInvalid, OSError) as exc:
            raise GhistError(
                f"{path}: slide {slide_id!r} is marked done but its cells are unreadable "
                f"({exc.__class__.__name__})"
            ) from None

    def slide_meta(self, slide_id: str) -> CellsMeta:
        """The slide's column meaning; a slide of another panel is an error."""
        schema = self._dataset(slide_id).schema
        try:
            meta = CellsMeta.from_schema(schema)
        except GhistError as exc:
            raise GhistError(f"{self._where(slide_id)}: {exc}") from None
        first = getattr(self, "meta", None)
        if first is not None and (meta.type_names, meta.gene_names) != (
            first.type_names,
            first.gene_names,
        ):
            raise GhistError(
                f"{self._where(slide_id)}: other cell types or genes than slide "
                f"{self.slides[0]!r} (made by another model?)"
            )
        return meta

    def _check(self, slide_id: str, columns: list[str], schema: pa.Schema) -> None:
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise GhistError(f"{self._where(slide_id)}: missing columns {missing[:5]}")

    def batches(self, slide_id: str, columns: list[str], batch_rows: int) -> Iterator[pd.DataFrame]:
        """The slide's ``columns`` in frames of at most ``batch_rows`` cells."""
        self.slide_meta(slide_id)
        dataset = self._dataset(slide_id)
        self._check(slide_id, columns, dataset.schema)
        try:
            for batch in dataset.to_batches(columns=columns, batch_size=batch_rows):
                if batch.num_rows:
                    yield batch.to_pandas()
        except (pa.ArrowInvalid, OSError) as exc:
            raise GhistError(f"{self._where(slide_id)}: unreadable ({exc})") from None

    def read(self, slide_id: str, columns: list[str]) -> pd.DataFrame:
        """The slide's ``columns``, whole (one slide in memory)."""
        self.slide_meta(slide_id)
        dataset = self._dataset(slide_id)
        self._check(slide_id, columns, dataset.schema)
        try:
            return dataset.to_table(columns=columns).to_pandas()
        except (pa.ArrowInvalid, OSError) as exc:
            raise GhistError(f"{self._where(slide_id)}: unreadable ({exc})") from None

    def n_cells(self, slide_id: str) -> int:
        return int(self._dataset(slide_id).count_rows())

    def types(self, column: pd.Series, slide_id: str) -> pd.Categorical:
        """``cell_type`` as a categorical over the model's types; unknown names are an error."""
        found = pd.Categorical(column, categories=self.meta.type_names)
        if found.isna().any():
            bad = column[pd.isna(found)].unique()[:3].tolist()
            raise GhistError(
                f"{self._where(slide_id)}: cell types {bad} are not among {self.meta.type_names}"
            )
        return found


def patients(slides: list[str], pattern: str, manifest_uri: str | None) -> pd.Series:
    """Patient of each slide, as ``ghist-ray survival`` maps them (manifest, then barcode)."""
    from ghist_ray.cohort.run import manifest_patients

    return slide_patients(slides, pattern, manifest_patients(manifest_uri))


def pool_patients(
    per_slide: pd.DataFrame, weights: pd.Series, patient_of: pd.Series
) -> pd.DataFrame:
    """Per-patient rows: each column the ``weights``-weighted mean of its slides'
    finite values (slides of one patient weigh by their cells), plus ``n_slides``."""
    labels = patient_of.reindex(per_slide.index)
    keep = labels.notna()
    values = per_slide[keep].astype(float)
    w = weights.reindex(values.index).astype(float)
    mask = values.notna()
    weighted = values.fillna(0.0).mul(w, axis=0).groupby(labels[keep]).sum()
    total = mask.mul(w, axis=0).groupby(labels[keep]).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = weighted / total.where(total > 0)
    pooled.insert(0, "n_slides", labels[keep].value_counts().reindex(pooled.index))
    return pooled.rename_axis("patient_id")
