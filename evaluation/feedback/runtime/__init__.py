"""Plain runtimes of the feedback stage (no Django, no Celery): prompting an AI judge and reading
its answer (judge.py), generating the responses of several model versions (generate.py)."""
