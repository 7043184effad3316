"""A throwaway PostgreSQL cluster for the test session, and fresh databases on it.

`Cluster.start()` runs `initdb` into a new temporary directory and `pg_ctl start` on a free port,
with the Unix socket in that directory, durability off (fsync, synchronous_commit and
full_page_writes: nothing here outlives the session). `stop()` stops it (`-m immediate`) and
deletes the directory; it also runs at interpreter exit, and the next session stops the cluster
of a session that was killed outright (its owner.pid names a dead process).

initdb refuses to run as root, and CI runs as root: as root the cluster runs as the `postgres`
user that Debian's package creates (`runuser -u postgres --`), or as `nobody` where that user is
missing; the directory is made in the system temp dir (not pytest's root-only tmp_path) and handed
to that user. Everything else connects as the cluster's superuser `tessera`, trust-authenticated,
over TCP to 127.0.0.1.

The binaries are found in TESSERA_PG_BINDIR if set, else on PATH, else in Debian's
/usr/lib/postgresql/<version>/bin (newest first). `scripts/setup.sh --tests` installs `postgresql` when
they are missing; TESSERA_SKIP_POSTGRES=1 skips the PostgreSQL variants of the tests instead.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from tessera.chain.devnet import free_port

SKIP_ENV = "TESSERA_SKIP_POSTGRES"
SUPERUSER = "tessera"
PREFIX = "tessera-pg-"
_names = itertools.count(1)


def skip_requested() -> bool:
    return os.environ.get(SKIP_ENV, "").strip() not in ("", "0")


def find_bindir() -> Path | None:
    """The directory that holds initdb, pg_ctl and postgres, or None."""
    if os.environ.get("TESSERA_PG_BINDIR"):
        return Path(os.environ["TESSERA_PG_BINDIR"])
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", path.parent.parent.name))
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version, reverse=True)
    return debian[0].parent if debian else None


def why_unavailable() -> str | None:
    """None when a cluster can be started here, else what is missing and how to get it."""
    bindir = find_bindir()
    if bindir is None or not all((bindir / b).exists() for b in ("initdb", "pg_ctl", "postgres")):
        return ("PostgreSQL's initdb/pg_ctl/postgres were not found (PATH, /usr/lib/postgresql/*/bin, "
                "TESSERA_PG_BINDIR): run scripts/setup.sh --tests (it installs Debian's postgresql), "
                f"or set {SKIP_ENV}=1 to skip the PostgreSQL variants")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: run scripts/setup.sh (pyproject.toml lists psycopg[binary])"
    return None


def _run_as() -> tuple[list[str], int | None, int | None]:
    """(command prefix, uid, gid) for running the server binaries: as root, another user."""
    if os.geteuid() != 0:
        return [], None, None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"], user.pw_uid, user.pw_gid
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists: "
                       "initdb refuses root; create a user or run the tests as one")


class Cluster:
    """One PostgreSQL server in a temporary directory; `url(name)` for databases on it."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.dir: Path | None = None
        self.port = 0
        self._prefix, self._uid, self._gid = _run_as()
        self._admin = None

    @property
    def data(self) -> Path:
        return self.dir / "data"

    def _server(self, binary: str, *args: str, timeout: float = 60) -> None:
        cmd = [*self._prefix, str(self.bindir / binary), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if done.returncode != 0:
            log = self.dir / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{shlex.join(cmd)} failed ({done.returncode}):\n"
                               f"{done.stdout[-2000:]}{done.stderr[-2000:]}{tail}")

    def start(self) -> Cluster:
        self._reap_orphans()
        self.dir = Path(tempfile.mkdtemp(prefix=PREFIX))
        atexit.register(self.stop)
        (self.dir / "owner.pid").write_text(str(os.getpid()))
        if self._uid is not None:
            os.chown(self.dir, self._uid, self._gid)
        self._server("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                     "--locale=C", "--no-sync")
        options = (f"-p {{port}} -k {shlex.quote(str(self.dir))} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=200")
        for attempt in range(3):   # a free port can be taken between the check and the bind
            self.port = free_port()
            try:
                self._server("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w",
                             "-t", "60", "-o", options.format(port=self.port), "start")
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        import psycopg

        self._admin = psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER,
                                      dbname="postgres", autocommit=True)
        return self

    def _reap_orphans(self) -> None:
        """Stop and delete the clusters of test sessions that were killed (SIGKILL skips cleanup)."""
        for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
            try:
                owner = int((folder / "owner.pid").read_text())
                os.kill(owner, 0)
                continue                          # its session still runs
            except ProcessLookupError:
                pass
            except (OSError, ValueError):
                continue                          # not one of ours, or being set up
            orphan = Cluster()
            orphan.dir = folder
            orphan.stop()

    def stop(self) -> None:
        if self.dir is None:
            return
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self._prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m",
                            "immediate", "-w", "stop"], capture_output=True, timeout=60, cwd=self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, hint: str = "db") -> str:
        """A new empty database; returns its name (unique in the session)."""
        name = f"t{next(_names)}_{re.sub(r'[^a-z0-9_]', '_', hint.lower())}"[:63]
        self._admin.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop it even if a test's engine still holds pooled connections to it."""
        self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Databases:
    """Fresh explorer database URLs on one backend ("sqlite" or "postgresql"); `close()` drops
    the PostgreSQL ones (SQLite files go with their temporary directory)."""

    def __init__(self, backend: str, folder: Path, cluster: Cluster | None) -> None:
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"unknown explorer backend {backend!r}")
        self.backend, self.folder, self.cluster = backend, folder, cluster
        self.created: list[str] = []
        self.names: set[str] = set()

    def new(self, name: str = "explorer") -> str:
        if name in self.names:
            raise ValueError(f"database {name!r} was already handed out here")
        self.names.add(name)
        if self.backend == "sqlite":
            return f"sqlite:///{self.folder / f'{name}.db'}"
        database = self.cluster.create_database(name)
        self.created.append(database)
        return self.cluster.url(database)

    __call__ = new

    def close(self) -> None:
        while self.created:
            self.cluster.drop_database(self.created.pop())
