"""A miniature MagicID world: procedural avatars whose motion follows a prompt, small enough for a CPU.

``world`` draws it; ``model`` builds the pixel-space video model that ``pretrain`` trains on it; ``nets`` holds the
identity and action networks that ``train_rewards`` trains; ``rewards`` are the reward plugins that use them,
registered here through the same hook as any third-party reward. Their networks load only when a config names
them. ``weights/`` and ``references/`` ship what was trained here (docs/miniature.md says how).
"""

from prefopt.hookspecs import hookimpl


@hookimpl
def register_rewards(register):
    from prefopt_plugins.miniature.rewards import MiniatureActionReward, MiniatureIdentityReward

    register(MiniatureIdentityReward)
    register(MiniatureActionReward)
