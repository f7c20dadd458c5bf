"""Commands: one module per command the Makefile calls, ``python -m experiments.commands.<name>``.

Owns the command lines: each parses its arguments, calls the library below it and turns a
``UserError`` into one line (``errors.reported``). ``run`` and ``pretrain`` are the two spines: read
them top to bottom. The top layer: may import every package below it; nothing in the library
imports a command, and commands may import each other (``submit`` runs ``predict``).
"""
