"""Search storage under hostile URLs: passwords never shown, no litter, flags named."""

from __future__ import annotations

import pytest

from conftest import run_main
from texseg.search.settings import SearchSettings
from texseg.search.storage import open_study, redact

TINY = ["--trials", "1", "--iterations", "1", "--image-size", "32", "--val-size", "2", "--batch-size", "2"]


@pytest.mark.parametrize("url, shown", [
    ("postgresql://u:sec/ret@127.0.0.1:1/db", "postgresql://u:***@127.0.0.1:1/db"),
    ("postgresql://u:p@ss@host/db", "postgresql://u:***@host/db"),
    ("postgresql://u:p%40ss@host:5432/db", "postgresql://u:***@host:5432/db"),
    ("mysql+pymysql://a:b@h/d", "mysql+pymysql://a:***@h/d"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
    ("sqlite:///x.db", "sqlite:///x.db"),
    ("runs/study.journal", "runs/study.journal"),
])
def test_redact_hides_the_whole_password(url, shown):
    assert redact(url) == shown


@pytest.mark.parametrize("url, secrets", [
    ("postgresql://u:sec/ret@127.0.0.1:1/db", ["sec/ret", "sec", "ret"]),
    ("postgresql://u:p@ss@127.0.0.1:1/db", ["p@ss", "ss@"]),
])
def test_a_failed_open_never_prints_the_password(capsys, tmp_path, url, secrets):
    code, out, err = run_main(capsys, "search", "--out", str(tmp_path / "e"), "--storage", url, *TINY)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    for secret in secrets:
        assert secret not in err and secret not in out, err
    assert not (tmp_path / "e" / "search.json").exists() or all(
        s not in (tmp_path / "e" / "search.json").read_text() for s in secrets)


def test_an_sqlite_url_without_a_file_names_storage(capsys, tmp_path):
    code, _, err = run_main(capsys, "search", "--out", str(tmp_path / "e"), "--storage", "sqlite:///", *TINY)
    assert code == 2 and err.startswith("texseg: error: --storage 'sqlite:///' names no database file"), err
    assert "PosixPath" not in err


def test_a_failed_sqlite_open_leaves_no_lock_file(tmp_path):
    db = tmp_path / "broken.db"
    db.write_bytes(b"this is not an sqlite database" * 100)
    settings = SearchSettings(tmp_path / "e", storage=f"sqlite:///{db}").validate()
    with pytest.raises(Exception, match="broken.db"):
        open_study(settings, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.db"]
