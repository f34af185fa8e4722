"""The MagicID recipe (Li et al., 2025): see docs/magicid.md for how the paper maps onto the stages."""
