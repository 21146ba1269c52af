"""Runs the official AsyncAPI parser (``tests/catalog/asyncapi/validate.mjs``) on documents.

Its node packages are installed by ``npm ci`` run inside ``tests/catalog/asyncapi``, which
``python -m tests.catalog.asyncapi_validator`` does when they are missing (tox's ``py311``
environment runs it before its tests). Without node or the packages the validation tests skip,
except under ``CI=true``, where they fail: CI always validates.

npm runs in the folder rather than with ``--prefix``: ``--prefix`` also moves npm's global
configuration file (``<prefix>/etc/npmrc``), so a machine's certificate authority, proxy or
registry set there would not be read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent / "asyncapi"
NPM_CI = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]


def install_hint(folder: Path = HERE) -> str:
    """The shell command that installs the parser's packages by hand."""
    return f"(cd {folder} && {' '.join(NPM_CI)})"


def validator_problem(folder: Path = HERE) -> str | None:
    """Why the validator cannot run here, or ``None``."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (folder / "node_modules" / "@asyncapi" / "parser").is_dir():
        return f"the AsyncAPI parser is not installed: run {install_hint(folder)}"
    return None


def require_validator() -> None:
    """Skip the test when the validator cannot run, or fail it under ``CI=true``."""
    problem = validator_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{problem}; CI validates the AsyncAPI documents and cannot skip it")
    pytest.skip(problem)


def validate(*paths: Path) -> tuple[int, list[dict[str, Any]]]:
    """The parser's exit code and its report on each document."""
    require_validator()
    result = subprocess.run(
        ["node", str(HERE / "validate.mjs"), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode not in (0, 1):
        raise AssertionError(f"the validator failed: {result.stderr}")
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()]


def errors(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The errors and warnings of one document's report."""
    return [d for d in report["diagnostics"] if d["severity"] <= 1]


def install(folder: Path = HERE) -> int:
    """Install the parser's node packages (pinned by package-lock.json) unless they are there.

    Returns the exit status for ``python -m``: 0 when the packages are there (or cannot be, and
    the tests will skip outside CI), 1 when the install failed, with the command to run by hand.
    """
    if validator_problem(folder) is None:
        return 0
    npm = shutil.which("npm")
    in_ci = os.environ.get("CI", "").lower() == "true"
    if npm is None:
        print(
            "npm is not installed: the AsyncAPI validation tests "
            + ("fail (CI=true)" if in_ci else "skip")
            + "; install node and npm (Debian: apt-get install nodejs npm)",
            file=sys.stderr,
        )
        return 1 if in_ci else 0
    print(f"installing the AsyncAPI parser: {install_hint(folder)}", flush=True)
    try:
        result = subprocess.run([npm, *NPM_CI[1:]], cwd=folder, timeout=600, check=False)
        failure = f"exit status {result.returncode}" if result.returncode else None
    except subprocess.TimeoutExpired:
        failure = "no answer within 600 s"
    if failure is None:
        return 0
    print(
        f"installing the AsyncAPI parser failed ({failure}; npm's error is above).\n"
        "npm reads the certificate authority, proxy and registry from its configuration "
        "(npm config get cafile) and from NODE_EXTRA_CA_CERTS, HTTPS_PROXY and npm_config_*,\n"
        "which tox passes on. Fix that, then install by hand and run the tests again:\n"
        f"    {install_hint(folder)}",
        file=sys.stderr,
    )
    return 1 if in_ci else 0


if __name__ == "__main__":
    sys.exit(install())
