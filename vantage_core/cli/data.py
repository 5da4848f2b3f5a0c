"""vantage-data: download, import and preprocess the text-to-SQL datasets.

    vantage-data download --datasets spider bird wikisql gretel --output_dir ./data --cache_dir ./cache
                          [--url spider=URL] [--sha256 spider=HEX] [--timeout S] [--no-progress]
    vantage-data import spider|bird|wikisql|gretel PATH [PATH ...] [--output_dir ./data] [--link]
    vantage-data preprocess --config C --data_dir ./data --output_dir ./processed_data
                            [--num_workers N] [--datasets ...] [--split_by database|example]
                            [--force] [--set data.include_sample_values=true ...]

URLs and checksums may also come from the environment: VANTAGE_SPIDER_URL,
VANTAGE_BIRD_TRAIN_URL, VANTAGE_BIRD_DEV_URL, VANTAGE_WIKISQL_URL, VANTAGE_GRETEL_URL (a hub
id as hf://datasets/OWNER/NAME, or an http(s)/file URL) and VANTAGE_<KEY>_SHA256.
Errors are one line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DataError, VantageError, run_cli
from .args import SPELLING_NOTE, positive_float, positive_int
from .args import ArgumentParser as _Parser


def _kv(items: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise VantageError(f"--{what} {it!r}: expected KEY=VALUE (KEY: spider, bird_train, bird_dev, "
                               "wikisql, gretel)")
        k, v = it.split("=", 1)
        out[k.strip().lower()] = v.strip()
    return out


def download_parser(prog: str = "vantage-data download") -> argparse.ArgumentParser:
    from ..data.download import DATASETS
    p = _Parser(prog=prog, description="Download the datasets into OUTPUT_DIR/<name>/ (official layouts).",
                epilog=SPELLING_NOTE)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS), metavar="NAME",
                   help=f"datasets to download, any of {', '.join(DATASETS)}")
    p.add_argument("--output_dir", type=Path, default=Path("./data"),
                   help="each dataset goes to OUTPUT_DIR/<name>/ in its official layout")
    p.add_argument("--cache_dir", type=Path, default=None, help="archives go here (default OUTPUT_DIR/.cache)")
    p.add_argument("--url", action="append", metavar="KEY=URL",
                   help="override a source URL (KEY: spider, bird_train, bird_dev, wikisql, gretel; repeatable)")
    p.add_argument("--sha256", action="append", metavar="KEY=HEX",
                   help="expected checksum of an archive (repeatable)")
    p.add_argument("--timeout", type=positive_float, default=30.0, help="network timeout in seconds")
    p.add_argument("--limit", type=positive_int, default=None, help="gretel: stream at most N records per split")
    p.add_argument("--no-progress", action="store_true",
                   help="no download progress bar (also off when stderr is not a terminal)")
    return p


def preprocess_parser(prog: str = "vantage-data preprocess") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Normalize, serialize schemas, tokenize, split and cache.",
                epilog=SPELLING_NOTE)
    p.add_argument("--config", default=None, help="config YAML (or tiny/small/medium/large; default: the built-in defaults)")
    p.add_argument("--data_dir", type=Path, default=Path("./data"),
                   help="folder with the downloaded datasets (spider/, bird/, wikisql/, gretel/, synthetic/) "
                        "or one Spider-layout folder")
    p.add_argument("--output_dir", type=Path, default=Path("./processed_data"),
                   help="where the processed splits, tokenizer and summary go (pass it to vantage-train --data_dir)")
    p.add_argument("--num_workers", type=positive_int, default=None, help="processes (default data.num_workers)")
    p.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                   help="only these sources of DATA_DIR (default: every one found)")
    p.add_argument("--split_by", choices=["database", "example"], default="database",
                   help="carve validation by whole databases (unseen schemas) or by examples")
    p.add_argument("--force", action="store_true", help="rebuild even when the cache is valid")
    p.add_argument("--no-compile-check", action="store_true", help="skip the SQLite EXPLAIN check of gold SQL")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--quiet", action="store_true", help="do not print the summary (sources, splits, skipped examples)")
    return p


def import_parser(prog: str = "vantage-data import") -> argparse.ArgumentParser:
    from ..data.download import DATASETS
    p = _Parser(prog=prog, description="Install a local copy (folder or archive in the dataset's official "
                "layout) as OUTPUT_DIR/NAME.", epilog=SPELLING_NOTE)
    p.add_argument("name", choices=list(DATASETS), help="which dataset the copy is")
    p.add_argument("paths", nargs="+", type=Path, help="the folder or archive(s) to import")
    p.add_argument("--output_dir", type=Path, default=Path("./data"), help="the copy goes to OUTPUT_DIR/NAME")
    p.add_argument("--link", action="store_true", help="symlink a folder instead of copying it")
    return p


def cmd_download(argv: list[str], prog: str = "vantage-data download") -> int:
    from ..data.download import DownloadError, download_dataset
    a = download_parser(prog).parse_args(argv)
    urls, sums = _kv(a.url, "url"), _kv(a.sha256, "sha256")
    failures = []
    for name in a.datasets:
        try:
            path = download_dataset(name, a.output_dir, a.cache_dir, urls=urls, sha256=sums,
                                    progress=not a.no_progress and sys.stderr.isatty(), timeout=a.timeout,
                                    limit=a.limit)
            print(f"{name}: ready in {path}")
        except DownloadError as e:
            print(f"error: {e}", file=sys.stderr)
            failures.append(name)
    if failures:
        raise DataError(f"{len(failures)} of {len(a.datasets)} datasets not downloaded ({', '.join(failures)})")
    return 0


def cmd_import(argv: list[str], prog: str = "vantage-data import") -> int:
    from ..data.download import import_dataset
    a = import_parser(prog).parse_args(argv)
    path = import_dataset(a.name, a.paths, a.output_dir, link=a.link)
    print(f"{a.name}: imported into {path}")
    return 0


def cmd_preprocess(argv: list[str], prog: str = "vantage-data preprocess") -> int:
    from ..config import load_config
    from ..data.preprocess import preprocess, print_summary
    a = preprocess_parser(prog).parse_args(argv)
    cfg = load_config(a.config, a.set or None)
    res = preprocess(cfg, a.data_dir, a.output_dir, num_workers=a.num_workers, datasets=a.datasets,
                     split_by=a.split_by, force=a.force, check_compile=not a.no_compile_check)
    if not a.quiet:
        print_summary(res)
    return 0


COMMANDS = {"download": cmd_download, "import": cmd_import, "preprocess": cmd_preprocess}


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    cmd = argv[0]
    if cmd not in COMMANDS:
        raise VantageError(f"vantage-data: unknown command {cmd!r} (choose from {', '.join(COMMANDS)})")
    return COMMANDS[cmd](argv[1:])


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def script_main(command: str, prog: str, argv: list[str] | None = None) -> int:
    """scripts/*.py: one subcommand under the script's own program name."""
    return run_cli(lambda a: COMMANDS[command](list(sys.argv[1:] if a is None else a), prog), argv)


if __name__ == "__main__":
    sys.exit(main())
