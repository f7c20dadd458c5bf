"""Model: what computes logits from token ids.

Owns the release layouts (``release``: families and file names, no TensorFlow), tokenizers,
checkpoint loading, the blog's classifier head and random init (``classifier``), the layer
rewrites that are cheaper to differentiate (``rewrites``), stateless keyed dropout
(``dropout``), the masked-LM model (``mlm``: BERT's head on the masked positions only) and the
model folder in a family's release layout (``export``). May import ``experiments.records`` and the core (``config``, ``errors``) only.
"""
