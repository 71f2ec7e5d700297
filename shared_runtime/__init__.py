"""What the ML runtimes share: plain Python below ``training/runtime``, ``evaluation/runtime``
and (later) ``serving/engine``; no Django, no Celery, no torch at import.

- :mod:`shared_runtime.inputs`: the text a model reads for a row (``build_input``), so a model
  is evaluated (and served) on the inputs it was trained on.
- :mod:`shared_runtime.vocab`: the vocabulary size of a model built for a tokenizer
  (``model_vocab_size``), which the tokenizer's record stores and the estimate reads.
"""
