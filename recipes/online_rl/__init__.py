"""The online-RL recipe: GRPO, DiffusionNFT and AWM against named rewards (recipes/online-rl.yaml)."""
