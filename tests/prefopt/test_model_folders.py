"""Reading a model folder before anything loads: components saved without, whether there is a VAE, which family
saved it; a missing or unreadable index is 'unknown', never an error here (the weights check names it)."""

from dataclasses import dataclass

from prefopt.model_folders import has_vae, other_family_message, saved_without


@dataclass
class Options:
    pretrained: str
    revision: str | None = None

    @property
    def pretrained_path(self) -> str:
        return self.pretrained


def test_a_folder_saved_without_a_vae_is_pixel_space(tmp_path):
    (tmp_path / "model_index.json").write_text('{"_class_name": "HunyuanVideoPipeline", "vae": [null, null], '
                                               '"transformer": ["diffusers", "HunyuanVideoTransformer3DModel"]}')
    assert saved_without(Options(str(tmp_path))) == {"vae": None}
    assert has_vae(Options(str(tmp_path))) is False
    (tmp_path / "model_index.json").write_text('{"vae": ["diffusers", "AutoencoderKL"]}')
    assert has_vae(Options(str(tmp_path))) is True


def test_an_absent_or_unreadable_index_is_unknown_and_a_hub_model_not_downloaded_has_its_family_s_vae(tmp_path):
    assert has_vae(Options(str(tmp_path / "not-here"))) is None and saved_without(Options(str(tmp_path))) == {}
    (tmp_path / "model_index.json").write_text("{not json")
    assert has_vae(Options(str(tmp_path))) is None
    assert has_vae(Options("some-org/some-video-model")) is True


def test_a_folder_of_another_registered_family_is_named(tmp_path):
    (tmp_path / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    message = other_family_message(Options(str(tmp_path)), "sd3", "StableDiffusion3Pipeline", "Stable Diffusion 3")
    assert message.startswith(f"`{tmp_path}` holds a FluxPipeline, the model of backbone `flux`, but backbone `sd3`")
    (tmp_path / "model_index.json").write_text('{"_class_name": "SomeoneElsesPipeline"}')
    assert other_family_message(Options(str(tmp_path)), "sd3", "StableDiffusion3Pipeline", "SD3") is None
