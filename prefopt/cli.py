"""The ``prefopt`` command line: run, validate, plugins, select.

A user error (:class:`PrefoptError`) prints one message and exits 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from prefopt.errors import PrefoptError

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefopt", description="Preference optimization for video and image diffusion models."
    )
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="Run a recipe from a YAML config.")
    _add_config_arguments(run)
    validate = sub.add_parser("validate", help="Check a config and its plugin names without loading models.")
    _add_config_arguments(validate)
    select = sub.add_parser("select", help="Select preference pairs from an existing run's repository.")
    _add_config_arguments(select)
    select.add_argument("--stage", default="all", help="Which selection stage to run (default: all).")

    plugins = sub.add_parser("plugins", help="List every registered component and its package.")
    plugins.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    return parser


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="Path to a recipe YAML, e.g. recipes/quickstart.yaml.")
    parser.add_argument("overrides", nargs="*", help="Overrides like `train.learning_rate=1e-5`.")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except PrefoptError as e:
        if args.debug:
            raise
        print(f"prefopt: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("prefopt: interrupted; finished work is kept and a re-run resumes.", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "plugins":
        return _plugins(as_json=args.json)
    from prefopt.runner import check_requirements, load_recipe

    recipe = load_recipe(args.config, args.overrides)
    if args.command == "validate":
        print(f"{args.config}: valid (recipe `{recipe.name}`).")
        return 0
    if args.command == "select":
        if not hasattr(recipe, "select_pairs"):
            raise PrefoptError(f"recipe `{recipe.name}` has no pair-selection stage to run on its own.")
        recipe.select_pairs(stage=args.stage)
        return 0
    check_requirements(recipe)
    from prefopt.progress import quiet_third_party_progress

    quiet_third_party_progress()
    run_dir = recipe.run()
    print(f"prefopt: run finished: {run_dir}")
    return 0


def _plugins(as_json: bool) -> int:
    from prefopt.registry import KIND_LABELS, KINDS, get_registry

    registry = get_registry()
    rows = [
        {
            "kind": KIND_LABELS[kind],
            "name": entry.name,
            "package": entry.package,
            "plugin": entry.plugin,
            "class": f"{entry.cls.__module__}.{entry.cls.__qualname__}",
            "summary": (entry.cls.__doc__ or "").strip().splitlines()[0] if entry.cls.__doc__ else "",
        }
        for kind in KINDS
        for entry in registry.all(kind)
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="prefopt plugins")
    for column in ("kind", "name", "package", "summary"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["kind"], row["name"], row["package"], row["summary"])
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
