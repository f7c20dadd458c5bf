"""Model: what computes logits from token ids.

Owns the release layouts (``release``: families and file names, no TensorFlow), tokenizers,
checkpoint loading, the blog's classifier head and random init (``classifier``), the layer
rewrites that are cheaper to differentiate (``rewrites``) and stateless keyed dropout
(``dropout``). May import ``experiments.results`` and the core (``config``, ``errors``) only.
"""
