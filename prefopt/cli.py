"""The ``prefopt`` command line: run, validate, select, clean, sample, push, recipes, plugins, options.

A user error (:class:`PrefoptError`, or the disk refusing a write: full, read-only, no permission) prints
one message and exits 2; ``--debug`` (before or after the command) shows the traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from prefopt.errors import PrefoptError
from prefopt.interfaces import HasResultLoras

EXIT_USER_ERROR = 2


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prefopt")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefopt", description="Preference optimization for video and image diffusion models."
    )
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")
    parser.add_argument("--version", action="version", version=f"prefopt {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    debug = argparse.ArgumentParser(add_help=False)  # `--debug` is also accepted after the command
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="Show full tracebacks on errors.")

    run = sub.add_parser("run", help="Run a recipe from a YAML config.", parents=[debug], epilog=RUN_EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_arguments(run)
    validate = sub.add_parser("validate", help="Check a config, its plugin names and its inputs without loading models.",
                              parents=[debug])
    _add_config_arguments(validate)
    select = sub.add_parser("select", help="Select preference pairs from an existing run's repository.",
                            parents=[debug])
    _add_config_arguments(select)
    select.add_argument("--stage", default="all", help="Which selection stage to run (default: all).")
    clean = sub.add_parser("clean", help="Remove stage folders of earlier configurations from a run directory.",
                           parents=[debug])
    _add_config_arguments(clean)
    clean.add_argument("--dry-run", action="store_true", help="List what would be removed; remove nothing.")

    _add_sample_parser(sub, debug)
    push = sub.add_parser("push", parents=[debug],
                          help="Upload a finished run's final LoRAs with their model card to the Hugging Face Hub.")
    push.add_argument("run", type=Path, help="A finished run directory.")
    push.add_argument("repo_id", help="The Hub repository, `USER/NAME` (created when missing).")
    push.add_argument("--private", action="store_true", help="Create the repository private.")
    push.add_argument("--to-folder", type=Path, help="Copy the files a push would upload to DIR/REPO_ID instead.")
    recipes = sub.add_parser("recipes", help="List the recipes that ship with prefopt, or copy one to edit.",
                             parents=[debug])
    recipes.add_argument("--copy", nargs="+", metavar=("NAME", "DEST"),
                         help="Copy shipped recipe NAME to DEST (default `./NAME.yaml`); an existing file is kept.")
    plugins = sub.add_parser("plugins", help="List every registered component and its package.", parents=[debug])
    plugins.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    options = sub.add_parser("options", help="Show a component's (or the trainer's) options with their help.",
                             parents=[debug])
    options.add_argument("name", nargs="?", help="A component name (see `prefopt plugins`), or `trainer`.")
    options.add_argument("--kind", help="reward, pair selector, backbone or recipe, when several share the name.")
    options.add_argument("--markdown", action="store_true",
                         help="Markdown; without a name, the whole reference (docs/options.md).")
    return parser


RUN_EXAMPLES = """examples (a shipped recipe by name, or a YAML file; `key.sub=value` overrides any option):
  prefopt run miniature                                   # MagicID on the miniature world, CPU, minutes
  prefopt run recipes/magicid.yaml references.photos=[me-0.png,me-1.png] backbone.options.pretrained=DIR
  prefopt run dpo data.path=pairs.parquet backbone.name=sdxl backbone.options.pretrained=DIR trainer.max_steps=2000
  prefopt run reward-dpo prompts_file=prompts.txt rounds=3 backbone.name=sd3 backbone.options.pretrained=DIR
  prefopt run online-rl trainer.algorithm=nft trainer.epochs=200
  prefopt run dpo ... run.build_tiny_models=true           # any backbone on tiny random weights, to try the mechanics

`prefopt recipes` lists the shipped recipes; `prefopt options NAME` a component's options (`trainer` too).
"""

SAMPLE_EXAMPLES = """examples:
  prefopt sample runs/miniature --prompt "a person waves" --seeds 0 1 2
  prefopt sample runs/my-dpo/train-1a2b3c4d5e6f/lora --backbone sdxl --option pretrained=<hub id or folder> \\
      --prompts-file prompts.txt --steps 30 --out samples/sdxl-dpo
  prefopt sample base --backbone sdxl --option pretrained=<...> --prompt "a cat"   # the base model alone
"""


def _add_sample_parser(sub, debug: argparse.ArgumentParser) -> None:
    sample = sub.add_parser(
        "sample", parents=[debug], epilog=SAMPLE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="Generate images or videos with a run's final LoRAs, a LoRA file, or the base model.")
    sample.add_argument("source", help="A run directory (its final model), a LoRA file or folder, or `base`.")
    sample.add_argument("--prompt", action="append", default=[], help="A prompt (repeat for several).")
    sample.add_argument("--prompts-file", type=Path, help="A text file with one prompt per line.")
    sample.add_argument("--seeds", type=int, nargs="+", default=[0], help="Sampling seeds, each prompt (default 0).")
    sample.add_argument("--backbone", help="The backbone a LoRA file or `base` belongs to (a run knows its own).")
    sample.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="A backbone option, e.g. `pretrained=<hub id or folder>`, `device=cuda:1` (repeat).")
    for flag, kind, what in (("--steps", int, "num_inference_steps"), ("--guidance", float, "guidance_scale"),
                             ("--frames", int, "num_frames"), ("--height", int, "height"), ("--width", int, "width")):
        sample.add_argument(flag, type=kind, dest=what, help=f"{what}; default: the run's own, else the pipeline's.")
    sample.add_argument("--fps", type=int, default=8, help="Frame rate of written videos.")
    sample.add_argument("--batch-size", type=int, default=1, help="Samples per pipeline call.")
    sample.add_argument("--out", type=Path, help="Output folder; default `<run>/samples`, else `samples`.")
    sample.add_argument("--allow-downloads", action="store_true", help="Let a hub id be downloaded.")


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="Path to a recipe YAML, e.g. recipes/quickstart.yaml.")
    parser.add_argument("overrides", nargs="*", help="Overrides like `dpo_stage1.learning_rate=1e-5`.")


# The disk refusing a write is the user's to fix, not a bug: one sentence, exit 2.
_DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                errno.ENOLCK: "the file system cannot lock files (e.g. some NFS mounts)"}


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The arguments, with overrides taken wherever they stand (`select CONFIG --stage stage1 key=value` too)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(a.startswith("-") or "=" not in a for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    from prefopt.progress import catching_interrupts, configure_logging

    configure_logging(debug=args.debug)
    try:
        with catching_interrupts():
            return _dispatch(args)
    except PrefoptError as e:
        if args.debug:
            raise
        print(f"prefopt: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # `prefopt options trainer | head`: the reader left (an OSError: caught before those)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush writes nowhere
        return 0
    except OSError as e:
        if args.debug or e.errno not in _DISK_ERRORS:
            raise
        where = f" (`{e.filename}`)" if e.filename else ""
        print(f"prefopt: error: {_DISK_ERRORS[e.errno]}{where}; fix that and run the command again: finished "
              "work is kept.", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("prefopt: interrupted; finished work is kept and a re-run resumes.", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "plugins":
        return _plugins(as_json=args.json)
    if args.command == "options":
        return _options(args.name, args.kind, args.markdown)
    if args.command == "sample":
        return _sample(args)
    if args.command == "recipes":
        return _recipes(args.copy)
    if args.command == "push":
        from prefopt.publish import push

        where = push(args.run, args.repo_id, private=args.private, to_folder=args.to_folder)
        print(f"prefopt: published {args.run} to {where}")
        return 0
    from prefopt.runner import check_requirements, load_recipe

    recipe = load_recipe(args.config, args.overrides)
    from prefopt.hub import downloads

    if args.command == "validate":
        _validate_inputs(recipe, downloads)
        print(f"{args.config}: valid (recipe `{recipe.name}`).")
        return 0

    # What the config's `run.allow_downloads` allows holds for everything the command does (checks included).
    with downloads(getattr(getattr(recipe.config, "run", None), "allow_downloads", False)):
        return _work(args, recipe, check_requirements)


def _validate_inputs(recipe, downloads) -> None:
    """The inputs the config names (data, photos, prompts files) are there; weights are the run's to check."""
    missing_inputs = getattr(recipe, "missing_inputs", None)
    if missing_inputs is None:
        return
    with downloads(getattr(getattr(recipe.config, "run", None), "allow_downloads", False)):
        config_problems = getattr(recipe, "config_problems", list)
        missing = [*config_problems(), *missing_inputs()]
    if missing:
        listing = "".join(f"\n  ({i}) {m}" for i, m in enumerate(missing, 1)) if len(missing) > 1 else f" {missing[0]}"
        raise PrefoptError(f"recipe `{recipe.name}` cannot start:{listing}")


def _work(args: argparse.Namespace, recipe, check_requirements) -> int:
    if args.command == "clean":
        return _clean(recipe, dry_run=args.dry_run)
    if args.command == "select":
        from prefopt.interfaces import ReselectsPairs

        if not isinstance(recipe, ReselectsPairs):
            raise PrefoptError(f"recipe `{recipe.name}` has no pair-selection stage to run on its own.")
        recipe.select_pairs(stage=args.stage)
        return 0
    from prefopt.progress import quiet_third_party_progress

    quiet_third_party_progress()  # before tiny models are saved
    recipe.prepare()
    check_requirements(recipe)
    run_dir = recipe.run()
    print(f"prefopt: run finished: {run_dir}")
    from prefopt.distributed import is_main

    if isinstance(recipe, HasResultLoras) and is_main():  # a staged recipe says which LoRAs make its final model
        from prefopt.layout import RunLayout
        from prefopt.publish import publish_folder

        for lora in recipe.result_loras(RunLayout(run_dir)):
            print(f"prefopt: final model's LoRA: {lora}")
        print(f"prefopt: model card and files to publish: {publish_folder(run_dir)}/ (`prefopt push {run_dir} "
              "USER/NAME` uploads them)")
        print(f"prefopt: sample it with `prefopt sample {run_dir} --prompt \"...\"`")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from prefopt.hub import downloads
    from prefopt.sampling import SETTINGS, SampleRequest, sample

    prompts = list(args.prompt)
    if args.prompts_file is not None:
        try:
            prompts += [line.strip() for line in args.prompts_file.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise PrefoptError(f"prompts file `{args.prompts_file}` cannot be read ({e}).") from e
    if not prompts:
        raise PrefoptError("no prompt: add `--prompt TEXT` or `--prompts-file FILE`.")
    flags = {"num_inference_steps": "steps", "num_frames": "frames", "height": "height", "width": "width",
             "fps": "fps", "batch_size": "batch-size"}
    for name, flag in flags.items():
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise PrefoptError(f"`--{flag}` must be at least 1, got {getattr(args, name)}.")
    settings = {name: getattr(args, name) for name in SETTINGS if getattr(args, name) is not None}
    request = SampleRequest(source=args.source, prompts=prompts, seeds=args.seeds, out=args.out,
                            backbone=args.backbone, options=args.option, settings=settings, fps=args.fps,
                            batch_size=args.batch_size)
    with downloads(args.allow_downloads):
        paths = sample(request)
    print(f"prefopt: {len(paths)} samples in {paths[0].parent}")
    return 0


def _recipes(copy: list[str] | None) -> int:
    import shutil

    from prefopt.runner import shipped_recipes

    shipped = shipped_recipes()
    if copy:
        if len(copy) > 2:
            raise PrefoptError("`--copy` takes a recipe name and, optionally, where to copy it.")
        name, dest = copy[0], Path(copy[1] if len(copy) > 1 else f"{copy[0]}.yaml")
        if name not in shipped:
            raise PrefoptError(f"no shipped recipe `{name}` (shipped: {', '.join(shipped)}).")
        dest = dest / f"{name}.yaml" if dest.is_dir() else dest
        if dest.exists():
            raise PrefoptError(f"`{dest}` exists; it is kept: choose another destination.")
        shutil.copyfile(shipped[name], dest)
        print(f"prefopt: copied `{name}` to {dest}; run it with `prefopt run {dest}`")
        return 0
    for name, path in shipped.items():
        first = next((line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")), "")
        print(f"{name:<22} {first}")
    print("\nRun one by name (`prefopt run miniature`), or copy it to edit (`prefopt recipes --copy miniature`).")
    return 0


def _clean(recipe, dry_run: bool) -> int:
    removed = recipe.clean(dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for folder in removed:
        print(f"{verb} {folder}")
    print(f"prefopt: {verb} {len(removed)} superseded stage folder(s).")
    return 0


def _options(name: str | None, kind: str | None, markdown: bool) -> int:
    from prefopt.options import markdown_table, option_sources, reference_markdown

    if name is None:
        if not markdown:
            raise PrefoptError("name a component (`prefopt options sdxl`, `prefopt options trainer`), or pass "
                               "--markdown for the whole reference.")
        print(reference_markdown(), end="")
        return 0
    sources = option_sources(name, kind)
    if len(sources) > 1:
        labels = ", ".join(label for label, _, _ in sources)
        raise PrefoptError(f"`{name}` names several components ({labels}); add --kind.")
    label, _, config_class = sources[0]
    if markdown or not sys.stdout.isatty():  # piped: one unwrapped line per option, not a table cut to 80 columns
        print(markdown_table(config_class))
        return 0
    from rich.console import Console
    from rich.table import Table

    from prefopt.config import help_text

    table = Table(title=f"options of {label} `{name}`", show_lines=False)
    for column in ("option", "type", "default", "help"):
        table.add_column(column, overflow="fold")
    for row in help_text(config_class):
        table.add_row(*row)
    Console().print(table)
    return 0


def _plugins(as_json: bool) -> int:
    from prefopt.plugins import get_registry
    from prefopt.registry import KIND_LABELS, KINDS

    registry = get_registry()
    rows = [
        {
            "kind": KIND_LABELS[kind],
            "name": entry.name,
            "package": entry.package,
            "plugin": entry.plugin,
            "class": f"{entry.cls.__module__}.{entry.cls.__qualname__}",
            "abilities": entry.abilities,
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
