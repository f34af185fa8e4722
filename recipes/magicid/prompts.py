"""Train and held-out evaluation prompts (the paper had an LLM write 20 action prompts; we ship 24)."""

from __future__ import annotations

from pathlib import Path

from prefopt.errors import PrefoptError
from prefopt.files import read_lines

SHIPPED = Path(__file__).with_name("action_prompts.txt")


def read_prompt_file(path: str | Path) -> list[str]:
    """A prompt per line; lines starting with `#` are comments."""
    return [line for line in read_lines(path, "prompt file") if not line.startswith("#")]


def write_prompts(model: str, request: str, count: int, max_new_tokens: int = 400) -> list[str]:
    """Ask a transformers text model for prompts, one per line (numbering and bullets stripped)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefopt.errors import MissingWeightsError
    from prefopt.hub import missing_weights_message

    message = missing_weights_message(model, "prompt-writer", "config.json", "`prompts.writer_model`")
    if message:
        raise MissingWeightsError(message)
    from prefopt.hub import pretrained_kwargs

    tokenizer = AutoTokenizer.from_pretrained(model, **pretrained_kwargs())
    llm = AutoModelForCausalLM.from_pretrained(model, **pretrained_kwargs()).eval()
    text = request.format(count=count)
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        output = llm.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    lines = [line.strip().lstrip("-*•0123456789.) ").strip() for line in reply.splitlines()]
    return [line for line in lines if len(line.split()) >= 3][:count]


def resolve_prompts(config) -> tuple[list[str], list[str]]:
    """(train, eval) prompts: configured ones first, then the writer model's, then the shipped list;
    evaluation never reuses a train prompt."""
    shipped = read_prompt_file(SHIPPED)
    train = list(config.train) + (read_prompt_file(config.file) if config.file else [])
    if len(train) < config.count and config.writer_model:
        train += write_prompts(config.writer_model, config.writer_request, config.count - len(train))
    train += [p for p in shipped if p not in train][: max(0, config.count - len(train))]
    train = train[: config.count]
    evaluation = list(config.eval) or [p for p in shipped if p not in train][: config.eval_count]
    if not train or not evaluation:
        raise PrefoptError("no prompts: give `prompts.train` (or `prompts.file`) and `prompts.eval`.")
    return train, evaluation
