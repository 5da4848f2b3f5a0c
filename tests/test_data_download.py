"""vantage-data download / import against a local HTTP server (127.0.0.1, ephemeral port)."""

from __future__ import annotations

import hashlib
import json

import pytest

from test_data_fixtures import (LocalServer, tar_dir, write_bird, write_gretel, write_spider, write_wikisql,
                                zip_dir)
from vantage_core.cli.data import main
from vantage_core.data.download import DownloadError, download_dataset, download_file, import_dataset
from vantage_core.data.prepare import load_source


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Archives in each release layout, served over HTTP."""
    src = tmp_path_factory.mktemp("src")
    www = tmp_path_factory.mktemp("www")
    zip_dir(write_spider(src / "spider"), www / "spider_data.zip", prefix="spider_data/")
    bird = write_bird(src / "bird")
    # BIRD nests the database folder as a zip inside its archives
    for split in ("train", "dev"):
        d = bird / split
        zip_dir(d / f"{split}_databases", d / f"{split}_databases.zip", prefix=f"{split}_databases/")
        import shutil
        shutil.rmtree(d / f"{split}_databases")
        zip_dir(d, www / f"{split}.zip", prefix=f"{split}/")
    tar_dir(write_wikisql(src / "wikisql") / "data", www / "data.tar.bz2", "data")
    write_gretel(src / "gretel")
    (www / "gretel_train.jsonl").write_bytes((src / "gretel" / "train.jsonl").read_bytes())
    (www / "big.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    srv = LocalServer(www)
    yield srv, www
    srv.close()


URLS = {
    "spider": {"spider": "spider_data.zip"},
    "bird": {"bird_train": "train.zip", "bird_dev": "dev.zip"},
    "wikisql": {"wikisql": "data.tar.bz2"},
    "gretel": {"gretel": "gretel_train.jsonl"},
}


@pytest.mark.parametrize("name", ["spider", "bird", "wikisql", "gretel"])
def test_download_each_dataset(served, tmp_path, name):
    srv, _ = served
    urls = {k: srv.url(v) for k, v in URLS[name].items()}
    path = download_dataset(name, tmp_path / "data", tmp_path / "cache", urls=urls, progress=False)
    assert path == tmp_path / "data" / name
    assert not list((tmp_path / "data").glob(f".{name}*"))  # no staging left behind
    splits = load_source(name, path)
    assert splits.train and not [s for s in splits.skipped if "corrupt" in s[1]]
    if name == "bird":
        assert splits.dev and all(splits.db_path(e.db_id) for e in splits.train + splits.dev)
    # archives cached: a second run downloads nothing
    n = len(srv.seen)
    download_dataset(name, tmp_path / "data", tmp_path / "cache", urls=urls, progress=False)
    assert len(srv.seen) == n


def test_cli_download_with_env_url(served, tmp_path, monkeypatch, capsys):
    srv, _ = served
    monkeypatch.setenv("VANTAGE_SPIDER_URL", srv.url("spider_data.zip"))
    rc = main(["download", "--datasets", "spider", "--output_dir", str(tmp_path / "d"),
               "--cache_dir", str(tmp_path / "c")])
    assert rc == 0
    assert (tmp_path / "d/spider/tables.json").is_file()
    assert (tmp_path / "d/spider/database/shop_0/shop_0.sqlite").is_file()


def test_resumed_partial_download(served, tmp_path):
    srv, www = served
    data = (www / "big.bin").read_bytes()
    dest = tmp_path / "big.bin"
    (tmp_path / "big.bin.part").write_bytes(data[:300_000])
    before = len(srv.seen)
    download_file(srv.url("big.bin"), dest, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert dest.read_bytes() == data
    assert not (tmp_path / "big.bin.part").exists()
    assert srv.seen[before:] == [("/big.bin", "bytes=300000-")]


def test_checksum_mismatch_removes_partial(served, tmp_path):
    srv, _ = served
    dest = tmp_path / "big.bin"
    with pytest.raises(DownloadError, match="checksum mismatch.*big.bin"):
        download_file(srv.url("big.bin"), dest, sha256="0" * 64, progress=False)
    assert not dest.exists() and not (tmp_path / "big.bin.part").exists()


def test_checksum_flag_on_cli(served, tmp_path, capsys):
    srv, _ = served
    rc = main(["download", "--datasets", "wikisql", "--output_dir", str(tmp_path / "d"), "--url",
               f"wikisql={srv.url('data.tar.bz2')}", "--sha256", "wikisql=" + "ab" * 32])
    err = capsys.readouterr().err
    assert rc == 2 and "checksum mismatch" in err
    assert not (tmp_path / "d/wikisql").exists()


def test_unreachable_source_one_line_with_import_hint(tmp_path, capsys):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    url = f"http://127.0.0.1:{port}/spider_data.zip"
    rc = main(["download", "--datasets", "spider", "--output_dir", str(tmp_path / "d"), "--url", f"spider={url}",
               "--timeout", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert any(url in line and "vantage-data import spider PATH" in line for line in err)
    assert all(line.startswith("error:") for line in err)


@pytest.mark.parametrize("kind", ["folder", "zip", "tar"])
def test_import_local_copy(tmp_path, kind):
    src = write_spider(tmp_path / "release" / "spider")
    if kind == "zip":
        src = zip_dir(src, tmp_path / "spider.zip", prefix="spider_data/")
    elif kind == "tar":
        src = tar_dir(src, tmp_path / "spider.tar.gz", "spider", mode="w:gz")
    assert main(["import", "spider", str(src), "--output_dir", str(tmp_path / "data")]) == 0
    out = tmp_path / "data/spider"
    assert {"tables.json", "train_spider.json", "dev.json"} <= {p.name for p in out.iterdir()}
    meta = json.loads((out / ".vantage_source.json").read_text())
    assert meta["dataset"] == "spider"
    # re-import replaces atomically
    import_dataset("spider", src, tmp_path / "data")
    assert (out / "tables.json").is_file()


def test_import_wrong_layout_is_one_line_error(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk/readme.txt").write_text("nothing here")
    assert main(["import", "spider", str(tmp_path / "junk"), "--output_dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no spider layout" in err and err.count("\n") == 1
