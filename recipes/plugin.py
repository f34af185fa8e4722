"""Registers the first-party recipes."""

from prefopt.hookspecs import hookimpl


@hookimpl
def register_recipes(register):
    pass
