"""The inference process: an OpenAI-compatible ASGI app with a batching scheduler.

Plain Python (no Django, no Celery): ``serving/runner.py`` is the Django side that hands it a
:class:`~serving.engine.types.Snapshot` of what to serve and takes its request records.

- :mod:`serving.engine.types`: the contract with the runner (snapshot in, records out);
- :mod:`serving.engine.config`: :class:`EngineSettings`, the one validator of the knobs;
- :mod:`serving.engine.backends`: loaded model versions (generate / embed / classify), batching;
- :mod:`serving.engine.limits`, :mod:`~serving.engine.cache`, :mod:`~serving.engine.metrics`;
- :mod:`serving.engine.protocol`: the OpenAI request and response shapes, and their errors;
- :mod:`serving.engine.state`: the snapshot in force, version swaps, canary routing;
- :mod:`serving.engine.upstream`: forwarding to an external OpenAI-compatible engine;
- :mod:`serving.engine.app`: the Starlette app.
"""
