"""First-party backbones. Classes import diffusers lazily, so registering them is cheap."""

from prefopt.hookspecs import hookimpl


@hookimpl
def register_backbones(register):
    from prefopt_plugins.backbones.hunyuan_video import HunyuanVideoBackbone
    from prefopt_plugins.backbones.stable_diffusion import StableDiffusionBackbone
    from prefopt_plugins.backbones.wan import WanBackbone

    register(HunyuanVideoBackbone)
    register(WanBackbone)
    register(StableDiffusionBackbone)
