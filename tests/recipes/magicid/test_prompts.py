"""Train and evaluation prompts: configured, written by a (tiny) text model, or shipped."""

from dataclasses import replace

import pytest

from prefopt.errors import MissingWeightsError
from prefopt_recipes.magicid.config import PromptsConfig
from prefopt_recipes.magicid.prompts import SHIPPED, read_prompt_file, resolve_prompts, write_prompts


def test_shipped_and_configured_prompts_never_leak_into_evaluation(tmp_path):
    train, evaluation = resolve_prompts(PromptsConfig(count=5, eval_count=3))
    assert len(train) == 5 and len(evaluation) == 3 and not set(train) & set(evaluation)
    file = tmp_path / "mine.txt"
    file.write_text("# my prompts\na person juggling three oranges\n")
    train, _ = resolve_prompts(PromptsConfig(train=["a person waves"], file=str(file), count=4))
    assert train[:2] == ["a person waves", "a person juggling three oranges"] and len(train) == 4
    assert set(train[2:]) <= set(read_prompt_file(SHIPPED))


@pytest.fixture(scope="module")
def tiny_writer(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from prefopt.tiny_models import llama_tokenizer

    torch.manual_seed(0)
    tokenizer = llama_tokenizer()
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    folder = tmp_path_factory.mktemp("writer") / "tiny-llama"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_a_writer_model_is_loaded_and_asked_and_gaps_are_filled(tiny_writer):
    written = write_prompts(tiny_writer, "Write {count} prompts.", 3, max_new_tokens=20)
    assert isinstance(written, list) and len(written) <= 3  # a random model writes little that is usable
    train, _ = resolve_prompts(replace(PromptsConfig(count=6), writer_model=tiny_writer))
    shipped = read_prompt_file(SHIPPED)
    from_model = [p for p in train if p not in shipped]
    assert len(train) == 6 and train[: len(from_model)] == from_model  # the model's prompts come first
    assert train[len(from_model):] == [p for p in shipped if p not in from_model][: 6 - len(from_model)]


def test_missing_writer_model_is_a_clear_error(tmp_path):
    with pytest.raises(MissingWeightsError, match="prompt-writer weights"):
        write_prompts(str(tmp_path / "none"), "x", 2)
