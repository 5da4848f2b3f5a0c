"""Storage URLs: Optuna RDB URLs (sqlite:///, postgresql://, mysql+pymysql://) and
``journal:PATH`` for Optuna's JournalStorage (many local processes, no server)."""

from __future__ import annotations

import re
from pathlib import Path

import warnings

import optuna

from vantage_core.errors import StorageError

# Heartbeats are marked experimental by Optuna; they are what makes worker crashes safe here.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

DEFAULT_STORAGE = "sqlite:///vantage_studies.db"


def redact(url: str) -> str:
    """Hide the password in ``scheme://user:password@host``."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def is_sqlite(url: str | None) -> bool:
    return (url or DEFAULT_STORAGE).startswith("sqlite")


def journal_for(sqlite_url: str) -> str:
    """The JournalStorage used instead of the default SQLite file when many local processes
    share a study (SQLite must not be written from several processes)."""
    p = Path((sqlite_url or DEFAULT_STORAGE).split(":///", 1)[-1])
    return f"journal:{p.with_suffix('.journal.log')}"


def absolute(url: str) -> str:
    """A storage URL that means the same file from any working directory (for child processes)."""
    if url.startswith("journal:"):
        return "journal:" + str(Path(url.split(":", 1)[1]).expanduser().resolve())
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return "sqlite:///" + str(Path(url[len("sqlite:///"):]).expanduser().resolve())
    return url


def open_storage(url: str, *, heartbeat_interval: int | None = 60, grace_period: int | None = 180,
                 stale_callback=None):
    url = url or DEFAULT_STORAGE
    if url.startswith("journal:"):
        path = Path(url.split(":", 1)[1]).expanduser()
        if not path.parent.is_dir():
            raise StorageError(f"storage '{url}': folder {path.parent} does not exist")
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as e:
            raise StorageError(f"storage '{url}': cannot open ({e.strerror})") from None
    if "://" not in url:
        raise StorageError(f"storage '{redact(url)}': not a storage URL (e.g. sqlite:///studies.db, "
                           "postgresql://user@127.0.0.1/db, journal:./studies.log)")
    scheme = url.split("://", 1)[0]
    if not re.fullmatch(r"(sqlite|postgresql|postgres|mysql|mariadb)(\+\w+)?", scheme):
        raise StorageError(f"storage '{redact(url)}': unsupported scheme '{scheme}' "
                           "(sqlite, postgresql, mysql, or journal:PATH)")
    if scheme.startswith("sqlite"):
        p = url.split(":///", 1)[-1]
        if p and p != ":memory:" and not Path(p).expanduser().resolve().parent.is_dir():
            raise StorageError(f"storage '{url}': folder {Path(p).parent} does not exist")
    kwargs = {}
    if heartbeat_interval:
        # A worker that dies leaves its trial RUNNING; heartbeats let others fail and retry it.
        if stale_callback is None:
            from .study import retry_stale_trial
            stale_callback = retry_stale_trial
        kwargs = {"heartbeat_interval": int(heartbeat_interval), "grace_period": int(grace_period or 2 * heartbeat_interval),
                  "heartbeat_stale_trial_callback": stale_callback}
    engine_kwargs = {"pool_pre_ping": True}
    if scheme.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except ImportError as e:
        raise StorageError(f"storage '{redact(url)}': database driver missing ({e}); "
                           "pip install psycopg2-binary or pymysql") from None
    except Exception as e:  # sqlalchemy OperationalError/ArgumentError etc.
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise StorageError(f"storage '{redact(url)}': cannot connect ({redact(msg)[:200]})") from None
