"""The feedback stage: human and AI raters judge model outputs in campaigns, and their labels
become preference data and training jobs.

A Django sub-package of the evaluation app: ``models`` (campaigns, items, assignments,
judgments, AI raters, exports), ``services`` (every write), ``selectors`` (every read, scoped;
the rater sees only their campaigns), ``assignment`` (the fair next-item query), ``tasks``.
Agreement statistics are plain Python in ``evaluation/metrics/agreement.py``.
"""
