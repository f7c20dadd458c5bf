"""Train: fitting a built model to a task's batches.

Owns the Trainer loop (``loop``), the adversarial methods (``methods/``: one module and one
config each), the learning-rate schedule (``schedule``), the optimizer, precision and
out-of-memory advice (``optim``, also BERT's AdamW), run state and resume (``run_state``), the
TensorBoard monitor (``monitor``), the masked-LM pretraining loop (``pretraining``), the
perturbation of the looked-up token embeddings (``perturb``) and accuracy under PGD in embedding space
(``embedding_attack``). May import ``experiments.data``, ``model``, ``records`` and the core;
never ``machine``, ``report`` or the commands.
"""
