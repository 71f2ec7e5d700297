"""The data runtime: plain Python, no Django. Heavy libraries (pyarrow, datasets, tokenizers,
transformers) are imported inside the functions that need them, so importing this package,
or ``steps`` for the recipe catalog, stays cheap.

- ``readers``: ``sniff_upload``, ``convert_to_parquet`` (-> ``IngestResult``),
  ``infer_column_roles``, ``validate_column_roles``;
- ``steps``: the step registry ``STEPS``, ``DEFAULT_RECIPE``, ``validate_recipe``,
  ``step_catalog``, ``StepFailed``; ``pii``: ``find_pii``, ``redact``;
- ``recipe``: ``run_recipe`` (-> ``RecipeReport``);
- ``profile``: ``profile_table``;
- ``splits``: ``split_table`` (-> ``{name: SplitResult}``);
- ``tokenizer_training``: ``train_tokenizer`` (-> ``TokenizerResult``), ``token_stats``.
"""
