"""First-party backbones. Classes import diffusers lazily, so registering them is cheap."""

from prefopt.hookspecs import hookimpl


@hookimpl
def register_backbones(register):
    from prefopt_plugins.backbones.cogvideox import CogVideoXBackbone
    from prefopt_plugins.backbones.flux import FluxBackbone
    from prefopt_plugins.backbones.hunyuan_video import HunyuanVideoBackbone
    from prefopt_plugins.backbones.ltx_video import LTXVideoBackbone
    from prefopt_plugins.backbones.sd3 import SD3Backbone
    from prefopt_plugins.backbones.sdxl import SDXLBackbone
    from prefopt_plugins.backbones.stable_diffusion import StableDiffusionBackbone
    from prefopt_plugins.backbones.wan import WanBackbone

    for backbone in (HunyuanVideoBackbone, WanBackbone, LTXVideoBackbone, CogVideoXBackbone, StableDiffusionBackbone,
                     SDXLBackbone, SD3Backbone, FluxBackbone):
        register(backbone)
