"""Registers the miniature world's reward models (through the same hook as any third-party reward)."""

from prefopt.hookspecs import hookimpl


@hookimpl
def register_rewards(register):
    from prefopt_recipes.miniature.rewards import MiniatureActionReward, MiniatureIdentityReward

    register(MiniatureIdentityReward)
    register(MiniatureActionReward)
