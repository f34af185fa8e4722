"""Train and held-out evaluation prompts (the paper had an LLM write 20 action prompts; we ship 24)."""

from __future__ import annotations

from pathlib import Path

from prefopt.errors import PrefoptError

SHIPPED = Path(__file__).with_name("action_prompts.txt")


def read_prompt_file(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise PrefoptError(f"prompt file `{path}` does not exist.")
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def resolve_prompts(config) -> tuple[list[str], list[str]]:
    """(train, eval) prompts: configured ones first, then the shipped list; evaluation never reuses train."""
    shipped = read_prompt_file(SHIPPED)
    train = list(config.train) + (read_prompt_file(config.file) if config.file else [])
    if not train:
        train = shipped[: config.count]
    train = train[: config.count]
    evaluation = list(config.eval) or [p for p in shipped if p not in train][: config.eval_count]
    if not train or not evaluation:
        raise PrefoptError("no prompts: give `prompts.train` (or `prompts.file`) and `prompts.eval`.")
    return train, evaluation
