"""The documentation site builds without a warning, and the README's links and commands hold."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_site_builds_strict_with_cli_and_api_reference(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)}
    # subprocess.run kills the build if it outlives its timeout.
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    home = (site / "index.html").read_text()
    # the home page is the README, its links into docs/ made relative (checked by --strict)
    assert "Start here" in home and 'href="tutorials/first-10-minutes/"' in home
    for page in ("tutorials/first-10-minutes", "tutorials/lab-notebook", "how-to/distributed",
                 "explanation/generator", "explanation/reliability", "reference/files", "notebook-reproduction"):
        assert (site / page / "index.html").is_file(), page
    cli = (site / "reference/cli/index.html").read_text()
    # mkdocs-click documents every command of the group, with its options.
    for command in ("texseg train", "texseg predict", "texseg benchmark", "texseg search", "texseg report"):
        assert command in cli, command
    assert "--time-budget" in cli and "--init-from" in cli
    assert "Sentinel" not in cli  # click's "no default" marker is not shown as a default
    api = (site / "reference/api/index.html").read_text()
    # every top-level re-export is rendered from its docstring, e.g. create_model's arguments
    assert 'id="texseg.models.registry.create_model"' in api and "generate_data" in api
    assert 'id="texseg.models.create_model"' in (site / "reference/api/models/index.html").read_text()
    # Sphinx roles in the docstrings are shown as code, not as typed
    assert ":func:" not in (site / "reference/api/experiments/index.html").read_text()


def _relative_links(text: str) -> list[str]:
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [link for link in links if not re.match(r"[a-z]+:|#", link)]


def test_readme_links_exist_and_it_stays_a_front_page() -> None:
    text = README.read_text()
    links = _relative_links(text)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        assert (ROOT / link.split("#")[0]).exists(), link
    assert len(text.splitlines()) <= 160


def test_readme_test_command_is_the_one_ci_runs() -> None:
    ci = (ROOT / ".ci/run").read_text().strip().splitlines()[-1]
    assert ci == 'python -m pip install -e ".[test]" && ruff check && python -m pytest'
    text = README.read_text()
    assert f"\n{ci}\n" in text
    assert "\npython -m pip install -e . && texseg train\n" in text
