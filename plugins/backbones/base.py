"""Moved to :mod:`prefopt.diffusers_backbone` (import the classes from ``prefopt`` itself); this name stays for
plugins written against prefopt 0.1 and warns."""

import warnings

from prefopt.diffusers_backbone import *
from prefopt.diffusers_backbone import DDPMBackbone, DiffusersBackbone, FlowMatchingBackbone  # noqa: F401

warnings.warn("`prefopt_plugins.backbones.base` moved: import DiffusersBackbone, FlowMatchingBackbone, DDPMBackbone and "
              "their configs from `prefopt`.", DeprecationWarning, stacklevel=2)
