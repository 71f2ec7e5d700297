"""The data runtime: plain Python, no Django. Heavy libraries (pyarrow, datasets, tokenizers,
transformers) are imported inside the functions that need them, so importing this package,
or ``steps`` for the recipe catalog, stays cheap.

- ``readers`` (a package, one module per concern): ``sniff_upload``, ``convert_to_parquet``
  (-> ``IngestResult`` with its ``warnings``), ``infer_column_roles``, ``validate_column_roles``,
  ``write_rows``;
- ``options``: the one validator of each data job's inputs (``IngestOptions``,
  ``ProfileParams``, ``CleanParams``, ``SplitParams``, ``TokenizerParams``);
- ``steps``: the step registry ``STEPS``, ``DEFAULT_RECIPE``, ``validate_recipe``,
  ``step_catalog``, ``StepFailed``; ``pii``: ``find_pii``, ``redact``;
- ``recipe``: ``run_recipe`` (-> ``RecipeReport``);
- ``profile``: ``profile_table``;
- ``splits``: ``split_table`` (-> ``{name: SplitResult}``);
- ``tokenizer_training``: ``train_tokenizer`` (-> ``TokenizerResult``), ``token_stats``.
"""
