"""Installing the AsyncAPI parser: npm runs in its folder and a failure says how to fix it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.catalog.asyncapi_validator import HERE, install, install_hint

pytestmark = pytest.mark.asyncapi


@pytest.fixture
def unreachable_registry(tmp_path, monkeypatch):
    """A copy of the parser's package files, and npm pointed at a registry that refuses."""
    folder = tmp_path / "asyncapi"
    folder.mkdir()
    for name in ("package.json", "package-lock.json"):
        shutil.copy(HERE / name, folder / name)
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    return folder


def require_npm() -> None:
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")


@pytest.mark.parametrize(("ci", "status"), [("true", 1), ("", 0)])
def test_a_failed_install_names_the_command_and_fails_only_in_ci(
    unreachable_registry: Path, monkeypatch, capsys, ci, status
):
    require_npm()
    monkeypatch.setenv("CI", ci)
    assert install(unreachable_registry) == status
    err = capsys.readouterr().err
    assert "installing the AsyncAPI parser failed" in err
    assert install_hint(unreachable_registry) in err
    assert f"cd {unreachable_registry} && npm ci" in install_hint(unreachable_registry)
    assert not (unreachable_registry / "node_modules").exists()


def test_npm_reads_the_machines_global_configuration(
    unreachable_registry: Path, tmp_path, monkeypatch
):
    """npm runs inside the folder, not with --prefix, which would skip <prefix>/etc/npmrc.

    The machine's global npmrc is where a network's certificate authority or proxy is set; here
    it names a registry that refuses, so the install fails only because that file was read.
    """
    require_npm()
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv("npm_config_registry")
    prefix = tmp_path / "global"
    (prefix / "etc").mkdir(parents=True)
    (prefix / "etc" / "npmrc").write_text("registry=http://127.0.0.1:9/\n")
    monkeypatch.setenv("npm_config_prefix", str(prefix))
    assert install(unreachable_registry) == 1
    assert not (unreachable_registry / "node_modules").exists()
