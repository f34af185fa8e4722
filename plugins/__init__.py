"""First-party prefopt plugins: backbones, rewards and pair selectors.

They register through the same hooks as third-party plugins (see ``prefopt.plugins.DEFAULT_PLUGINS``).
"""
