"""Searches shared through a real PostgreSQL server: a throw-away server on 127.0.0.1, several workers.

The server is Debian's ``postgresql`` package (``.ci/run`` installs it when missing), started
here with its own temporary data directory as the ``postgres`` user (the server refuses to
run as root), and stopped at the end whatever happens.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import PROCESS_TIMEOUT, cli_process, wait_until

TINY = ["--image-size", "32", "--val-size", "4", "--batch-size", "2", "--eval-every", "2", "--threads", "1",
        "--model", "cnn", "--model-arg", "num_channels=4", "--quiet"]


def _binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*cmd: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


@pytest.fixture(scope="module")
def postgres_url():
    initdb, server = _binary("initdb"), _binary("postgres")
    if initdb is None or server is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    pytest.importorskip("psycopg")
    root = tempfile.mkdtemp(prefix="texseg-pg-")
    data, sockets = os.path.join(root, "data"), os.path.join(root, "sock")
    os.makedirs(sockets)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres", root], check=True)
    subprocess.run(_as_postgres(initdb, "-D", data, "-A", "trust", "-U", "postgres"), check=True,
                   capture_output=True)
    port = _free_port()
    proc = subprocess.Popen(_as_postgres(server, "-D", data, "-p", str(port), "-k", sockets,
                                         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import psycopg

        def ready() -> bool:
            try:
                psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres").close()
                return True
            except psycopg.OperationalError:
                return False

        wait_until(ready, proc, timeout=120, what="PostgreSQL to accept connections")
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE texseg")
        yield f"postgresql://postgres@127.0.0.1:{port}/texseg"
    finally:
        # pg_ctl's fast shutdown reaches the server itself (runuser does not pass signals on).
        subprocess.run(_as_postgres(_binary("pg_ctl") or "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"),
                       capture_output=True, timeout=120)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def _trials(url: str, study: str = "texseg") -> list:
    import optuna

    return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)


def test_two_search_processes_share_one_postgresql_study(postgres_url, tmp_path):
    common = ["--storage", postgres_url, "--study-name", "shared", "--trials", "4", "--iterations", "4", *TINY]
    with cli_process("search", "--out", str(tmp_path / "a"), *common) as a, \
            cli_process("search", "--out", str(tmp_path / "b"), *common) as b:
        outs = [p.communicate(timeout=PROCESS_TIMEOUT) for p in (a, b)]
    assert [a.returncode, b.returncode] == [0, 0], outs
    done = [t for t in _trials(postgres_url, "shared") if t.state.name == "COMPLETE"]
    assert len(done) == 4 and len({t.number for t in done}) == 4  # exact count, unique numbers
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both processes worked on it


def test_a_killed_worker_is_replaced_and_the_study_resumes(postgres_url, tmp_path):
    out = tmp_path / "k"
    common = ["--storage", postgres_url, "--study-name", "killed", "--out", str(out), *TINY]
    with cli_process("search", "--trials", "2", "--iterations", "100000", "--time-budget", "2", *common) as proc:
        wait_until(lambda: (out / "trials" / "0" / "config.json").exists(), proc, what="trial 0 to train")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    t0 = time.monotonic()
    with cli_process("search", "--trials", "2", "--iterations", "100000", "--time-budget", "2", *common) as proc:
        _, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    assert proc.returncode == 0, err
    states = {t.number: (t.state.name, t.user_attrs.get("status")) for t in _trials(postgres_url, "killed")}
    assert states[0] == ("FAIL", "stale")  # the killed worker's trial: failed, not counted
    assert sorted(s for s, _ in states.values()).count("COMPLETE") == 2  # the study resumed to its total
    assert time.monotonic() - t0 < PROCESS_TIMEOUT
