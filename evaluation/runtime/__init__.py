"""The evaluation runtime: plain Python that a ``gpu``-queue worker calls; no Django.

- :mod:`evaluation.runtime.evaluate_model`: ``EvalConfig`` and ``evaluate_model`` (metrics with
  confidence intervals and per-example outputs for a model directory on a Parquet split).
- :mod:`evaluation.runtime.bias`: bias and fairness probes (CrowS-Pairs, BOLD, WinoBias) and
  per-slice metrics, each returning a JSON-able report.
- :mod:`evaluation.runtime.models`: loading a local model directory and telling its kind.

Importing this package is cheap; torch and transformers are imported by the submodules.
"""
