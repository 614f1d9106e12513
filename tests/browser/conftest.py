"""Browser tests: the real ASGI app under daphne, driven by headless Chromium through Playwright.

Each live server is a `daphne infrai.asgi:application` subprocess on a free loopback port, with
its own migrated database (a SQLite file, or a PostgreSQL database named after DATABASE_URL's)
and e-mail written to files that the `mailbox` fixture reads. Chromium is Debian's
(/usr/bin/chromium, see devtools/browser_deps.sh); Playwright never downloads a browser.

Without Chromium, Playwright or Node.js the tests skip, except under CI=true, where they fail.
Screenshots of every step land in build/screenshots/<test-name>-<nn>-<step>.png.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCREENSHOTS = REPO / "build" / "screenshots"
OIDC_DIR = REPO / "devtools" / "oidc"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SERVER_SETTINGS = "tests.browser.server_settings"
START_TIMEOUT = 60.0  # generous: other test suites may be loading the machine

OIDC_CLIENT_ID = "infrai-console-browser-tests"
OIDC_CLIENT_SECRET = "browser-tests-" + uuid.uuid4().hex


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail under CI=true: CI must never pass by skipping the browser tests."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true, so browser tests fail instead of skipping)", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.browser)


_reports_key = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    item.stash.setdefault(_reports_key, {})[report.when] = report
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_reports_key, {})
    return any(r.failed for r in reports.values())


# --- Processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class Database:
    """A database of its own for one live server; `env` points the settings at it."""

    env: dict[str, str]
    drop: Callable[[], None] = lambda: None

    @classmethod
    def create(cls, workdir: Path, label: str) -> Database:
        url = os.environ.get("DATABASE_URL", "")
        if not url:
            return cls(env={"SQLITE_PATH": str(workdir / "db.sqlite3")})
        return cls._postgres(url, label)

    @classmethod
    def _postgres(cls, url: str, label: str) -> Database:
        import psycopg
        from psycopg import sql

        parts = urlsplit(url)
        base_name = parts.path.lstrip("/") or "postgres"
        # Named after DATABASE_URL's like pytest-django's test_<name>, plus the pid so that two
        # runs at once never drop each other's database.
        name = f"test_{base_name}_browser_{label}_{os.getpid()}"[:63]
        admin_url = urlunsplit(parts._replace(path="/postgres"))
        ident = sql.Identifier(name)

        def drop() -> None:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))

        drop()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        return cls(env={"DATABASE_URL": urlunsplit(parts._replace(path="/" + name))}, drop=drop)


@dataclass
class LiveServer:
    """`daphne infrai.asgi:application` on 127.0.0.1:<port>, against its own database."""

    url: str
    workdir: Path
    mail_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    database: Database
    env: dict[str, str] = field(repr=False)
    worker: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(
        cls,
        workdir: Path,
        label: str,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
        with_worker: bool = False,
    ) -> LiveServer:
        """daphne, plus (`with_worker`) one `manage.py db_worker` running batch and video jobs."""
        port = port or free_port()
        url = f"http://127.0.0.1:{port}"
        mail_dir = workdir / "mail"
        mail_dir.mkdir(parents=True, exist_ok=True)
        database = Database.create(workdir, label)
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": SERVER_SETTINGS,
            "PYTHONUNBUFFERED": "1",
            "INFRAI_VAR_DIR": str(workdir / "var"),
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": str(mail_dir),
            "SITE_URL": url,
            # Every browser request comes from 127.0.0.1; the per-IP limit is tested elsewhere.
            "MAGIC_LINK_PER_IP_PER_HOUR": "10000",
            **database.env,
            **(extra_env or {}),
        }
        log_path = workdir / "server.log"
        try:
            migrate = subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput"],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if migrate.returncode != 0:
                raise RuntimeError(f"manage.py migrate failed:\n{migrate.stdout}\n{migrate.stderr}")
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "daphne",
                        "-b",
                        "127.0.0.1",
                        "-p",
                        str(port),
                        "--access-log",
                        "-",
                        "infrai.asgi:application",
                    ],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            worker = None
            if with_worker:
                with (workdir / "worker.log").open("wb") as log:
                    worker = subprocess.Popen(
                        [
                            sys.executable,
                            "manage.py",
                            "db_worker",
                            "--no-reload",
                            "--interval",
                            "0.2",
                            "--worker-id",
                            f"browser-{label}",
                        ],
                        cwd=REPO,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
        except BaseException:
            database.drop()
            raise
        server = cls(url, workdir, mail_dir, log_path, process, database, env, worker)
        server._wait_until_ready()
        return server

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                log = _tail(self.log_path)
                error = PortTaken if "Address already in use" in log else RuntimeError
                raise error(f"daphne exited with {self.process.returncode}:\n{log}")
            try:
                if httpx.get(self.url + "/login/", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"daphne did not answer {self.url}/login/ within {START_TIMEOUT:.0f}s:\n{_tail(self.log_path)}"
        )

    def stop(self) -> None:
        _stop(self.process)
        if self.worker is not None:
            _stop(self.worker)
        self.database.drop()


class PortTaken(RuntimeError):
    """Another process took the free port between our probe and daphne's bind."""


T = TypeVar("T")


def retry_on_port_clash(start: Callable[[], T], attempts: int = 3) -> T:
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except PortTaken:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


# Logs of the processes started for these tests, printed when a test fails.
_logs: dict[str, Path] = {}


@pytest.fixture(scope="session")
def browser_workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="infrai-browser-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# Not named `live_server`: pytest-django would set up its own test database for that name.
@pytest.fixture(scope="session")
def console_server(browser_workdir: Path) -> Iterator[LiveServer]:
    server = retry_on_port_clash(lambda: LiveServer.start(browser_workdir / "main", "main", with_worker=True))
    _logs[f"console at {server.url}"] = server.log_path
    _logs["job worker"] = server.workdir / "worker.log"
    yield server
    server.stop()


@pytest.fixture(scope="session")
def live_url(console_server: LiveServer) -> str:
    return console_server.url


# --- Browser ----------------------------------------------------------------------------------


# Module scope, not session: while sync Playwright runs, its event loop counts as running in this
# thread, so Django refuses database calls here; tests in other modules must not inherit that.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing: run devtools/browser_deps.sh (apt-get install chromium) as root")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed: .venv/bin/pip install playwright")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, screenshot: Screenshots) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-US")
    context.set_default_timeout(15_000)
    page = context.new_page()
    # Problems a user would see as a broken page: uncaught JavaScript errors, unloaded CSS/JS.
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"JavaScript error on {page.url}: {error}"))
    page.on(
        "response",
        lambda response: (
            problems.append(f"{response.status} for {response.url}")
            if "/static/" in response.url and response.status >= 400
            else None
        ),
    )
    page.on(
        "requestfailed",
        # ERR_ABORTED is a load cut short by the test moving on to the next page, not a problem.
        lambda req: (
            problems.append(f"request failed: {req.url} ({req.failure})")
            if "/static/" in req.url and "ERR_ABORTED" not in (req.failure or "")
            else None
        ),
    )
    yield page
    failed = _failed(request)
    if failed:
        try:
            screenshot(page, "failure")
        except Exception as exc:  # noqa: BLE001 - a failed screenshot must not hide the real failure
            print(f"could not save the failure screenshot: {exc}")
        print(f"page at failure: {page.url}")
        print("\n".join(problems))
        for name, path in _logs.items():
            print(f"--- last lines of the log of the {name} ({path}) ---\n{_tail(path)}")
    context.close()
    if problems and not failed:
        pytest.fail("the pages had problems:\n" + "\n".join(problems), pytrace=False)


class Screenshots:
    """`screenshot(page, "step")` saves build/screenshots/<test-name>-<nn>-<step>.png."""

    def __init__(self, test_name: str) -> None:
        self.prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self.count = 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for old in SCREENSHOTS.glob(f"{self.prefix}-*.png"):
            old.unlink()

    def __call__(self, page: Page, step: str) -> Path:
        self.count += 1
        path = SCREENSHOTS / f"{self.prefix}-{self.count:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', step)}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Screenshots:
    return Screenshots(request.node.name)


# --- Mail -------------------------------------------------------------------------------------


class Mailbox:
    """The live server's outgoing mail, as written by Django's file-based e-mail backend."""

    LINK = re.compile(r"https?://\S+/login/magic/[^/\s]+/")

    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = mail_dir

    def messages(self) -> list[EmailMessage]:
        found: list[tuple[float, int, EmailMessage]] = []
        for path in self.mail_dir.glob("*.log"):
            # One file per connection; messages in it are separated by a line of 79 dashes.
            for index, chunk in enumerate(path.read_bytes().split(b"\n" + b"-" * 79 + b"\n")):
                if chunk.strip():
                    message = message_from_bytes(chunk.lstrip(), policy=policy.default)
                    assert isinstance(message, EmailMessage)
                    found.append((path.stat().st_mtime, index, message))
        return [message for *_, message in sorted(found, key=lambda item: item[:2])]

    def latest(self, to: str, timeout: float = 10.0) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while True:
            mine = [m for m in self.messages() if to.lower() in str(m.get("To", "")).lower()]
            if mine:
                return mine[-1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no e-mail to {to} in {self.mail_dir} after {timeout:.0f}s")
            time.sleep(0.1)

    def link(self, to: str) -> str:
        message = self.latest(to)
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        match = self.LINK.search(text)
        assert match, f"no sign-in link in the e-mail to {to}:\n{text}"
        return match.group(0)


@pytest.fixture
def mailbox(console_server: LiveServer) -> Mailbox:
    return Mailbox(console_server.mail_dir)


# --- OpenID Connect provider (devtools/oidc) --------------------------------------------------


@dataclass
class OidcProvider:
    issuer: str
    client_id: str
    client_secret: str
    process: subprocess.Popen[bytes]
    log_path: Path


def start_oidc_provider(workdir: Path, redirect_uri: str) -> OidcProvider:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        unavailable("Node.js and npm are needed for the OpenID Connect provider (devtools/oidc)")
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=OIDC_DIR, capture_output=True, text=True, timeout=600
        )
        if installed.returncode != 0:
            raise RuntimeError(f"npm ci in {OIDC_DIR} failed:\n{installed.stdout}\n{installed.stderr}")
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "oidc.log"
    argv = [node, str(OIDC_DIR / "server.js"), "--port", "0", "--client-id", OIDC_CLIENT_ID]
    argv += ["--client-secret", OIDC_CLIENT_SECRET, "--redirect-uri", redirect_uri]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, cwd=OIDC_DIR, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        match = re.search(r"OIDC provider ready: (\S+)", log_path.read_text(errors="replace"))
        if match:
            return OidcProvider(match.group(1), OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, process, log_path)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    _stop(process)
    raise RuntimeError(f"the OpenID Connect provider did not start:\n{_tail(log_path)}")


@dataclass
class OidcSetup:
    provider: OidcProvider
    server: LiveServer


@pytest.fixture(scope="session")
def oidc(browser_workdir: Path) -> Iterator[OidcSetup]:
    """A console live server signing in through a loopback OpenID Connect provider."""
    workdir = browser_workdir / "oidc"

    def start() -> OidcSetup:
        # The provider must know the console's redirect URI, and the console the provider's
        # issuer: so the console's port is chosen first.
        port = free_port()
        provider = start_oidc_provider(workdir, f"http://127.0.0.1:{port}/auth/complete/oidc/")
        try:
            server = LiveServer.start(
                workdir,
                "oidc",
                port=port,
                extra_env={
                    "SOCIAL_AUTH_OIDC_ENDPOINT": provider.issuer,
                    "SOCIAL_AUTH_OIDC_KEY": provider.client_id,
                    "SOCIAL_AUTH_OIDC_SECRET": provider.client_secret,
                    "SIGNUP_GRANT_PROVIDERS": "oidc,google-oauth2,github",
                },
            )
        except BaseException:
            _stop(provider.process)
            raise
        return OidcSetup(provider, server)

    setup = retry_on_port_clash(start)
    provider, server = setup.provider, setup.server
    _logs[f"OIDC provider at {provider.issuer}"] = provider.log_path
    _logs[f"console at {server.url} (OIDC)"] = server.log_path
    yield setup
    server.stop()
    _stop(provider.process)
