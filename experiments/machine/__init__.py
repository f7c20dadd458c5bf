"""Machine: what this computer (or cluster) is and what a run will cost on it.

Owns the devices and the device guard (``devices``), time estimates (``estimate``), the
software and hardware description every record carries and seeding (``environment``), Slurm
(``slurm``). May import ``experiments.train``, ``data``, ``model``, ``records`` and the core;
never ``report`` or the commands.
"""
