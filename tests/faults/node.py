"""A private RabbitMQ node on spare ports, for fault tests that stop and restart the broker.

The shared broker on 127.0.0.1:5672 (node ``rabbit@localhost``) is never touched: this node has its
own name, ports, data, logs, config, env file and Erlang cookie, and every CLI call names it with
``-n``. Its cookie is a fresh one in its own ``HOME`` (shared only with the other private nodes of
its cluster, see :mod:`tests.faults.cluster`), so a CLI call made with this node's environment
could not even authenticate against the shared node.

The Debian wrappers in /usr/sbin re-run the scripts as the ``rabbitmq`` user through ``su`` when
called by root, which resets ``HOME`` (so the cookie) and cannot read pytest's 0700 temp dirs; the
real scripts in /usr/lib/rabbitmq/bin are used when they exist.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.faults.tls import TLSFiles

SHARED_NODE = "rabbit@localhost"
HOST = "127.0.0.1"
NODE_PREFIX = "ec-fault-"
# Ports a local RabbitMQ or its CLI use by default (AMQP, dist, management, prometheus, CLI dist).
_RESERVED_PORTS = frozenset({4369, 5671, 5672, 15672, 15692, 25672, *range(35672, 35683)})
_SCRIPT_DIRS = (Path("/usr/lib/rabbitmq/bin"),)

START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
CLI_TIMEOUT = 60.0
PORT_TIMEOUT = 30.0
ALARM_TIMEOUT = 30.0
# set_vm_memory_high_watermark: a fraction of RAM far below what any node uses, and the default.
ALARM_WATERMARK = "0.000001"
DEFAULT_WATERMARK = "0.4"


def _script(name: str) -> str:
    for directory in _SCRIPT_DIRS:
        path = directory / name
        if os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed")
    return found


def _ephemeral_low() -> int:
    try:
        low, _high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low)
    except (OSError, ValueError):
        return 32768


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """Distinct free ports below the kernel's ephemeral range.

    A port the kernel would not hand out as some client's source port stays free while the node's
    listener is closed between stop_app() and start_app().
    """
    high = max(_ephemeral_low(), 21000)
    rng = random.SystemRandom()
    ports: list[int] = []
    for _ in range(1000):
        port = rng.randrange(20000, high)
        if port not in _RESERVED_PORTS and port not in ports and _port_is_free(port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"no {count} free TCP ports on {HOST} in 20000..{high}")


def _port_open(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RabbitMQNode:
    """A RabbitMQ node of its own, started and stopped by the tests that need broker faults."""

    def __init__(
        self,
        base_dir: Path,
        *,
        cookie: str | None = None,
        ports: tuple[int, int] | None = None,
        tls: TLSFiles | None = None,
    ) -> None:
        """A node not started yet.

        Args:
            base_dir: where its directory goes.
            cookie: its Erlang cookie (nodes of one cluster share one); a fresh one by default.
            ports: its AMQP and Erlang distribution ports; free ones by default.
            tls: certificates for a TLS listener too (on ``tls_port``, a free port), which
                verifies every client's certificate (``verify_peer``, ``fail_if_no_peer_cert``)
                and offers EXTERNAL login by the certificate's common name (the
                ``rabbitmq_auth_mechanism_ssl`` plugin, enabled for this node only).
        """
        self.name = f"{NODE_PREFIX}{secrets.token_hex(4)}@localhost"
        if self.name == SHARED_NODE or not self.name.startswith(NODE_PREFIX):
            raise AssertionError(f"refusing to manage node {self.name}")
        self.cookie = cookie or secrets.token_hex(20).upper()
        self.amqp_port, self.dist_port = ports or _free_ports(2)
        self.tls = tls
        self.tls_port = _free_ports(1)[0] if tls is not None else None
        while self.tls_port in (self.amqp_port, self.dist_port):
            self.tls_port = _free_ports(1)[0]
        self.dir = Path(base_dir) / self.name.split("@", 1)[0]
        self.home = self.dir / "home"
        self.mnesia_base = self.dir / "mnesia"
        self.log_base = self.dir / "log"
        self.config_file = self.dir / "rabbitmq.conf"
        self.conf_env_file = self.dir / "rabbitmq-env.conf"
        self.advanced_config_file = self.dir / "advanced.config"
        self.enabled_plugins_file = self.dir / "enabled_plugins"
        self.pid_file = self.dir / f"{self.name}.pid"
        self.crash_dump = self.dir / "erl_crash.dump"
        self.log_file = self.log_base / f"{self.name}.log"
        self.pid: int | None = None
        self._started = False
        self._shut_down = False

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.amqp_port}//"

    def tls_url(self, host: str = "localhost", vhost: str = "") -> str:
        """The ``amqps://`` URL of the TLS listener, without credentials (EXTERNAL login)."""
        if self.tls_port is None:
            raise AssertionError(f"{self!r} has no TLS listener")
        return f"amqps://{host}:{self.tls_port}/{vhost}"

    def __repr__(self) -> str:
        tls = f" tls={self.tls_port}" if self.tls_port is not None else ""
        return f"<RabbitMQNode {self.name} amqp={self.amqp_port} dist={self.dist_port}{tls}>"

    # -- environment -----------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment for rabbitmq-server and every CLI call on this node."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RABBITMQ_", "ERL_"))
        }
        env.update(
            HOME=str(self.home),
            LC_ALL="C.UTF-8",
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS=HOST,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.mnesia_base),
            RABBITMQ_LOG_BASE=str(self.log_base),
            RABBITMQ_CONFIG_FILE=str(self.config_file),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.advanced_config_file),
            # Not /etc/rabbitmq/rabbitmq-env.conf, which names the shared node.
            RABBITMQ_CONF_ENV_FILE=str(self.conf_env_file),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.enabled_plugins_file),
            RABBITMQ_PID_FILE=str(self.pid_file),
            # As the shared node: epmd and Erlang distribution on the loopback interface only.
            ERL_EPMD_ADDRESS=HOST,
            ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_CRASH_DUMP=str(self.crash_dump),
        )
        return env

    def _write_files(self) -> None:
        for directory in (self.home, self.mnesia_base, self.log_base):
            directory.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(self.cookie)
            cookie.chmod(0o400)
        # Not /etc/rabbitmq/rabbitmq.conf, whose listener is the shared node's 127.0.0.1:5672.
        config = f"listeners.tcp.local = {HOST}:{self.amqp_port}\n"
        plugins = ""
        if self.tls is not None:
            config += (
                f"listeners.ssl.local = {HOST}:{self.tls_port}\n"
                f"ssl_options.cacertfile = {self.tls.ca}\n"
                f"ssl_options.certfile = {self.tls.server.cert}\n"
                f"ssl_options.keyfile = {self.tls.server.key}\n"
                "ssl_options.verify = verify_peer\n"
                "ssl_options.fail_if_no_peer_cert = true\n"
                "auth_mechanisms.1 = EXTERNAL\n"
                "auth_mechanisms.2 = PLAIN\n"
                "auth_mechanisms.3 = AMQPLAIN\n"
                "ssl_cert_login_from = common_name\n"
            )
            plugins = "rabbitmq_auth_mechanism_ssl"
        self.config_file.write_text(config)
        self.conf_env_file.write_text("# this node's settings come from its environment\n")
        # No management (15672) or prometheus (15692) listener to fight over; EXTERNAL login
        # for a TLS node (a plugin without a listener).
        self.enabled_plugins_file.write_text(f"[{plugins}].\n")

    # -- commands --------------------------------------------------------------------------------

    def log_tail(self, lines: int = 30, first_errors: int = 12) -> str:
        """The first error lines and the last lines of the node's log and launcher output."""
        parts = []
        for path in (self.log_file, self.dir / "server.out"):
            try:
                all_lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            tail = all_lines[-lines:]
            # A failed boot logs its cause (e.g. eaddrinuse) well before the shutdown chatter.
            errors = [line for line in all_lines[:-lines] if "[error]" in line][:first_errors]
            if errors:
                parts.append(f"--- {path.name}: first errors ---\n" + "\n".join(errors))
            if tail:
                parts.append(f"--- {path.name}: last lines ---\n" + "\n".join(tail))
        if self.crash_dump.exists():
            parts.append(f"--- crash dump written to {self.crash_dump} ---")
        return "\n".join(parts) or "(no log written)"

    def _fail(self, message: str) -> RuntimeError:
        return RuntimeError(f"{self!r}: {message}\n{self.log_tail()}")

    def _cli(
        self, tool: str, *args: str, timeout: float = CLI_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a RabbitMQ CLI tool against this node only (always with -n)."""
        command = [_script(tool), "-n", self.name, *args]
        try:
            result = subprocess.run(
                command,
                env=self.env(),
                cwd=self.dir if self.dir.is_dir() else None,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise self._fail(f"{' '.join(command[1:])} did not finish in {timeout:.0f}s") from exc
        if check and result.returncode != 0:
            raise self._fail(
                f"{tool} {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout.strip()}\n{result.stderr.strip()}"
            )
        return result

    def ctl(self, *args: str, timeout: float = CLI_TIMEOUT) -> str:
        """rabbitmqctl -n <this node> ARGS; its output."""
        return self._cli("rabbitmqctl", *args, timeout=timeout).stdout

    def _wait_port(self, open_: bool, timeout: float = PORT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while _port_open(self.amqp_port) != open_:
            if time.monotonic() > deadline:
                state = "open" if open_ else "close"
                raise self._fail(f"AMQP port {self.amqp_port} did not {state} in {timeout:.0f}s")
            time.sleep(0.1)

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the node detached and wait until it accepts AMQP connections."""
        if self._shut_down:
            raise RuntimeError(f"{self!r} was shut down")
        if self._started:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_files()
        deadline = time.monotonic() + timeout
        self._started = True
        try:
            with (self.dir / "server.out").open("w") as out:
                # -detached forks the VM off; its output goes to a file, never a pipe that the
                # VM would hold open.
                try:
                    launched = subprocess.run(
                        [_script("rabbitmq-server"), "-detached"],
                        env=self.env(),
                        cwd=self.dir,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        timeout=60,
                        check=False,
                    )
                except subprocess.TimeoutExpired as exc:
                    raise self._fail("rabbitmq-server -detached did not return in 60s") from exc
            if launched.returncode != 0:
                raise self._fail(f"rabbitmq-server -detached exited {launched.returncode}")
            self._await_startup(deadline)
            self._wait_port(True, timeout=max(deadline - time.monotonic(), 1.0))
        except BaseException:
            with contextlib.suppress(Exception):
                self._stop_process()
            raise

    def _await_startup(self, deadline: float) -> None:
        # await_startup fails at once while the node has not registered with epmd yet, so retry;
        # give up early if the VM died (a pid file came and went, or a crash dump appeared).
        last = ""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._fail(f"did not start in time; last await_startup said:\n{last}")
            pid = self._read_pid()
            if pid is not None:
                self.pid = pid
            if self.crash_dump.exists() or (self.pid is not None and not _pid_alive(self.pid)):
                raise self._fail("the node's VM exited while starting")
            result = self._cli(
                "rabbitmqctl",
                "await_startup",
                "--timeout",
                str(max(int(remaining), 1)),
                timeout=remaining + 15,
                check=False,
            )
            if result.returncode == 0:
                self.pid = self._read_pid() or self.pid
                return
            last = (result.stdout + result.stderr).strip()
            time.sleep(0.5)

    def stop_app(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the RabbitMQ application (the VM stays up): AMQP connections are refused."""
        self.ctl("stop_app", timeout=timeout)
        self._wait_port(False)

    def start_app(self, timeout: float = START_TIMEOUT) -> None:
        """Start the RabbitMQ application again and wait until the AMQP port accepts."""
        self.ctl("start_app", timeout=timeout)
        self.ctl("await_startup", "--timeout", str(int(timeout)), timeout=timeout + 15)
        self._wait_port(True)

    def running_nodes(self) -> set[str]:
        """The names of the running nodes of this node's cluster, as this node sees them."""
        output = self.ctl("eval", "rabbit_nodes:all_running().")
        return set(re.findall(r"'([^']+@[^']+)'", output))

    def connection_count(self) -> int:
        """How many AMQP client connections this node's listener has (asked of this node)."""
        # list_connections lists those of every node of the cluster: count the ones made to
        # this node's AMQP port.
        output = self.ctl("list_connections", "port", "--no-table-headers", "--quiet")
        return sum(1 for line in output.splitlines() if line.strip() == str(self.amqp_port))

    def memory_alarm(self) -> bool:
        """Whether this node has a local memory alarm set."""
        result = self._cli("rabbitmq-diagnostics", "check_local_alarms", check=False)
        output = result.stdout + result.stderr
        if result.returncode == 0 and "no local alarms" in output:
            return False
        if "Memory alarm" in output:
            return True
        raise self._fail(f"check_local_alarms exited {result.returncode}:\n{output.strip()}")

    def set_memory_alarm(self, on: bool, timeout: float = ALARM_TIMEOUT) -> None:
        """Raise (publishers get connection.blocked and are not read from) or clear the alarm."""
        self.ctl("set_vm_memory_high_watermark", ALARM_WATERMARK if on else DEFAULT_WATERMARK)
        deadline = time.monotonic() + timeout
        while self.memory_alarm() != on:
            if time.monotonic() > deadline:
                state = "set" if on else "cleared"
                raise self._fail(f"the memory alarm was not {state} in {timeout:.0f}s")
            time.sleep(0.2)

    def shutdown(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the node's VM and remove its directory. Idempotent."""
        if self._shut_down:
            return
        self._shut_down = True
        try:
            if self._started:
                self._stop_process(timeout)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _stop_process(self, timeout: float = STOP_TIMEOUT) -> None:
        pid = self.pid or self._read_pid()
        result = self._cli("rabbitmqctl", "shutdown", timeout=timeout, check=False)  # -n <node>
        if pid is None:
            if result.returncode != 0 and self._node_registered():
                output = (result.stdout + result.stderr).strip()
                raise self._fail(
                    f"rabbitmqctl -n {self.name} shutdown failed and the pid is unknown:\n{output}"
                )
            return
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                self._kill(pid)
                break
            time.sleep(0.1)

    def _node_registered(self) -> bool:
        short = self.name.split("@", 1)[0]
        epmd = shutil.which("epmd")
        if epmd is None:
            return False
        try:
            names = subprocess.run(
                [epmd, "-names"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except subprocess.TimeoutExpired:
            return False
        return f"name {short} at" in names

    def _kill(self, pid: int) -> None:
        """Kill this node's VM by its pid, after checking the pid still is this node's VM."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return
        # The VM's command line names no node, but it does name this node's private HOME.
        if str(self.home).encode() not in argv:
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not _pid_alive(pid):
                return
        raise self._fail(f"pid {pid} survived SIGKILL")
