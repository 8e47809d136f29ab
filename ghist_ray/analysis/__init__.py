"""Downstream analyses of predicted cells, cohort-wide and slide by slide:
spot-scale mode (``spots``), subpopulation discovery with scanpy (``clusters``),
spatial statistics with squidpy (``spatial``), pictures (``plots``) and the
``ghist-ray spots|cluster|spatial`` stages (``run``).

Example::

    from ghist_ray.analysis import run_cluster
    from ghist_ray.config import ClusterConfig

    report = run_cluster(ClusterConfig(), "runs/cohort", "runs/cluster", r"^(TCGA-..-....)")
    report.tables["patients"]  # cluster.<k> proportions per patient
"""

from ghist_ray.analysis.run import AnalysisReport, run_cluster, run_spatial, run_spots

__all__ = ["AnalysisReport", "run_cluster", "run_spatial", "run_spots"]
