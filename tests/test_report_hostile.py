"""`texseg report` on hand-edited files, and the page's own policy against scripts it did not write."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest

from conftest import run_main
from texseg.report import render_report


def _run_folder(tmp_path, **summary):
    d = tmp_path / "run"
    d.mkdir()
    (d / "summary.json").write_text(json.dumps({"status": "completed", "model": "cnn", **summary}))
    (d / "config.json").write_text(json.dumps({"model": "cnn"}))
    return d


@pytest.mark.parametrize("fields, needle", [
    ({"warnings": {}}, "'warnings' must be a list, got an object"),
    ({"notes": 5}, "'notes' must be a list, got an integer"),
    ({"val": {"iou": "high"}}, "'val.iou' must be a number, got a string"),
    ({"val": [1]}, "'val' must be an object, got a list"),
    ({"parameters": "many"}, "'parameters' must be an integer, got a string"),
])
def test_a_summary_with_wrong_typed_fields_is_malformed_exit_2(capsys, tmp_path, fields, needle):
    d = _run_folder(tmp_path, **fields)
    code, _, err = run_main(capsys, "report", str(d))
    assert code == 2 and err.count("\n") == 1 and "internal error" not in err, err
    assert f"{d / 'summary.json'}: malformed: {needle}" in err


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def test_the_pages_policy_allows_only_its_own_scripts_by_hash(tmp_path):
    html = render_report(_run_folder(tmp_path, message="<script>alert(1)</script>"))
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html).group(1)
    script_src = re.search(r"script-src ([^;]*)", policy).group(1).split()
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert len(scripts) == 2 and sorted(script_src) == sorted(_sha256(s) for s in scripts)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the user's string stays text
