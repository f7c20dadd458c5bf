"""Report: what is made of the run records; the top of the library, TensorFlow-free.

Owns the comparison table and its CSVs (``summary``), the table and cell formatting
(``formatting``), intervals and paired differences (``stats``), pictures (``plots``), accuracy under
attack, PGD and the text attack (``robustness``), and a preregistered study's tuning rule and
corrected tests (``preregistered``). May import ``experiments.records`` and the core only; never
TensorFlow, tf_keras, bert4keras, or the model, data, train and machine layers (contracts in
pyproject.toml).
"""
