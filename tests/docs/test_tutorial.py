"""The tutorial, followed as it is written, in a fresh ``django-admin startproject``.

``docs/tutorial/index.rst`` shows the files of ``docs/tutorial/project/`` (and the event
definitions of ``config/shop/events.py``) with ``literalinclude``; these tests put each one
where the tutorial says, run its commands and its shell sessions (as doctests), run the
project's own tests with pytest, and run its Celery worker against the real RabbitMQ. Every
command runs in a subprocess, with this virtualenv's Python, as a reader's shell would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import amqp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "docs" / "tutorial" / "project"
BIN = Path(sys.executable).parent
TIMEOUT = 120  # for each command: a slow machine must not fail a correct run

#: Where the tutorial tells the reader to put each file: its path in the project, from the
#: file the documentation shows.
FILES = {
    "shop/events.py": ROOT / "config" / "shop" / "events.py",
    "shop/receivers.py": PROJECT / "shop" / "receivers.py",
    "shop/apps.py": PROJECT / "shop" / "apps.py",
    "shop/services.py": PROJECT / "shop" / "services.py",
    "mysite/test_settings.py": PROJECT / "mysite" / "test_settings.py",
    "pytest.ini": PROJECT / "pytest.ini",
    "shop/tests/__init__.py": PROJECT / "shop" / "tests" / "__init__.py",
    "shop/tests/test_orders.py": PROJECT / "shop" / "tests" / "test_orders.py",
    "shop/tests/test_definitions.py": PROJECT / "shop" / "tests" / "test_definitions.py",
}

#: Runs shell sessions (``>>>`` examples) inside ``manage.py shell``, as one doctest.
DOCTEST = """
import doctest, pathlib, sys
text = "\\n".join(pathlib.Path(p).read_text() for p in sys.argv[1:])
test = doctest.DocTestParser().get_doctest(text, {}, "tutorial", None, 0)
runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
runner.run(test, clear_globs=False)
if "order" in test.globs:
    print("order id:", test.globs["order"].id)
sys.exit(1 if runner.failures else 0)
"""


def env() -> dict[str, str]:
    """A reader's environment: this virtualenv first on PATH, nothing of the test suite's."""
    environment = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CELERY_BROKER_URL")
    }
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    environment["PATH"] = os.pathsep.join([str(BIN), environment.get("PATH", "")])
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


def run(command: list[str], cwd: Path, *, stdin: str | None = None) -> str:
    """Run ``command`` in ``cwd``; fail with its output unless it exits with 0."""
    result = subprocess.run(
        command, cwd=cwd, env=env(), input=stdin, capture_output=True, text=True, timeout=TIMEOUT
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output}"
    return output


def manage(project: Path, *args: str) -> str:
    return run([sys.executable, "manage.py", *args], project)


def shell_session(project: Path, *sessions: str) -> str:
    """Run the tutorial's shell sessions (files of ``docs/tutorial/project``) as a doctest."""
    paths = [str(PROJECT / name) for name in sessions]
    return manage(project, "shell", "-c", DOCTEST.replace("sys.argv[1:]", repr(paths)))


def append(path: Path, snippet: Path) -> None:
    with path.open("a") as out:
        out.write("\n" + snippet.read_text())


def build_project(root: Path) -> Path:
    """Steps 0 to 5 of the tutorial, in the empty folder ``root``."""
    run([str(BIN / "django-admin"), "startproject", "mysite", "."], root)
    manage(root, "startapp", "shop")
    (root / "shop" / "tests.py").unlink()  # the tutorial's tests are a package, shop/tests/
    for target, source in FILES.items():
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, root / target)
    append(root / "mysite" / "settings.py", PROJECT / "settings_step1.py")
    manage(root, "migrate")
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_project(tmp_path_factory.mktemp("tutorial"))


def test_the_project_passes_manage_py_check(project):
    assert "System check identified no issues" in manage(project, "check")


def test_the_shell_sessions_print_the_email_and_the_errors(project):
    shell_session(project, "shell_step4.txt", "shell_errors.txt")


def test_the_tutorials_own_tests_pass_with_pytest(project):
    output = run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], project)

    assert "4 passed" in output, output


def wait_for_text(log: Path, text: str, worker: subprocess.Popen[bytes]) -> None:
    """Wait until ``text`` is in the worker's ``log``; fail with the log if it never is."""
    deadline = time.monotonic() + TIMEOUT
    while text not in log.read_text():
        if worker.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the worker never logged {text!r}:\n{log.read_text()[-6000:]}")
        time.sleep(0.1)


def delete_topology(project: Path, url: str) -> None:
    """Delete the exchanges and queues the project's settings name, on the broker at ``url``."""
    names = manage(
        project,
        "shell",
        "-c",
        "import json; from django.conf import settings; "
        "from events_celery.conf import bus_settings; "
        "from events_celery.bus.broker.topology import service_topology; "
        "t = service_topology(bus_settings()); "
        "print(json.dumps({'queues': [q.name for q in t.queues] + "
        "[settings.CELERY_TASK_DEFAULT_QUEUE], 'exchanges': [e.name for e in t.exchanges] + "
        "[q.exchange.name for q in t.queues if q.exchange is not None and q.exchange.name] + "
        "[settings.CELERY_TASK_DEFAULT_QUEUE]}))",
    )
    declared = json.loads(names.strip().splitlines()[-1])
    parts = urlsplit(url)
    connection = amqp.Connection(
        f"{parts.hostname}:{parts.port}", userid=parts.username, password=parts.password
    )
    connection.connect()
    try:
        channel = connection.channel()
        for queue in dict.fromkeys(declared["queues"]):
            channel.queue_delete(queue)
        for exchange in dict.fromkeys(declared["exchanges"]):
            channel.exchange_delete(exchange)
    finally:
        connection.close()


@pytest.fixture
def bus_project(project: Path, tmp_path: Path, rabbitmq_url: str) -> Iterator[Path]:
    """The tutorial's project after step 6, with names of its own on the shared broker."""
    copy = tmp_path / "project"
    shutil.copytree(project, copy)
    shutil.copyfile(PROJECT / "mysite" / "celery.py", copy / "mysite" / "celery.py")
    settings = copy / "mysite" / "settings.py"
    append(settings, PROJECT / "settings_step6.py")
    assert "System check identified no issues" in manage(copy, "check")
    run_id = uuid.uuid4().hex[:8]
    # Not part of the tutorial: names no other run on this broker uses.
    settings.write_text(
        settings.read_text()
        + f"\nCELERY_BROKER_URL = {rabbitmq_url!r}\n"
        + f'EVENT_BUS_SERVICE_NAME = "shop-{run_id}"\n'
        + f'EVENT_BUS_TOPIC_PREFIX = "tutorial-{run_id}."\n'
        + f'CELERY_TASK_DEFAULT_QUEUE = "shop-{run_id}.celery"\n'
    )
    try:
        yield copy
    finally:
        delete_topology(copy, rabbitmq_url)


@pytest.mark.rabbitmq
def test_the_worker_runs_the_receiver_of_an_event_sent_from_the_shell(bus_project, tmp_path):
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [
                str(BIN / "celery"), "-A", "mysite", "worker", "-l", "info",
                "-c", "1", "-n", f"tutorial-{uuid.uuid4().hex[:8]}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=bus_project, env=env(), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_text(log, " ready.", worker)
        output = shell_session(bus_project, "shell_step6.txt")
        [order_id] = [line.split()[-1] for line in output.splitlines() if "order id:" in line]

        wait_for_text(
            log, f"We received your order {order_id} of 12.00 EUR (sent by a worker)", worker
        )
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
