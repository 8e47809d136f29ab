"""Survival numbers: the planted signal is recovered, the shuffled control is not;
Cox/KM equal lifelines called directly; rossi matches its published coefficients."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.datasets import load_rossi
from lifelines.statistics import logrank_test
from lifelines.utils import concordance_index

from ghist_ray.cohort import SurvivalReport, cross_validate, fit_cox
from ghist_ray.cohort.survival import (
    assign_groups,
    concordance_matrices,
    kaplan_meier,
    patient_folds,
)
from ghist_ray.errors import GhistError
from tests.cohort.conftest import REPEATS

# Fox (2002), "Cox proportional-hazards regression for survival data", appendix to
# *An R and S-PLUS Companion to Applied Regression*: coxph(Surv(week, arrest) ~ fin
# + age + race + wexp + mar + paro + prio, data = Rossi) — the fit lifelines'
# documentation reproduces with its bundled load_rossi (concordance 0.64, LR 33.27).
ROSSI = pd.DataFrame(
    {
        "coef": [-0.3794, -0.0574, 0.3139, -0.1498, -0.4337, -0.0849, 0.0915],
        "se": [0.1914, 0.0220, 0.3080, 0.2122, 0.3819, 0.1958, 0.0286],
    },
    index=["fin", "age", "race", "wexp", "mar", "paro", "prio"],
)


def test_planted_signal_is_recovered(planted: SurvivalReport) -> None:
    m = planted.metrics
    assert m["n_patients"] == 136 and m["n_slides"] == 160
    # Cross-validated (held-out) C-index of the planted features clearly above 0.5.
    print(
        f"CV C-index {m['cindex_cv_mean']:.3f} ({m['cindex_cv_ci_low']:.3f}–"
        f"{m['cindex_cv_ci_high']:.3f}); log-rank chi2 {m['logrank_chi2']:.1f}, "
        f"p {m['logrank_p']:.1e}; shuffled {m['cindex_cv_shuffled_mean']:.3f} "
        f"({m['cindex_cv_shuffled_ci_low']:.3f}–{m['cindex_cv_shuffled_ci_high']:.3f})"
    )
    assert m["cindex_cv_mean"] > 0.65 and m["cindex_cv_ci_low"] > 0.6
    assert m["cindex_cv_features_mean"] > 0.65 and m["cindex_cv_features_ci_low"] > 0.6
    assert m["logrank_p"] < 0.001  # held-out median split
    # Outcomes permuted anew in every repeat: no signal left.
    assert abs(m["cindex_cv_shuffled_mean"] - 0.5) < 0.04
    assert m["cindex_cv_shuffled_ci_low"] < 0.5 < m["cindex_cv_shuffled_ci_high"]
    # The planted directions: immune infiltration protects, tumour grade harms.
    hr = planted.cox.set_index("covariate")
    assert hr.loc["prop.T", "hr_high"] < 1 < hr.loc["area.Malignant", "hr_low"]
    assert (hr.loc[["prop.T", "area.Malignant"], "p"] < 0.001).all()
    groups = planted.km.groups.set_index("group")
    assert groups.loc["high", "median_time"] < groups.loc["low", "median_time"]


def test_cox_and_km_equal_lifelines_called_directly(planted: SurvivalReport) -> None:
    out = Path(planted.out)
    table = pd.read_csv(out / "analysis_table.csv", index_col="patient_id")
    columns = ["prop.T", "area.Malignant", "age", "stage"]
    x = table[columns]
    z = (x - x.mean()) / x.std(ddof=0)
    direct = CoxPHFitter(penalizer=0.1).fit(
        z.assign(time=table["time"], event=table["event"]), "time", "event"
    )
    cox = pd.read_csv(out / "cox_summary.csv").set_index("covariate")
    np.testing.assert_allclose(cox.loc[columns, "coef"], direct.params_[columns], rtol=1e-6)
    np.testing.assert_allclose(cox.loc[columns, "p"], direct.summary.loc[columns, "p"], rtol=1e-5)
    np.testing.assert_allclose(
        cox.loc[columns, "hr_high"], direct.summary.loc[columns, "exp(coef) upper 95%"], rtol=1e-6
    )
    assert planted.metrics["cindex_train"] == pytest.approx(direct.concordance_index_)

    curves = pd.read_csv(out / "km_curves.csv")
    for group in ("low", "high"):
        at = table["group"] == group
        kmf = KaplanMeierFitter().fit(table.loc[at, "time"], table.loc[at, "event"])
        mine = curves[curves["group"] == group]
        np.testing.assert_allclose(mine["survival"], kmf.survival_function_.iloc[:, 0])
        np.testing.assert_allclose(mine["at_risk"], kmf.event_table["at_risk"])
        # And by hand: the product-limit estimate at the last time.
        t, e = table.loc[at, "time"].to_numpy(), table.loc[at, "event"].to_numpy()
        times = np.unique(t[e == 1])
        hand = np.prod([1 - ((t == u) & (e == 1)).sum() / (t >= u).sum() for u in times])
        assert mine["survival"].iloc[-1] == pytest.approx(hand)
    low, high = table["group"] == "low", table["group"] == "high"
    direct_lr = logrank_test(
        table.loc[low, "time"],
        table.loc[high, "time"],
        table.loc[low, "event"],
        table.loc[high, "event"],
    )
    assert planted.metrics["logrank_p"] == pytest.approx(direct_lr.p_value)
    assert planted.metrics["logrank_chi2"] == pytest.approx(direct_lr.test_statistic)

    folds = pd.read_csv(out / "cv_folds.csv")
    main = folds[folds["model"] == "cindex_cv"]
    assert len(main) == REPEATS * 5
    assert planted.metrics["cindex_cv_mean"] == pytest.approx(main["cindex"].mean())
    saved = json.loads((out / "cv_cindex.json").read_text())["cindex_cv"]
    assert saved["ci_low"] < saved["mean"] < saved["ci_high"]


def test_held_out_risk_gives_the_held_out_cindex(planted: SurvivalReport) -> None:
    """Each fold's C-index is lifelines' concordance on its held-out risks."""
    oof = planted.cv.oof.join(planted.table[["time", "event"]])
    first = planted.cv.folds[planted.cv.folds["repeat"] == 0].set_index("fold")["cindex"]
    for fold, rows in oof.groupby("fold"):
        expected = concordance_index(rows["time"], -rows["risk"], rows["event"])
        assert first[fold] == pytest.approx(expected)


def test_rossi_matches_published_coefficients() -> None:
    rossi = load_rossi()
    model = fit_cox(
        rossi.rename(columns={"week": "time", "arrest": "event"}),
        list(ROSSI.index),
        penalizer=0.0,
        standardise=False,
    )
    s = model.summary().set_index("covariate")
    np.testing.assert_allclose(s["coef"], ROSSI["coef"], atol=6e-5)
    np.testing.assert_allclose(s["se"], ROSSI["se"], atol=6e-5)
    np.testing.assert_allclose(s["hr"], np.exp(ROSSI["coef"]), rtol=1e-3)
    assert model.concordance == pytest.approx(0.640, abs=5e-4)
    assert model.fitter.log_likelihood_ratio_test().test_statistic == pytest.approx(33.27, abs=0.01)
    # Non-proportional hazards in age and wexp (as lifelines' check_assumptions reports).
    ph = model.ph_test(rossi.rename(columns={"week": "time", "arrest": "event"}))
    flagged = set(ph.loc[ph["p"] < 0.05, "covariate"])
    assert flagged == {"age", "wexp"}


def test_rossi_cross_validation_runs_and_is_sane() -> None:
    rossi = load_rossi().rename(columns={"week": "time", "arrest": "event"})
    cv = cross_validate(
        rossi, list(ROSSI.index), repeats=1, penalizer=0.0, standardise=False, bootstrap=200
    )
    assert 0.55 < cv.mean < 0.66  # held-out, a little under the apparent 0.640
    assert cv.ci_low < cv.mean < cv.ci_high


def test_bootstrap_matrices_count_pairs_as_lifelines() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        t = rng.integers(1, 8, 25).astype(float)  # many ties in time
        e = rng.integers(0, 2, 25)
        r = rng.integers(0, 4, 25).astype(float)  # and in risk
        if not e.any():
            continue
        num, den = concordance_matrices(t, r, e)
        assert num.sum() / den.sum() == pytest.approx(concordance_index(t, -r, e))


def test_folds_are_patient_level_and_stratified() -> None:
    events = np.r_[np.ones(23, int), np.zeros(40, int)]
    folds = patient_folds(events, 5, np.random.default_rng(1))
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4]  # each patient in exactly one
    per_fold = [events[folds == f].sum() for f in range(5)]
    assert max(per_fold) - min(per_fold) <= 1
    assert assign_groups(np.arange(10.0), np.array([-1.0, 4.4, 4.6, 99.0]), 2).tolist() == [
        0,
        0,
        1,
        1,
    ]


def test_too_few_events_and_collinear_features_are_clear_errors(planted) -> None:
    table = planted.table[["time", "event", "prop.T"]].copy()
    few = table.assign(event=0)
    few.iloc[:3, 1] = 1
    with pytest.raises(GhistError, match=r"136 patients with 3 events are too few for 5-fold"):
        cross_validate(few, ["prop.T"])
    table["copy"] = table["prop.T"] * 2.0
    with pytest.raises(GhistError, match=r"did not converge .*raise survival\.penalizer"):
        fit_cox(table, ["prop.T", "copy"], penalizer=0.0, standardise=False)


def test_a_fold_too_small_to_fit_on_is_a_clear_error(planted) -> None:
    """4 patients (3 events) in 2 folds: some splits leave 1 patient to fit on."""
    small = planted.table[["time", "event", "prop.T"]].iloc[:4].assign(event=[1, 1, 1, 0])
    outcomes = []
    for seed in range(12):
        try:
            cross_validate(small, ["prop.T"], folds=2, repeats=1, bootstrap=0, seed=seed)
            outcomes.append("ran")
        except GhistError as exc:
            assert "2-fold split leaves 1 patient(s) to fit a Cox model on" in str(exc)
            outcomes.append("refused")
    assert "refused" in outcomes


def test_one_risk_group_gives_curves_without_a_test() -> None:
    rossi = load_rossi()
    km = kaplan_meier(rossi["week"].to_numpy(float), rossi["arrest"].to_numpy(), np.zeros(432))
    assert len(km.fitters) == 1 and km.groups["n"].tolist() == [432]
    assert np.isnan(km.p_value) and km.dof == 0
