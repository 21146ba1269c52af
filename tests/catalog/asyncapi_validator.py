"""Runs the official AsyncAPI parser (``tests/catalog/asyncapi/validate.mjs``) on documents.

Its node packages are installed by ``npm ci --prefix tests/catalog/asyncapi``, which
``python -m tests.catalog.asyncapi_validator`` runs when they are missing (tox's ``py311``
environment does, before its tests). Without node or the packages the validation tests skip,
except under ``CI=true``, where they fail: CI always validates.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent / "asyncapi"


def validator_problem() -> str | None:
    """Why the validator cannot run here, or ``None``."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (HERE / "node_modules" / "@asyncapi" / "parser").is_dir():
        return f"the AsyncAPI parser is not installed: run npm ci --prefix {HERE}"
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


def install() -> None:
    """Install the parser's node packages (pinned by package-lock.json) unless they are there."""
    if validator_problem() is None:
        return
    npm = shutil.which("npm")
    if npm is None:
        print("npm is not installed: the AsyncAPI validation tests skip (and fail under CI=true)")
        return
    command = [npm, "ci", "--prefix", str(HERE), "--no-audit", "--no-fund", "--loglevel=error"]
    print("installing the AsyncAPI parser:", " ".join(command), flush=True)
    subprocess.run(command, check=True, timeout=600)


if __name__ == "__main__":
    install()
