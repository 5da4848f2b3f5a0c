"""Download and import the text-to-SQL datasets into ``<output_dir>/<name>/`` in their official
layouts (what the loaders read).

    download_dataset("spider", "./data", "./cache")      # release archive -> data/spider/
    import_dataset("spider", "/mnt/spider_data.zip", "./data")   # local folder or archive

Archives are fetched with HTTP Range resume (``<file>.part`` grows until complete), verified
against a sha256 when one is known, and renamed into place only when complete. Extraction
and imports are staged in a temporary folder and renamed into place, so a folder under
``output_dir`` is either absent or complete. URLs and checksums come from (in order) the
arguments, the environment (``VANTAGE_<KEY>_URL`` / ``VANTAGE_<KEY>_SHA256`` with KEY
``SPIDER``, ``BIRD_TRAIN``, ``BIRD_DEV``, ``WIKISQL``, ``GRETEL``) and the defaults below.
Gretel comes from the Hugging Face hub through ``datasets`` (streaming) unless its URL is
set to a plain http(s)/file URL of a JSONL/parquet file.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from ..errors import DataError
from .bird import find_bird_parts
from .cache import sha256_file
from .gretel import write_jsonl

DATASETS = ("spider", "bird", "wikisql", "gretel")
GRETEL_HUB_ID = "gretelai/synthetic_text_to_sql"


@dataclass(frozen=True)
class Artifact:
    key: str            # env/flag key: spider, bird_train, bird_dev, wikisql, gretel
    url: str
    sha256: str | None = None
    filename: str | None = None


DEFAULTS: dict[str, list[Artifact]] = {
    "spider": [Artifact("spider", "https://drive.usercontent.google.com/download?"
                        "id=1403EGqzIDoHMdQF4c9Bkyl7dZLZ5Wt6J&export=download&confirm=t",
                        filename="spider_data.zip")],
    "bird": [Artifact("bird_train", "https://bird-bench.oss-cn-beijing.aliyuncs.com/train.zip",
                      filename="bird_train.zip"),
             Artifact("bird_dev", "https://bird-bench.oss-cn-beijing.aliyuncs.com/dev.zip",
                      filename="bird_dev.zip")],
    "wikisql": [Artifact("wikisql", "https://github.com/salesforce/WikiSQL/raw/master/data.tar.bz2",
                         filename="wikisql_data.tar.bz2")],
    "gretel": [Artifact("gretel", f"hf://datasets/{GRETEL_HUB_ID}")],
}


class DownloadError(DataError):
    pass


def offline_hint(name: str) -> str:
    return (f"with a local copy run: vantage-data import {name} PATH "
            "(a folder or archive in the dataset's official layout)")


def artifacts(name: str, urls: dict[str, str] | None = None,
              sha256: dict[str, str] | None = None) -> list[Artifact]:
    """The artifacts of dataset `name`, with URL/checksum overrides from args then env."""
    if name not in DEFAULTS:
        raise DataError(f"unknown dataset '{name}' (choose from {', '.join(DATASETS)})")
    urls, sha256 = urls or {}, sha256 or {}
    out = []
    for a in DEFAULTS[name]:
        env = a.key.upper()
        url = urls.get(a.key) or os.environ.get(f"VANTAGE_{env}_URL") or a.url
        sha = sha256.get(a.key) or os.environ.get(f"VANTAGE_{env}_SHA256") or a.sha256
        fname = a.filename or Path(url.split("?")[0]).name or a.key
        if url != a.url:  # an override names its own file
            fname = Path(url.split("?")[0]).name or fname
        out.append(Artifact(a.key, url, sha.lower() if sha else None, fname))
    return out


# ------------------------------------------------------------------------------------------
# HTTP download with resume, checksum and atomic rename
# ------------------------------------------------------------------------------------------
def _progress(total: int | None, initial: int, desc: str, enabled: bool):
    if not enabled:
        return None
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=desc, leave=False)


def download_file(url: str, dest: str | Path, *, sha256: str | None = None, name: str = "dataset",
                  timeout: float = 30.0, progress: bool = True, chunk_size: int = 1 << 16,
                  _retry: bool = True) -> Path:
    """Fetch `url` to `dest`, resuming ``dest.part`` with an HTTP Range request.

    Returns `dest` (already there and matching `sha256` counts as done). Raises
    `DownloadError` (one line naming the URL) when the source is unreachable or the
    checksum does not match (the partial file is then removed).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "vantage-data/1"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset and _retry:  # our partial file is no prefix: start over
            part.unlink(missing_ok=True)
            return download_file(url, dest, sha256=sha256, name=name, timeout=timeout,
                                 progress=progress, chunk_size=chunk_size, _retry=False)
        raise DownloadError(f"{name}: cannot download {url} (HTTP {e.code} {e.reason}); "
                            + offline_hint(name)) from None
    except (urllib.error.URLError, socket.timeout, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"{name}: cannot download {url} ({reason}); " + offline_hint(name)) from None
    with resp:
        status = getattr(resp, "status", 200)
        length = resp.headers.get("Content-Length")
        if status == 206 and offset:
            crange = resp.headers.get("Content-Range", "")
            start = crange.split()[-1].split("-")[0] if crange else str(offset)
            if start != str(offset):
                raise DownloadError(f"{name}: {url} answered range {crange!r} for offset {offset}")
            mode, total = "ab", (offset + int(length)) if length else None
        else:  # no resume support (or a fresh download): start from zero
            offset, mode, total = 0, "wb", int(length) if length else None
        bar = _progress(total, offset, dest.name, progress)
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        block = resp.read(chunk_size)
                    except (socket.timeout, OSError) as e:
                        raise DownloadError(f"{name}: download of {url} interrupted ({e}); run the "
                                            "same command again to resume") from None
                    if not block:
                        break
                    f.write(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
    size = part.stat().st_size
    if total is not None and size < total:
        raise DownloadError(f"{name}: download of {url} stopped at {size} of {total} bytes; run the "
                            "same command again to resume")
    if sha256:
        got = sha256_file(part)
        if got != sha256.lower():
            part.unlink(missing_ok=True)
            raise DownloadError(f"{name}: checksum mismatch for {url}: expected sha256 {sha256}, "
                                f"got {got} (partial file removed)")
    os.replace(part, dest)
    return dest


# ------------------------------------------------------------------------------------------
# archives and imports
# ------------------------------------------------------------------------------------------
def is_archive(path: Path) -> bool:
    return path.is_file() and (zipfile.is_zipfile(path) or tarfile.is_tarfile(path))


def _safe_target(root: Path, member: str) -> Path:
    target = (root / member).resolve()
    if root.resolve() not in target.parents and target != root.resolve():
        raise DataError(f"archive member {member!r} escapes the extraction folder")
    return target


def extract_archive(archive: str | Path, dest: str | Path) -> Path:
    """Extract a zip or tar(.gz/.bz2/.xz) into `dest` (created), refusing unsafe paths."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for m in z.namelist():
                    _safe_target(dest, m)
                z.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                members = []
                for m in t.getmembers():
                    _safe_target(dest, m.name)
                    if m.issym() or m.islnk() or m.isdev():
                        continue
                    members.append(m)
                t.extractall(dest, members=members)
        else:
            raise DataError(f"{archive}: not a zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{archive}: corrupt archive ({e.__class__.__name__}: {e})") from None
    return dest


def _find_dir(root: Path, test: Callable[[Path], bool], depth: int = 4) -> Path | None:
    frontier = [root]
    for _ in range(depth + 1):
        nxt = []
        for d in frontier:
            if test(d):
                return d
            try:
                nxt += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(("__MACOSX", ".")))
            except OSError:
                pass
        frontier = nxt
    return None


def layout_root(name: str, root: Path) -> Path:
    """The folder inside `root` that holds dataset `name` in its official layout."""
    if name == "spider":
        found = _find_dir(root, lambda d: (d / "tables.json").is_file()
                          and any((d / f).is_file() for f in ("train_spider.json", "dev.json", "train.json")))
    elif name == "bird":
        found = root if find_bird_parts(root) else None
    elif name == "wikisql":
        found = _find_dir(root, lambda d: any((d / f"{s}.jsonl").is_file() and (d / f"{s}.tables.jsonl").is_file()
                                              for s in ("train", "dev", "test")))
    elif name == "gretel":
        found = _find_dir(root, lambda d: any(p.suffix in (".jsonl", ".parquet", ".json") for p in d.iterdir()
                                              if p.is_file()))
    else:
        raise DataError(f"unknown dataset '{name}' (choose from {', '.join(DATASETS)})")
    if found is None:
        expect = {"spider": "tables.json + train_spider.json/dev.json + database/",
                  "bird": "train.json/dev.json + *_tables.json + *_databases/",
                  "wikisql": "train.jsonl + train.tables.jsonl (data/ of the release)",
                  "gretel": "*.jsonl or *.parquet records"}[name]
        raise DataError(f"{root}: no {name} layout found (expected {expect})")
    return found


def _extract_nested(root: Path) -> None:
    """BIRD ships ``*_databases.zip`` inside its archives: extract them next to themselves."""
    for z in sorted(root.rglob("*_databases.zip")):
        target = z.with_suffix("")
        if target.is_dir():
            continue
        tmp = z.parent / f".{z.stem}.extract-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        extract_archive(z, tmp)
        inner = tmp / z.stem if (tmp / z.stem).is_dir() else tmp
        os.replace(inner, target)
        shutil.rmtree(tmp, ignore_errors=True)
        z.unlink()
    for junk in root.rglob("__MACOSX"):
        shutil.rmtree(junk, ignore_errors=True)


def import_dataset(name: str, paths: str | Path | list[str | Path], output_dir: str | Path, *,
                   link: bool = False, origin: str | None = None) -> Path:
    """Install a local copy (folder(s) or archive(s) in the official layout) as
    ``output_dir/name``; returns that folder. `link` symlinks a folder instead of copying."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}' (choose from {', '.join(DATASETS)})")
    paths = [Path(p).expanduser() for p in (paths if isinstance(paths, list) else [paths])]
    for p in paths:
        if not p.exists():
            raise DataError(f"{p}: not found ({name} import expects a folder or an archive)")
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / name
    stage = out_dir / f".{name}.import-{os.getpid()}-{time.monotonic_ns()}"
    stage.mkdir()
    try:
        if link and len(paths) == 1 and paths[0].is_dir():
            src = layout_root(name, paths[0].resolve())
            os.symlink(src, stage / "root")
            built = stage / "root"
        else:
            for k, p in enumerate(paths):
                sub = stage / f"part{k}"
                if p.is_dir():
                    shutil.copytree(layout_root(name, p), sub, symlinks=False)
                else:
                    extract_archive(p, sub)
            if name == "bird":
                _extract_nested(stage)
            roots = [layout_root(name, stage / f"part{k}") for k in range(len(paths))]
            built = stage / "root"
            if len(roots) == 1:
                os.replace(roots[0], built)
            else:  # several archives (BIRD train + dev): merge their layout folders
                built.mkdir()
                for r in roots:
                    for item in r.iterdir():
                        if not (built / item.name).exists():
                            os.replace(item, built / item.name)
            layout_root(name, built)  # the merged result must still be a valid layout
        meta = {"dataset": name, "origin": origin or [str(p) for p in paths], "imported_at": time.time()}
        if not built.is_symlink():
            (built / ".vantage_source.json").write_text(json.dumps(meta, indent=1))
        old = out_dir / f".{name}.old-{os.getpid()}"
        if final.exists() or final.is_symlink():
            os.replace(final, old) if not final.is_symlink() else final.unlink()
        os.replace(built, final)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return final


# ------------------------------------------------------------------------------------------
# download = fetch + import
# ------------------------------------------------------------------------------------------
def _download_gretel_hub(hub_id: str, output_dir: Path, progress: bool, limit: int | None) -> Path:
    probe = f"https://huggingface.co/api/datasets/{hub_id}"
    try:
        urllib.request.urlopen(urllib.request.Request(probe, method="HEAD"), timeout=10).close()
    except urllib.error.HTTPError:
        pass  # reachable; let `datasets` report auth/not-found itself
    except (urllib.error.URLError, socket.timeout, OSError) as e:
        raise DownloadError(f"gretel: cannot reach {probe} ({getattr(e, 'reason', e)}); "
                            + offline_hint("gretel")) from None
    try:
        import datasets  # optional (vantage[data]): only to stream Gretel from the hub
    except ImportError:
        raise DataError("gretel: the `datasets` package is needed (pip install 'vantage[data]')") from None
    stage = output_dir / f".gretel.stream-{os.getpid()}"
    stage.mkdir(parents=True, exist_ok=True)
    try:
        for split in ("train", "test"):
            try:
                ds = datasets.load_dataset(hub_id, split=split, streaming=True)
                it = iter(ds)
                if limit is not None:
                    it = itertools.islice(it, limit)
                if progress:
                    it = tqdm(it, desc=f"gretel/{split}", unit="ex", leave=False)
                write_jsonl(it, stage / f"{split}.jsonl")
            except Exception as e:  # datasets/hub raise many kinds
                raise DownloadError(f"gretel: cannot stream {hub_id} split {split} "
                                    f"({e.__class__.__name__}: {' '.join(str(e).split())[:160]}); "
                                    + offline_hint("gretel")) from None
        return import_dataset("gretel", stage, output_dir, origin=f"hf://datasets/{hub_id}")
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def download_dataset(name: str, output_dir: str | Path, cache_dir: str | Path | None = None, *,
                     urls: dict[str, str] | None = None, sha256: dict[str, str] | None = None,
                     progress: bool = True, timeout: float = 30.0, limit: int | None = None) -> Path:
    """Fetch dataset `name` (archives into `cache_dir`, resumable) and install it as
    ``output_dir/name``. Raises `DownloadError` with the failing URL and the import hint."""
    output_dir = Path(output_dir)
    cache = Path(cache_dir) if cache_dir else output_dir / ".cache"
    arts = artifacts(name, urls, sha256)
    if name == "gretel" and arts[0].url.startswith("hf://"):
        hub_id = arts[0].url[len("hf://"):].removeprefix("datasets/")
        return _download_gretel_hub(hub_id, output_dir, progress, limit)
    files = []
    for a in arts:
        files.append(download_file(a.url, cache / (a.filename or a.key), sha256=a.sha256, name=name,
                                   timeout=timeout, progress=progress))
    if name == "gretel" and not is_archive(files[0]):  # a single JSONL/parquet file
        stage = output_dir / f".gretel.file-{os.getpid()}"
        stage.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(files[0], stage / files[0].name)
            return import_dataset(name, stage, output_dir, origin=arts[0].url)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return import_dataset(name, files, output_dir, origin=[a.url for a in arts])
