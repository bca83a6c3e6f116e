"""`hf-distill` command line: push an already-distilled output folder to the Hub, write its model card, or cache a
teacher's outputs over a dataset.

    hf-distill push OUTPUT_DIR --repo-id ORG/NAME [--private] [--revision BRANCH] [--commit-message MSG] [--token T]
    hf-distill card OUTPUT_DIR [--repo-id ORG/NAME] [--force]
    hf-distill cache-teacher TEACHER DATASET OUTPUT_DIR [--top_k K] [--dtype float16] [--batch_size 32]
    python -m hf_distill.cli ...

`push` uploads the student only (never teacher files, checkpoints, optimizer states or `training_args.bin` unless
asked) with the folder's `README.md`, or a card built from its `report.json` when it has none; it never writes to
the folder. Review the card first with `card`, which writes `README.md` into the folder. The Hub endpoint is
`HF_ENDPOINT` (default https://huggingface.co) and the token defaults to the logged-in one.

`cache-teacher` runs the teacher once over a model-ready dataset (see `hf_distill.cache_teacher_outputs`; under
`accelerate launch` each process caches a shard), saves the dataset with the teacher's outputs to OUTPUT_DIR and
prints the cache's size per example and per token.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_HUB_ERROR = 1
EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-distill", description="Publish distilled students to the Hugging Face Hub."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    push = commands.add_parser("push", help="Push a distilled output folder (the student and its card) to the Hub.")
    push.add_argument("output_dir", help="Folder written by the distillation run (student weights, report.json).")
    push.add_argument("--repo-id", required=True, help="Target model repository, ORG/NAME.")
    push.add_argument("--private", action="store_true", help="Create the repository as private if it is new.")
    push.add_argument("--revision", default=None, help="Branch to push to (created if missing); default main.")
    push.add_argument("--commit-message", default="Upload distilled student", help="Commit summary.")
    push.add_argument("--token", default=None, help="Hub token with write access; default: the logged-in token.")
    push.add_argument("--refresh-card", action="store_true", help="Rebuild the card even if README.md exists.")
    push.add_argument("--include-training-args", action="store_true", help="Also push training_args.bin.")
    push.add_argument("--include-checkpoints", action="store_true", help="Also push checkpoint-* folders.")
    push.add_argument("--dry-run", action="store_true", help="List the files that would be pushed and stop.")

    card = commands.add_parser("card", help="Write OUTPUT_DIR/README.md from its report.json and config.json.")
    card.add_argument("output_dir", help="Folder written by the distillation run.")
    card.add_argument("--repo-id", default=None, help="Repository the card's loading snippet points to.")
    card.add_argument("--force", action="store_true", help="Overwrite an existing README.md.")

    cache = commands.add_parser("cache-teacher", help="Run a teacher once over a dataset and save its outputs.")
    cache.add_argument(
        "teacher", help="transformers or timm model folder, Hub id, or timm name (hf-hub:timm/NAME or timm/NAME)."
    )
    cache.add_argument("dataset", help="Folder written by save_to_disk, or local .json/.jsonl/.csv/.parquet files.")
    cache.add_argument("output_dir", help="Folder the cache is saved to (read it back with datasets.load_from_disk).")
    cache.add_argument(
        "--top_k", type=int, default=None, help="Keep the top-k log-probabilities (default: all logits)."
    )
    cache.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="Value storage.")
    cache.add_argument("--batch_size", type=int, default=32, help="Examples per teacher forward pass.")
    cache.add_argument("--split", default="train", help="Split to cache when DATASET holds several.")
    cache.add_argument(
        "--input_columns", nargs="+", default=None, help="Columns the teacher gets (default: all but labels)."
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 Hub error, 2 bad input)."""
    args = build_parser().parse_args(argv)
    from .hub import HubPushError

    try:
        if args.command == "push":
            return _push(args)
        if args.command == "cache-teacher":
            return _cache_teacher(args)
        return _card(args)
    except HubPushError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_HUB_ERROR
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _push(args: argparse.Namespace) -> int:
    from .hub import README_NAME, push_output_dir, select_upload_files

    if args.dry_run:
        if not Path(args.output_dir).is_dir():
            raise ValueError(f"Output folder {args.output_dir!r} does not exist.")
        files = select_upload_files(args.output_dir, args.include_training_args, args.include_checkpoints)
        for name in files:
            print(name)
        if args.refresh_card or README_NAME not in files:
            print(f"{README_NAME} (generated from report.json and config.json)")
        return 0
    commit = push_output_dir(
        args.output_dir,
        args.repo_id,
        private=args.private or None,
        revision=args.revision,
        commit_message=args.commit_message,
        token=args.token,
        refresh_card=args.refresh_card,
        include_training_args=args.include_training_args,
        include_checkpoints=args.include_checkpoints,
    )
    print(f"Pushed {args.output_dir} to {commit.commit_url}")
    return 0


def _card(args: argparse.Namespace) -> int:
    from .hub import README_NAME, card_from_output_dir

    path = Path(args.output_dir) / README_NAME
    if path.exists() and not args.force:
        raise ValueError(f"{path} exists; pass --force to overwrite it.")
    card_from_output_dir(args.output_dir, repo_id=args.repo_id).save(path)
    print(f"Wrote {path}")
    return 0


def _cache_teacher(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from .teachers import cache_size, cache_teacher_outputs
    from .teachers.loading import load_dataset_for_cache, load_model_for_cache

    teacher = load_model_for_cache(args.teacher)
    dataset = load_dataset_for_cache(args.dataset, args.split)
    cache = cache_teacher_outputs(
        teacher,
        dataset,
        args.top_k,
        args.batch_size,
        args.dtype,
        input_columns=args.input_columns,
        output_dir=args.output_dir,
    )
    if not PartialState().is_main_process:
        return 0
    size = cache_size(cache)
    kind = "full logits" if args.top_k is None else f"top-{args.top_k}"
    print(f"Cached {len(cache)} examples ({kind}, {args.dtype}) to {args.output_dir}")
    print(f"teacher outputs: {size['bytes']:.0f} bytes, {size['bytes_per_example']:.1f} bytes per example")
    if "bytes_per_token" in size:
        print(f"{size['tokens']:.0f} tokens: {size['bytes_per_token']:.1f} bytes per token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
