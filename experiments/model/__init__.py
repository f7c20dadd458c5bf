"""Model: what computes logits from token ids.

Owns the release layouts (``release``: families and file names, no TensorFlow), the tokenizer
loader (``tokenizer``), the encoders with checkpoint loading and random init (``encoder``), the
blog's classifier head (``head``), the layer rewrites that are cheaper to differentiate
(``rewrites``), stateless keyed dropout (``dropout``), the masked-LM model (``mlm``: BERT's head on
the masked positions only) and the model folder in a family's release layout (``export``). May
import ``experiments.records`` and the core (``config``, ``errors``) only.
"""
