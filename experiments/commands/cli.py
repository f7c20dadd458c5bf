"""One argument style and one error path for the commands that are not Hydra apps (run and pretrain are).

A command names its own positional arguments and ``--options`` with argparse; Hydra overrides
(``key=value``, as ``python -m experiments.commands.run`` takes them) may trail or mix with them and
are composed through ``experiments.config.compose`` into the config a run would get, then validated.
The body runs under ``errors.reported()``: a ``UserError`` (or an override Hydra cannot compose) is
one line ``error: ...`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from omegaconf import DictConfig

from experiments import config
from experiments.errors import UserError, reported

OVERRIDES_HELP = "Hydra overrides (key=value), as for python -m experiments.commands.run"


class Parser(argparse.ArgumentParser):
    """The parser of ``python -m <module>``, described by the first paragraph of ``doc``; with ``overrides``
    (their help) it takes ``key=value`` overrides after the command's own positional arguments, as
    ``args.overrides``."""

    def __init__(self, module: str, doc: str, overrides: str | None = None):
        super().__init__(prog=f"python -m {module}", description=doc.split("\n\n")[0].strip())
        self.overrides_help = overrides


parser = Parser


def main(p: Parser, body: Callable[[argparse.Namespace], object], argv=None) -> int:
    """Parse ``argv`` (options and overrides in any order; a parser with sub-commands in its usual order),
    run ``body`` under ``reported()`` and return its exit code: what it returned if an int, else 0."""
    if getattr(p, "overrides_help", None) is not None:  # last: after the command's own positional arguments
        p.add_argument("overrides", nargs="*", metavar="key=value", help=p.overrides_help)
    with reported():
        args = p.parse_args(argv) if p._subparsers is not None else p.parse_intermixed_args(argv)
        for override in getattr(args, "overrides", None) or []:
            if "=" not in override:
                raise UserError(
                    f"{override!r}: not an option of {p.prog} nor a key=value override; see {p.prog} --help"
                )
        code = body(args)
        return code if isinstance(code, int) else 0


def compose(overrides: list[str], config_name: str = "train", validate: bool = True) -> DictConfig:
    """The config ``overrides`` compose to (configs/``config_name``.yaml), checked as a run checks it."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    config.check_choices(overrides)
    try:
        cfg = config.compose(overrides, config_name)
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(" ".join(f"invalid overrides: {err}".split())) from None
    if validate:
        config.validate(cfg)
    return cfg
