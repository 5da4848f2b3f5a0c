"""Storage URLs: Optuna RDB URLs (sqlite:///, postgresql://, mysql+pymysql://) and
``journal:PATH`` for Optuna's JournalStorage (many local processes, no server)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import warnings

import optuna

from vantage_core.errors import StorageError

from .recovery import retry_stale_trial

_log = logging.getLogger("vantage.storage")

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



# ---------------------------------------------------------------------------------------
# Server databases: ride out dropped connections (restart, pg_terminate_backend, network)
# ---------------------------------------------------------------------------------------
def _is_connection_error(e: BaseException) -> bool:
    """A lost or refused database connection anywhere in the exception chain."""
    from sqlalchemy import exc as sa_exc
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, (sa_exc.OperationalError, sa_exc.InterfaceError)) or \
                (isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


_RETRIED = ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
            "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
            "get_study_system_attrs", "get_all_studies", "create_new_trial", "_create_new_trial", "set_trial_param",
            "_set_trial_param", "get_trial_id_from_study_id_trial_number", "get_trial_number_from_id",
            "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr",
            "set_trial_system_attr", "get_trial", "get_all_trials", "_get_trials", "get_n_trials", "get_best_trial",
            "_get_best_trial_id", "record_heartbeat", "_get_stale_trial_ids", "check_trial_is_updatable")


class ResilientRDBStorage(optuna.storages.RDBStorage):
    """RDBStorage whose calls survive a dropped connection: a call that fails because the
    connection was lost (server restarted, backend terminated, network blip) is retried with
    backoff for up to `retry_seconds` (pool_pre_ping opens a fresh connection), then fails as
    a one-line StorageError. A state change whose commit landed before the connection dropped
    is recognised on retry instead of failing as "already finished"."""

    retry_seconds = 60.0

    def _retrying(self, name, fn, *args, **kwargs):
        import threading
        import time

        local = self.__dict__.setdefault("_retry_local", threading.local())
        if getattr(local, "depth", 0):          # an inner call of an outer retried call
            return fn(*args, **kwargs)
        local.depth = 1
        try:
            deadline, delay, attempt = time.monotonic() + self.retry_seconds, 0.1, 0
            while True:
                try:
                    return fn(*args, **kwargs)
                except optuna.exceptions.UpdateFinishedTrialError:
                    if attempt and name == "set_trial_state_values":
                        trial_id, state = args[0], kwargs.get("state", args[1] if len(args) > 1 else None)
                        if self.get_trial(trial_id).state == state:
                            return True      # the first attempt's commit landed
                    raise
                except Exception as e:
                    if not _is_connection_error(e):
                        raise
                    if time.monotonic() > deadline:
                        raise StorageError(f"storage '{redact(self.url)}': connection lost and not restored "
                                           f"within {self.retry_seconds:g}s ({type(e).__name__})") from None
                    attempt += 1
                    _log.warning("storage: connection lost during %s; retrying (attempt %d)", name, attempt)
                    time.sleep(delay)
                    delay = min(2.0, delay * 2)
        finally:
            local.depth = 0


def _retry_method(name):
    base = getattr(optuna.storages.RDBStorage, name)

    def method(self, *args, **kwargs):
        return self._retrying(name, lambda *a, **k: base(self, *a, **k), *args, **kwargs)
    method.__name__ = name
    return method


for _name in _RETRIED:
    if hasattr(optuna.storages.RDBStorage, _name):
        setattr(ResilientRDBStorage, _name, _retry_method(_name))


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
            stale_callback = retry_stale_trial
        kwargs = {"heartbeat_interval": int(heartbeat_interval), "grace_period": int(grace_period or 2 * heartbeat_interval),
                  "heartbeat_stale_trial_callback": stale_callback}
    engine_kwargs = {"pool_pre_ping": True}
    if scheme.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    cls = optuna.storages.RDBStorage if scheme.startswith("sqlite") else ResilientRDBStorage
    # A connection dropped while the tables are checked is retried briefly (a server that is
    # simply unreachable still fails within about a second).
    attempts = 1 if scheme.startswith("sqlite") else 3
    try:
        for attempt in range(attempts):
            try:
                return cls(url, engine_kwargs=engine_kwargs, **kwargs)
            except Exception as e:
                if attempt == attempts - 1 or not _is_connection_error(e):
                    raise
                import time
                time.sleep(0.3 * (attempt + 1))
    except ImportError as e:
        raise StorageError(f"storage '{redact(url)}': database driver missing ({e}); "
                           "pip install psycopg2-binary or pymysql") from None
    except Exception as e:  # sqlalchemy OperationalError/ArgumentError etc.
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise StorageError(f"storage '{redact(url)}': cannot connect ({redact(msg)[:200]})") from None
