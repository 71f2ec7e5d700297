"""Drift statistics as plain Python: no Django, no Celery (numpy at import; scipy, scikit-learn
and torch inside the functions that need them).

- :mod:`serving.monitoring.runtime.config`: :class:`DriftConfig`, the thresholds and its one
  validator (the API, the form and the drift job all call it).
- :mod:`serving.monitoring.runtime.drift`: the statistics and :func:`compute_drift`.
- :mod:`serving.monitoring.runtime.embeddings`: :func:`embed_texts` with a local encoder.
"""
