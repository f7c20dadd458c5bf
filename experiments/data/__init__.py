"""Data: from a task config to examples and batches, and getting the files there.

Owns the CLUE loaders (``clue``: one loader per input kind), encoding, batching and padding
(``batching``), the token cache (``cache``), downloads with their verification
(``fetch``), and for ``make pretrain`` the masked-LM corpus (``corpus``) and BERT's masking
(``masking``). Imports no TensorFlow. May import ``experiments.model`` (a tokenizer, a
release's file names), ``experiments.records`` (atomic writes) and the core (``config``,
``errors``); never ``train``, ``machine``, ``report`` or the commands.
"""
