"""Metric definitions (evaluate.Metric subclasses) and their catalog.

Importing this package must stay cheap: the catalog is imported by the web process. Modules that
need numpy, scikit-learn, rouge-score or sacrebleu import them inside functions or live in
submodules that only workers import.
"""
