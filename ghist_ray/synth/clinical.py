"""Patients, their slides and outcomes, with survival planted on slide biology.

Hazard rises with tumour grade and falls with immune infiltration (both visible
in the H&E and in expression), so a pipeline that recovers composition or
expression from pixels can recover the prognostic signal. Times are Weibull,
censoring administrative plus random loss to follow-up, TCGA-style barcodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ghist_ray.synth.layout import SlideParams

WEIBULL_SHAPE = 1.3
BASE_SCALE_DAYS = 1600.0
BETA_GRADE = 1.6  # per unit of grade (0..1 scaled to -1..1)
BETA_IMMUNE = -1.8
STAGES = ("Stage I", "Stage II", "Stage III", "Stage IV")


@dataclass(frozen=True)
class PatientPlan:
    patient_id: str
    age: float
    immune: float
    grade: float
    tumour_fraction: float


@dataclass(frozen=True)
class SlidePlan:
    slide_id: str
    patient: PatientPlan
    params: SlideParams
    seed: int
    has_xenium: bool


def plan_cohort(n_slides: int, n_xenium: int, seed: int) -> list[SlidePlan]:
    """Patients (~15% with a second slide) and per-slide biology and staining."""
    rng = np.random.default_rng(seed)
    n_patients = n_slides - int(0.15 * n_slides)
    patients = [
        PatientPlan(
            patient_id=f"TCGA-SY-A{p:03d}",
            age=float(np.clip(rng.normal(60, 11), 28, 90).round()),
            immune=float(rng.beta(2, 2)),
            grade=float(rng.beta(2, 2)),
            tumour_fraction=float(rng.uniform(0.25, 0.55)),
        )
        for p in range(n_patients)
    ]
    owners = list(range(n_patients)) + list(rng.choice(n_patients, n_slides - n_patients, False))
    plans = []
    for owner in sorted(owners):
        patient = patients[owner]
        dx = sum(1 for p in plans if p.patient is patient) + 1
        jitter = rng.normal(0, 0.04, 3)
        params = SlideParams(
            immune=float(np.clip(patient.immune + jitter[0], 0, 1)),
            grade=float(np.clip(patient.grade + jitter[1], 0, 1)),
            tumour_fraction=float(np.clip(patient.tumour_fraction + jitter[2], 0.15, 0.7)),
            stain_h=float(rng.uniform(0.85, 1.2)),
            stain_e=float(rng.uniform(0.8, 1.2)),
        )
        plans.append(
            SlidePlan(
                slide_id=f"{patient.patient_id}-01Z-00-DX{dx}",
                patient=patient,
                params=params,
                seed=int(rng.integers(2**31)),
                has_xenium=False,
            )
        )
    first_slides = [k for k, p in enumerate(plans) if p.slide_id.endswith("DX1")]
    paired = set(first_slides[:n_xenium])
    return [
        SlidePlan(p.slide_id, p.patient, p.params, p.seed, k in paired) for k, p in enumerate(plans)
    ]


def risk_score(patient: PatientPlan) -> float:
    """The planted log-hazard (what a correct pipeline should rank patients by)."""
    return BETA_GRADE * (2 * patient.grade - 1) + BETA_IMMUNE * (2 * patient.immune - 1)


def clinical_table(plans: list[SlidePlan], seed: int) -> pd.DataFrame:
    """One row per patient: id, age, stage, overall survival (days) and event."""
    rng = np.random.default_rng(seed + 1)
    patients = list({p.patient.patient_id: p.patient for p in plans}.values())
    risk = np.array([risk_score(p) for p in patients]) + 0.01 * (
        np.array([p.age for p in patients]) - 60
    )
    u = rng.uniform(size=len(patients))
    event_time = BASE_SCALE_DAYS * (-np.log(u) / np.exp(risk)) ** (1 / WEIBULL_SHAPE)
    censor = np.minimum(rng.uniform(365, 3650, len(patients)), rng.exponential(6000, len(patients)))
    burden = np.array([p.tumour_fraction + 0.5 * p.grade for p in patients])
    stage = np.clip(np.digitize(burden + rng.normal(0, 0.1, len(patients)), [0.5, 0.7, 0.9]), 0, 3)
    return pd.DataFrame(
        {
            "patient_id": [p.patient_id for p in patients],
            "age": [p.age for p in patients],
            "stage": [STAGES[s] for s in stage],
            "os_days": np.minimum(event_time, censor).round(1),
            "os_event": (event_time <= censor).astype(int),
        }
    )
