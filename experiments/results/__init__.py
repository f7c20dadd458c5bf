"""Results: run records, the only contract between training and tables, and what is made of them.

Owns the record format, settings ids and atomic writes (``records``), the pretrain records of
``make pretrain``'s model folders and how a run names its pretraining (``pretrain_records``), the
comparison table (``table``), its statistics (``stats``), pictures (``plots``), accuracy under
attack (``robustness``) and a preregistered study's tuning rule and corrected tests (``study``). Never imports TensorFlow, tf_keras or bert4keras (a contract in
pyproject.toml), so ``make table`` runs without them;
imports only the core (``config``, ``errors``) besides its own modules.
"""
