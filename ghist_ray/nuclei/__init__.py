"""Nuclei on real H&E: annotation readers (:mod:`.annotations`), F1/AJI/PQ
(:mod:`.scores`), a classical baseline (:mod:`.classical`), a model's nuclei over
whole images (:mod:`.predict`) and ``ghist-ray evaluate-nuclei`` (:mod:`.evaluate`)."""
