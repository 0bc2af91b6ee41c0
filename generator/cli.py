"""Command line: ``python -m generator build --config site_config.yml``."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from generator import __version__
from generator.errors import AtlasError

log = logging.getLogger("generator")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attention-atlas",
        description="Build the Attention Atlas: score every attention head of a BERT-family model on a corpus "
                    "of sentence pairs and write an MkDocs-material site.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="compute (or read from the cache) and build the site",
                           description="Compute every head's scores (cached under build/), render the pages and "
                                       "build the site with mkdocs --strict; the old site is replaced only when "
                                       "the whole build succeeded.")
    build.add_argument("--config", type=Path, default=Path("site_config.yml"),
                       help="the site configuration file (default: %(default)s)")
    build.add_argument("--corpus", type=Path, default=None,
                       help="use this corpus file instead of the one named in the config")
    build.add_argument("--site-dir", type=Path, default=None,
                       help="write the site here instead of the config's output.site_dir")
    build.add_argument("--quiet", action="store_true", help="no progress bars, warnings and errors only")
    check = sub.add_parser("check", help="validate the config and the corpus without building",
                           description="Read and validate site_config.yml and the corpus; print a summary.")
    check.add_argument("--config", type=Path, default=Path("site_config.yml"), help="(default: %(default)s)")
    check.add_argument("--corpus", type=Path, default=None, help="use this corpus file instead")
    return parser


def run_build(config: Path, corpus: Path | None = None, site_dir: Path | None = None, progress: bool = True) -> dict:
    """One build: validate the inputs, compute (:func:`generator.pipeline.compute`),
    render and publish (:func:`generator.site.build_site`).

    Args:
        config: the ``site_config.yml`` path.
        corpus: a corpus file to use instead of the config's ``corpus``.
        site_dir: a folder to write the site to instead of ``output.site_dir``.
        progress: show progress bars.

    Returns:
        The timings: stage name -> seconds, and ``total_s``.

    Raises:
        AtlasError: for any problem the user can fix (the message names the
            file, the pair and the field); the previous site is left as it was.
    """
    from generator.config import load_config, load_corpus, with_overrides
    from generator.pipeline import compute
    from generator.site import build_site

    start = time.perf_counter()
    cfg = with_overrides(load_config(config), corpus=corpus, site_dir=site_dir)
    pairs = load_corpus(cfg.corpus_path)
    data = compute(cfg, pairs, progress=progress)
    timings = dict(data.timings)
    build_site(cfg, data, timings)
    timings["total_s"] = time.perf_counter() - start
    counts: dict[str, int] = {}
    for h in data.heads:
        counts[h.label] = counts.get(h.label, 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    log.info("built %s: %d pairs, %d heads (%s) in %.1f s", cfg.site_dir, len(pairs), len(data.heads), summary,
             timings["total_s"])
    return timings


def main(argv: list[str] | None = None) -> int:
    """``python -m generator``: run the command line.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 for an :class:`AtlasError` (its
        message printed without a traceback), 130 when interrupted.
    """
    args = _parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s: %(message)s")
    for noisy in ("mkdocs", "httpx", "transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "check":
            from generator.config import load_config, load_corpus, with_overrides

            cfg = with_overrides(load_config(args.config), corpus=args.corpus)
            pairs = load_corpus(cfg.corpus_path)
            print(f"{cfg.path}: ok; corpus {cfg.corpus_path}: {len(pairs)} pairs ok")
            return 0
        run_build(args.config, args.corpus, args.site_dir, progress=not quiet and sys.stderr.isatty())
        return 0
    except AtlasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the previous site was left as it was", file=sys.stderr)
        return 130
