"""prefopt's tests, one folder per code folder: tests/prefopt/test_trainer.py tests prefopt/trainer.py."""

from pathlib import Path

#: The repository's root (recipes, docs and shipped weights are read from it).
ROOT = Path(__file__).resolve().parents[1]
