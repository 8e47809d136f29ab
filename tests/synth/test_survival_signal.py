"""The planted prognostic signal is recoverable from ground-truth slide composition."""

from __future__ import annotations

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index

from ghist_ray.synth.clinical import clinical_table, plan_cohort
from ghist_ray.synth.layout import TYPE_NAMES, generate_layout


def _composition(n_slides: int, seed: int) -> pd.DataFrame:
    plans = plan_cohort(n_slides, 0, seed)
    rows = []
    for plan in plans:
        _, cells = generate_layout(512.0, 512.0, plan.params, plan.seed)
        t = cells["cell_type"].to_numpy()
        rows.append(
            {
                "patient_id": plan.patient.patient_id,
                "t_fraction": (t == TYPE_NAMES.index("T")).mean(),
                "tumour_area": cells["area_um2"][t == TYPE_NAMES.index("Malignant")].mean(),
            }
        )
    features = pd.DataFrame(rows).groupby("patient_id").mean()
    return clinical_table(plans, seed).join(features, on="patient_id")


def test_planted_signal_is_detectable_with_lifelines() -> None:
    table = _composition(160, seed=11)
    assert 0.3 < table["os_event"].mean() < 0.9  # censoring, but events to learn from
    cph = CoxPHFitter().fit(
        table[["os_days", "os_event", "t_fraction", "tumour_area"]], "os_days", "os_event"
    )
    assert cph.concordance_index_ > 0.65
    assert cph.params_["t_fraction"] < 0 < cph.params_["tumour_area"]  # immune protects
    assert cph.summary.loc["t_fraction", "p"] < 0.01

    shuffled = np.random.default_rng(0).permutation(table["os_days"].to_numpy())
    risk = cph.predict_partial_hazard(table)
    assert abs(concordance_index(shuffled, -risk, table["os_event"]) - 0.5) < 0.08
