"""First-party backbones. Classes import diffusers lazily, so registering them is cheap."""

from prefopt.hookspecs import hookimpl


@hookimpl
def register_backbones(register):
    pass
