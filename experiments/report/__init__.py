"""Report: what is made of the run records, the top of the library and TensorFlow-free.

The comparison table and its CSVs (``summary``), intervals and paired differences (``stats``),
pictures (``plots``), accuracy under attack (``robustness``), and a preregistered study's tuning
rule and corrected tests (``preregistered``). Reads records through ``experiments.records`` only;
never imports TensorFlow, tf_keras, bert4keras, or the model, data, train and machine layers.
"""
