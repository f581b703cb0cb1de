"""Starting lavoro's services.

- `python -m shared.runner <service>` (what `lavoro serve <service>` execs, and the Docker image's
  entrypoint): one service in this process. It builds the nameko config from the environment
  (shared.config.service_config), logs as `LOG_FORMAT` says (shared.logs; JSON unless stdout is
  a terminal), upgrades the service's database, runs its ServiceContainer (HTTP, relay,
  consumers) and stops it gracefully on SIGTERM or SIGINT: in flight work finishes,
  unacknowledged messages go back to the broker, the relay stops after its batch and releases
  its lock. A second signal kills at once.
- `Supervisor` (what `lavoro run` uses): every service in a child process of its own, watched;
  SIGTERM/SIGINT to the supervisor stops them all the same graceful way. The children write to
  the supervisor's own stdout; it decides their log format once, from that stdout (a person at
  a terminal reads console lines), and passes it down in `LOG_FORMAT`.
"""

from __future__ import annotations

if __name__ == "__main__":
    # Before anything imports socket or threading: nameko needs the green standard library.
    import warnings

    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    import eventlet

    eventlet.monkey_patch()

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from shared import services  # noqa: E402
from shared.auth import (  # noqa: E402
    TOKENS_FILE_KEY,
    TokenConfigError,
    default_tokens_file,
    hash_token,
    issue_token,
    read_tokens_file,
)
from shared.config import (  # noqa: E402
    DATABASE_URL_KEY,
    LOG_FORMAT_KEY,
    LOG_LEVEL_KEY,
    ConfigError,
    log_format,
    service_config,
)
from shared.db import ROOT  # noqa: E402
from shared.files import narrow_if_present, private_dir  # noqa: E402
from shared.kek import KEK_FILE_KEY, KEK_KEY, Kek, write_kek  # noqa: E402
from shared.ports import PortInUse, check_free  # noqa: E402

DATABASE_SCHEMA_KEY = "DATABASE_SCHEMA"  # as shared.dependencies reads it
WEB_SERVER_KEY = "WEB_SERVER_ADDRESS"
# Where a service listens unless `<SERVICE>_HTTP` says otherwise: this machine only (compose, in
# deploy/, sets 0.0.0.0 for the containers' network).
LOCAL_HOST = "127.0.0.1"
DEV_SUBJECTS = {"operator": "dev-operator", "auditor": "dev-auditor"}


# -- configuration ---------------------------------------------------------------------------


@contextlib.contextmanager
def _env_default(name: str, value: str) -> Iterator[None]:
    if os.environ.get(name):
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


def service_settings(spec: services.ServiceSpec, *, for_http: bool = True) -> dict[str, Any]:
    """The service's nameko config, with its registry port as the default HTTP address.
    `for_http=False`: the caller only wants the database, so a service without a port of its own
    (a test's) needs no `<NAME>_HTTP` either."""
    if spec.port is not None:
        default = f"{LOCAL_HOST}:{spec.port}"
    elif not for_http:
        default = f"{LOCAL_HOST}:0"
    else:
        return service_config(spec.name)
    with _env_default(spec.http_env, default):
        return service_config(spec.name)


def database_of(spec: services.ServiceSpec) -> tuple[str, str | None]:
    """(url, schema) of the service's database, as its EventStore opens it."""
    settings = service_settings(spec, for_http=False)
    return str(settings[DATABASE_URL_KEY]), settings.get(DATABASE_SCHEMA_KEY)


def check_address_free(spec: services.ServiceSpec, address: str) -> None:
    """PortInUse, naming the service, unless it could listen at `address` now."""
    from nameko.web.server import parse_address

    host, port = parse_address(address)
    try:
        check_free(host, port)
    except PortInUse as exc:
        exc.strerror = f"{spec.name} {exc.strerror}"
        raise


def upgrade(spec: services.ServiceSpec) -> str:
    """Migrate the service's database to the newest revision; returns its URL (no password)."""
    from shared.db import make_engine, migrate

    url, schema = database_of(spec)
    engine = make_engine(url, schema=schema)
    try:
        migrate(engine, spec.name)
        return engine.url.render_as_string(hide_password=True)
    finally:
        engine.dispose()


# -- development tokens ------------------------------------------------------------------------


def tokens_file() -> Path:
    return Path(os.environ.get(TOKENS_FILE_KEY) or default_tokens_file())


def dev_token_path(role: str) -> Path:
    """Where `lavoro run` keeps the development token of a role, beside the tokens file."""
    return tokens_file().parent / f"{role}.token"


def read_dev_token(role: str) -> str | None:
    """The development token of `role` ("operator", "auditor") if `lavoro run` wrote one."""
    path = dev_token_path(role)
    return path.read_text(encoding="utf-8").strip() if path.exists() else None


def var_dir() -> Path:
    """lavoro's own folder (`LAVORO_VAR`, default `var/` in the checkout), 0700."""
    return private_dir(os.environ.get("LAVORO_VAR") or ROOT / "var")


def ensure_dev_kek() -> Path | None:
    """The key-encryption key `lavoro run` gives its services when none is configured: made once
    as `var/kek` (0600), kept across runs, and named in `LAVORO_KEK_FILE` for this process (its
    migrations) and its children. None when `LAVORO_KEK_FILE` or `LAVORO_KEK` is set already.

    Development only: it sits on the same disk as the databases it protects. Production gives
    each service its KEK from a secret (deploy/compose.yaml)."""
    if os.environ.get(KEK_FILE_KEY) or os.environ.get(KEK_KEY):
        return None
    path = var_dir() / "kek"
    if not path.exists():
        write_kek(path, Kek.generate())
    narrow_if_present(path)
    os.environ[KEK_FILE_KEY] = str(path)
    return path


def ensure_dev_tokens() -> dict[str, Path]:
    """An operator and an auditor token for the CLI, kept across runs: a token file whose hash
    is still in the tokens file is reused, otherwise a new token is issued (only its hash goes
    into the tokens file; the token itself into `<role>.token`, mode 0600)."""
    file = tokens_file()
    known = {entry.token_sha256 for entry in read_tokens_file(file)} if file.exists() else set()
    written = {}
    for role, subject in DEV_SUBJECTS.items():
        path = dev_token_path(role)
        current = read_dev_token(role)
        if current is None or hash_token(current) not in known:
            token = issue_token(file, subject, role)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(token + "\n")
        narrow_if_present(path)
        narrow_if_present(file)
        written[role] = path
    return written


# -- one service in this process -------------------------------------------------------------


def serve(name: str) -> int:
    """Run one registered service until SIGTERM/SIGINT; 0 after a clean stop, 1 if it died."""
    import eventlet
    import structlog
    from eventlet.event import Event
    from nameko.containers import ServiceContainer

    from shared.green import patch_psycopg
    from shared.logs import configure_logging

    patch_psycopg()
    spec = services.get(name)
    settings = service_settings(spec)
    configure_logging(name, settings.get(LOG_LEVEL_KEY, "INFO"), fmt=settings.get(LOG_FORMAT_KEY))
    log = structlog.get_logger("lavoro.runner")
    try:
        database = upgrade(spec)
        cls = spec.load()
        if getattr(cls, "name", None) != name:
            raise services.RegistryError(
                f"{spec.target} has name {getattr(cls, 'name', None)!r}, registered as {name!r}"
            )
        container = ServiceContainer(cls, settings)
    except Exception:
        # One log line with the traceback; the restart policy (compose) or the operator retries.
        log.exception("service.failed_to_start")
        return 1
    stop: Event = Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if not stop.ready():
            stop.send(signal.Signals(signum).name)
        else:
            log.warning("service.killing", signal=signal.Signals(signum).name)
            eventlet.spawn_n(container.kill)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        container.start()
    except PortInUse as exc:  # a known refusal: one line, no traceback
        log.error("service.failed_to_start", reason=str(exc))
        container.kill()
        return 1
    except Exception:
        log.exception("service.failed_to_start")
        container.kill()
        return 1
    log.info("service.started", http=settings[WEB_SERVER_KEY], database=database, pid=os.getpid())
    watcher = eventlet.spawn(container.wait)
    watcher.link(lambda _gt: stop.ready() or stop.send("died"))
    reason = stop.wait()
    if reason == "died":
        try:
            watcher.wait()
        except Exception:
            log.exception("service.died")
            return 1
        log.error("service.died")
        return 1
    log.info("service.stopping", signal=reason)
    container.stop()
    log.info("service.stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m shared.runner <service>", file=sys.stderr)
        return 2
    try:
        return serve(args[0])
    except (services.UnknownService, services.RegistryError, ConfigError, TokenConfigError) as exc:
        # Configuration: one line, no traceback.
        print(f"lavoro serve: {exc}", file=sys.stderr)
        return 2


# -- every service, each in a process of its own -------------------------------------------------


@dataclasses.dataclass
class Child:
    spec: services.ServiceSpec
    address: str  # its HTTP bind address
    database: str  # its database URL, without password
    process: subprocess.Popen[bytes]


def _die_with_parent() -> None:
    # Linux: if `lavoro run` is killed outright, its children get SIGTERM and stop cleanly.
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def child_environment(spec: services.ServiceSpec, address: str) -> dict[str, str]:
    """The environment of a child serving `spec` at `address`: this process's, with its HTTP
    address, the checkout on the path, and the log format decided here (`LOG_FORMAT`, else by
    whether this process's stdout, which the child writes to, is a terminal)."""
    from shared.logs import default_format

    env = dict(os.environ)
    env[spec.http_env] = address
    # The checkout on the path, so that a child finds `services` (and a test's own service).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env[LOG_FORMAT_KEY] = log_format() or default_format(sys.stdout)
    return env


def spawn(spec: services.ServiceSpec, address: str, database: str) -> Child:
    """Start `python -m shared.runner <service>` serving HTTP at `address`, in a session of its
    own: a Ctrl-C in the terminal reaches only the supervisor, which stops each child once."""
    env = child_environment(spec, address)
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.runner", spec.name],
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    return Child(spec, address, database, process)


def answers(address: str, timeout: float = 1.0) -> bool:
    """Whether an HTTP server answers at `address` (any status counts)."""
    from shared.observability import local_url

    try:
        with urllib.request.urlopen(local_url(address, "/health"), timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


class Supervisor:
    """Starts the children, waits until each answers HTTP, watches them, stops them."""

    def __init__(self, children: list[Child] | None = None) -> None:
        self.children: list[Child] = children or []
        self.stop_requested = threading.Event()
        self.hurry = threading.Event()
        self._previous: dict[int, Any] = {}

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, _signum: int, _frame: Any) -> None:
        if self.stop_requested.is_set():
            self.hurry.set()  # a second Ctrl-C: do not wait for the children's graceful stop
        self.stop_requested.set()

    def start(self, spec: services.ServiceSpec, address: str, database: str) -> Child:
        child = spawn(spec, address, database)
        self.children.append(child)
        return child

    def wait_until_serving(self, timeout: float) -> Child | None:
        """None once every child answers HTTP; else the first child that exited (or still does
        not answer at the deadline, or every child if a stop was asked for meanwhile)."""
        deadline = time.monotonic() + timeout
        waiting = list(self.children)
        while waiting:
            for child in list(waiting):
                if child.process.poll() is not None:
                    return child
                if answers(child.address, timeout=0.5):
                    waiting.remove(child)
            if not waiting:
                return None
            if time.monotonic() > deadline or self.stop_requested.wait(0.1):
                return waiting[0]
        return None

    def watch(self, poll: float = 0.2) -> Child | None:
        """Block until a stop is asked for (None) or a child exits on its own (that child)."""
        while not self.stop_requested.is_set():
            for child in self.children:
                if child.process.poll() is not None:
                    return child
            self.stop_requested.wait(poll)
        return None

    def stop(self, timeout: float = 30.0) -> dict[str, int]:
        """SIGTERM to every running child, wait up to `timeout` (less after a second signal),
        then SIGKILL what is left. Returns each child's exit code."""
        for child in self.children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes = {}
        for child in self.children:
            while child.process.poll() is None:
                if self.hurry.is_set() or time.monotonic() > deadline:
                    child.process.kill()
                    child.process.wait()
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(timeout=0.1)
            codes[child.spec.name] = int(child.process.returncode)
        return codes


if __name__ == "__main__":
    sys.exit(main())
