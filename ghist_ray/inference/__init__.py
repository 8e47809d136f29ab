"""The pieces of cohort inference (``ghist_ray.infer`` wires them on Ray Data):
``plan`` (slides → tile coordinates), ``actors`` (read, model), ``postprocess``
(owned cells in slide µm), ``commit`` (per-slide outputs and done marker),
``state`` (output layout, markers, failures), ``progress``, and ``naive`` (the
same without Ray, the reference for tests and benchmarks)."""
