"""Commands: one module per command the Makefile calls, ``python -m experiments.commands.<name>``.

Owns the command lines. ``run`` and ``pretrain`` are Hydra apps and the two spines: read them top to
bottom. Every other command parses its arguments through ``cli`` (its own arguments and options, then
``key=value`` overrides composed as a run composes them) and runs under ``errors.reported``: a
``UserError`` is one line. The top layer: may import every package below it; nothing in the library
imports a command, and commands may import each other (``submit`` runs ``predict``, ``doctor`` times
steps as ``bench`` does, ``evidence`` writes as ``study``).
"""
