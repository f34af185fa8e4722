"""Registers the first-party recipes."""

from prefopt.hookspecs import hookimpl


@hookimpl
def register_recipes(register):
    from prefopt_recipes.dpo.recipe import DPORecipe
    from prefopt_recipes.magicid.recipe import MagicIDRecipe
    from prefopt_recipes.online_rl.recipe import OnlineRLRecipe
    from prefopt_recipes.reward_dpo.recipe import RewardDPORecipe

    register(MagicIDRecipe)
    register(DPORecipe)
    register(RewardDPORecipe)
    register(OnlineRLRecipe)
