"""Survival analysis on a patient table: penalised Cox, cross-validated C-index,
Kaplan–Meier by risk group with the log-rank test, the proportional-hazards check.

Everything returns tidy DataFrames first (lifelines does the fitting); pictures
are drawn from them in :mod:`ghist_ray.cohort.plots`. The table has one row per
patient: ``time``, ``event`` (1 = event) and numeric columns.

Example::

    from ghist_ray.cohort.survival import cross_validate, fit_cox

    model = fit_cox(table, ["prop.T", "area.Malignant", "age"], penalizer=0.1)
    model.summary()                                   # coef, HR (per SD), CI, p
    cv = cross_validate(table, ["prop.T", "area.Malignant", "age"], folds=5, repeats=10)
    cv.mean, cv.ci_low, cv.ci_high                    # held-out C-index and its 95% CI

**Cross-validation** is by patient (one row each), folds stratified by event,
repeated with fresh splits; scaling (z-scores) is learnt on the training folds
only. The C-index is the mean over all held-out folds of all repeats; its 95% CI
is a percentile bootstrap over patients of that same mean (the held-out
predictions resampled, models kept), so it carries the test-set sampling
error, not the spread of refitted models. **Risk groups** come from held-out
predictions of the first repeat: each patient is cut by the quantiles of the
training patients' risk under the model that did not see them, as a deployed
model would assign groups; the log-rank test compares those groups.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError
from lifelines.statistics import multivariate_logrank_test, proportional_hazard_test
from lifelines.utils import concordance_index

from ghist_ray import console
from ghist_ray.errors import GhistError

TIME, EVENT = "time", "event"
Warn = Callable[[str], None]


def _quiet(fn: Callable[[], object]) -> tuple[object, list[str]]:
    """Run a lifelines call, collecting its warnings instead of printing them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    seen: list[str] = []
    for w in caught:
        text = str(w.message).strip().splitlines()[0]
        if text not in seen:
            seen.append(text)
    return out, seen


@dataclass(frozen=True)
class CoxModel:
    """A fitted Cox model and the scaling its inputs need."""

    fitter: CoxPHFitter
    columns: list[str]
    mean: pd.Series
    scale: pd.Series
    warnings: list[str] = field(default_factory=list)

    def transform(self, table: pd.DataFrame) -> pd.DataFrame:
        return (table[self.columns].astype(float) - self.mean) / self.scale

    def risk(self, table: pd.DataFrame) -> np.ndarray:
        """Log partial hazard (higher = worse) of each row."""
        return self.fitter.predict_log_partial_hazard(self.transform(table)).to_numpy()

    @property
    def concordance(self) -> float:
        """C-index on the rows it was fitted on (apparent, optimistic)."""
        return float(self.fitter.concordance_index_)

    def summary(self) -> pd.DataFrame:
        """One row per column: coef, se, HR with 95% CI (per ``scale`` units), z, p."""
        s = self.fitter.summary
        return pd.DataFrame(
            {
                "covariate": self.columns,
                "coef": s["coef"].to_numpy(),
                "se": s["se(coef)"].to_numpy(),
                "hr": s["exp(coef)"].to_numpy(),
                "hr_low": s["exp(coef) lower 95%"].to_numpy(),
                "hr_high": s["exp(coef) upper 95%"].to_numpy(),
                "z": s["z"].to_numpy(),
                "p": s["p"].to_numpy(),
                "per": self.scale.to_numpy(),
            }
        )

    def ph_test(self, table: pd.DataFrame) -> pd.DataFrame:
        """Proportional-hazards test per column (scaled Schoenfeld residuals vs rank
        of time; lifelines' ``proportional_hazard_test``): statistic and p."""
        frame = self._frame(table)
        result, _ = _quiet(
            lambda: proportional_hazard_test(self.fitter, frame, time_transform="rank")
        )
        s = result.summary.reindex(self.columns)
        return pd.DataFrame(
            {
                "covariate": self.columns,
                "test_statistic": s["test_statistic"].to_numpy(),
                "p": s["p"].to_numpy(),
            }
        )

    def _frame(self, table: pd.DataFrame) -> pd.DataFrame:
        frame = self.transform(table)
        frame[TIME] = table[TIME].to_numpy(float)
        frame[EVENT] = table[EVENT].to_numpy(int)
        return frame


def fit_cox(
    table: pd.DataFrame,
    columns: Sequence[str],
    penalizer: float = 0.1,
    l1_ratio: float = 0.0,
    standardise: bool = True,
) -> CoxModel:
    """Cox PH on ``columns`` of ``table`` (lifelines ``CoxPHFitter``, Efron ties).

    With ``standardise`` every column is z-scored first, so hazard ratios are
    per standard deviation (``summary()["per"]``) and the penalty treats them
    alike; without, they are per unit (as in published tables).
    """
    columns = list(columns)
    x = table[columns].astype(float)
    if standardise:
        mean, scale = x.mean(), x.std(ddof=0)
        scale = scale.where(scale > 0, 1.0)
    else:
        mean = pd.Series(0.0, index=columns)
        scale = pd.Series(1.0, index=columns)
    model = CoxModel(CoxPHFitter(penalizer=penalizer, l1_ratio=l1_ratio), columns, mean, scale)
    frame = model._frame(table)
    try:
        _, seen = _quiet(lambda: model.fitter.fit(frame, TIME, EVENT))
    except (ConvergenceError, np.linalg.LinAlgError) as exc:
        raise GhistError(
            f"Cox fit on {len(table)} patients did not converge with {columns[:6]} "
            f"({exc.__class__.__name__}); raise survival.penalizer or use fewer features"
        ) from None
    model.warnings.extend(seen)
    return model


def patient_folds(events: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold of each patient (0..folds-1), events and censored spread evenly."""
    out = np.empty(len(events), dtype=np.int64)
    for value in (1, 0):
        at = rng.permutation(np.flatnonzero(events == value))
        out[at] = (np.arange(len(at)) + rng.integers(folds)) % folds
    return out


def group_names(k: int) -> list[str]:
    return {2: ["low", "high"], 3: ["low", "intermediate", "high"]}.get(
        k, [f"G{g + 1}" for g in range(k)]
    )


def assign_groups(train_risk: np.ndarray, risk: np.ndarray, k: int) -> np.ndarray:
    """Group 0 (lowest risk) … k-1 by the quantiles of ``train_risk``."""
    cuts = np.quantile(train_risk, np.arange(1, k) / k)
    return np.searchsorted(cuts, risk, side="right")


def concordance_matrices(
    time: np.ndarray, risk: np.ndarray, event: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(concordant, comparable) pair matrices of Harrell's C as lifelines counts it:
    i, j comparable when i has the event and t_i < t_j (or t_i = t_j and j is
    censored); concordant when i has the higher risk, ties ½."""
    ti, tj = time[:, None], time[None, :]
    comparable = (event[:, None] == 1) & ((ti < tj) | ((ti == tj) & (event[None, :] == 0)))
    ri, rj = risk[:, None], risk[None, :]
    concordant = comparable * ((ri > rj) + 0.5 * (ri == rj))
    return concordant.astype(float), comparable.astype(float)


@dataclass(frozen=True)
class CVResult:
    """Held-out C-index of repeated patient-level cross-validation."""

    folds: pd.DataFrame  # repeat, fold, n_test, events_test, cindex
    oof: pd.DataFrame  # first repeat, per patient: fold, risk, group (held-out)
    boot: np.ndarray  # bootstrap distribution of the mean C-index
    mean: float
    ci_low: float
    ci_high: float

    @property
    def sd(self) -> float:
        return float(self.folds["cindex"].std(ddof=1))

    def metrics(self, prefix: str) -> dict[str, float]:
        repeats = self.folds.groupby("repeat")["cindex"].mean()
        return {
            f"{prefix}_mean": self.mean,
            f"{prefix}_ci_low": self.ci_low,
            f"{prefix}_ci_high": self.ci_high,
            f"{prefix}_sd_folds": self.sd,
            f"{prefix}_repeat_min": float(repeats.min()),
            f"{prefix}_repeat_max": float(repeats.max()),
        }


def cross_validate(
    table: pd.DataFrame,
    columns: Sequence[str],
    folds: int = 5,
    repeats: int = 10,
    penalizer: float = 0.1,
    l1_ratio: float = 0.0,
    standardise: bool = True,
    risk_groups: int = 2,
    bootstrap: int = 1000,
    seed: int = 0,
    shuffle_outcomes: bool = False,
) -> CVResult:
    """Repeated stratified K-fold C-index of a Cox model on ``columns`` (module docstring).

    ``shuffle_outcomes`` is the null control: every repeat first permutes the
    (time, event) pairs across patients anew, so the mean is over ``repeats``
    permutations and should sit near 0.5.
    """
    n, n_events = len(table), int(table[EVENT].sum())
    if n_events < folds or n - n_events < 1 or n < 2 * folds:
        raise GhistError(
            f"{n} patients with {n_events} events are too few for {folds}-fold "
            "cross-validation (need an event in every fold); lower survival.folds"
        )
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=bootstrap).astype(float)
    rows, boot_sum, boot_n = [], np.zeros(bootstrap), np.zeros(bootstrap)
    oof = None
    label = f"survival CV, {len(columns)} columns" + (", shuffled" if shuffle_outcomes else "")
    with console.bar(label, folds * repeats, "fits") as fits:
        for r in range(repeats):
            data = shuffled(table, int(rng.integers(2**31))) if shuffle_outcomes else table
            time = data[TIME].to_numpy(float)
            event = data[EVENT].to_numpy(int)
            fold_of = patient_folds(event, folds, rng)
            fitted_on = min(int((fold_of != f).sum()) for f in range(folds))
            if fitted_on < 2:
                raise GhistError(
                    f"{n} patients with {n_events} events: a {folds}-fold split leaves "
                    f"{fitted_on} patient(s) to fit a Cox model on; lower survival.folds"
                )
            risk = np.empty(n)
            groups = np.empty(n, dtype=np.int64)
            for f in range(folds):
                test = fold_of == f
                model = fit_cox(data[~test], columns, penalizer, l1_ratio, standardise)
                risk[test] = model.risk(data[test])
                if r == 0:
                    groups[test] = assign_groups(model.risk(data[~test]), risk[test], risk_groups)
                try:
                    cindex = concordance_index(time[test], -risk[test], event[test])
                except ZeroDivisionError:  # no comparable pair in this fold
                    cindex = np.nan
                rows.append(
                    {
                        "repeat": r,
                        "fold": f,
                        "n_test": int(test.sum()),
                        "events_test": int(event[test].sum()),
                        "cindex": cindex,
                    }
                )
                if bootstrap:
                    num, den = concordance_matrices(time[test], risk[test], event[test])
                    w = weights[:, test]
                    d = np.einsum("bi,ij,bj->b", w, den, w)
                    c = np.einsum("bi,ij,bj->b", w, num, w) / np.where(d > 0, d, np.nan)
                    ok = np.isfinite(c)
                    boot_sum[ok] += c[ok]
                    boot_n[ok] += 1
                fits.advance()
            if r == 0:
                names = np.array(group_names(risk_groups))
                oof = pd.DataFrame(
                    {"fold": fold_of, "risk": risk, "group": names[groups]}, index=table.index
                )
    frame = pd.DataFrame(rows)
    mean = float(frame["cindex"].mean())
    boot = boot_sum / np.where(boot_n > 0, boot_n, np.nan)
    low, high = (
        (float(np.nanpercentile(boot, 2.5)), float(np.nanpercentile(boot, 97.5)))
        if bootstrap
        else (np.nan, np.nan)
    )
    assert oof is not None
    return CVResult(frame, oof, boot, mean, low, high)


def shuffled(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The table with (time, event) pairs permuted across patients: a null control."""
    order = np.random.default_rng(seed).permutation(len(table))
    out = table.copy()
    out[[TIME, EVENT]] = table[[TIME, EVENT]].to_numpy()[order]
    out[EVENT] = out[EVENT].astype(int)
    return out


@dataclass(frozen=True)
class KMResult:
    """Kaplan–Meier curves per group and the log-rank test between them."""

    curves: pd.DataFrame  # group, time, survival, ci_low, ci_high, at_risk, events, censored
    groups: pd.DataFrame  # group, n, events, median_time
    test_statistic: float
    p_value: float
    dof: int
    fitters: list[KaplanMeierFitter]


def kaplan_meier(time: np.ndarray, event: np.ndarray, groups: np.ndarray) -> KMResult:
    """KM per group (in order of first appearance in ``group_names`` order if they
    are those, else sorted) and the (multivariate) log-rank test; with one group
    the test's statistic and p are NaN."""
    labels = pd.unique(pd.Series(groups))
    known = [g for g in group_names(len(labels)) if g in set(labels)]
    order = known if len(known) == len(labels) else sorted(labels)
    curves, summary, fitters = [], [], []
    for label in order:
        at = groups == label
        kmf = KaplanMeierFitter(label=str(label)).fit(time[at], event[at])
        ci = kmf.confidence_interval_survival_function_
        table = kmf.event_table
        curves.append(
            pd.DataFrame(
                {
                    "group": label,
                    "time": kmf.survival_function_.index.to_numpy(),
                    "survival": kmf.survival_function_.iloc[:, 0].to_numpy(),
                    "ci_low": ci.iloc[:, 0].to_numpy(),
                    "ci_high": ci.iloc[:, 1].to_numpy(),
                    "at_risk": table["at_risk"].to_numpy(),
                    "events": table["observed"].to_numpy(),
                    "censored": table["censored"].to_numpy(),
                }
            )
        )
        summary.append(
            {
                "group": label,
                "n": int(at.sum()),
                "events": int(event[at].sum()),
                "median_time": float(kmf.median_survival_time_),
            }
        )
        fitters.append(kmf)
    statistic, p_value, dof = np.nan, np.nan, 0
    if len(order) > 1:  # a small cohort's held-out risks can all fall on one side
        test = multivariate_logrank_test(time, groups, event)
        statistic, p_value = float(test.test_statistic), float(test.p_value)
        dof = int(test.degrees_of_freedom)
    return KMResult(
        pd.concat(curves, ignore_index=True),
        pd.DataFrame(summary),
        statistic,
        p_value,
        dof,
        fitters,
    )
