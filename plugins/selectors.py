"""First-party pair selectors."""

from prefopt.hookspecs import hookimpl


@hookimpl
def register_pair_selectors(register):
    pass
