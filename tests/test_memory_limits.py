"""Memory checks see the limits of the process (RLIMIT_AS) and of its container (cgroup memory.max)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import texseg.device
from conftest import run_main
from texseg.device import _cgroup_available, cpu_available_bytes
from texseg.training.config import TrainConfig


def test_cgroup_v2_limits_of_the_group_and_its_parents(tmp_path):
    leaf = tmp_path / "a" / "b"
    leaf.mkdir(parents=True)
    (tmp_path / "self-cgroup").write_text("0::/a/b\n")
    (leaf / "memory.max").write_text("1000000\n")
    (leaf / "memory.current").write_text("400000\n")
    (tmp_path / "a" / "memory.max").write_text("max\n")
    (tmp_path / "a" / "memory.current").write_text("900000\n")
    assert _cgroup_available(tmp_path, tmp_path / "self-cgroup") == 600_000
    (tmp_path / "a" / "memory.max").write_text("1000000\n")  # the parent is nearly full
    assert _cgroup_available(tmp_path, tmp_path / "self-cgroup") == 100_000


def test_cgroup_v1_limit(tmp_path):
    group = tmp_path / "memory" / "docker" / "x"
    group.mkdir(parents=True)
    (tmp_path / "self-cgroup").write_text("12:cpu,cpuacct:/docker/x\n11:memory:/docker/x\n")
    (group / "memory.limit_in_bytes").write_text(str(6 * 2**30))
    (group / "memory.usage_in_bytes").write_text(str(2**30))
    assert _cgroup_available(tmp_path, tmp_path / "self-cgroup") == 5 * 2**30
    (group / "memory.limit_in_bytes").write_text(str(2**63 - 4096))  # v1's "no limit"
    assert _cgroup_available(tmp_path, tmp_path / "self-cgroup") is None


def test_rlimit_as_bounds_what_is_available():
    code = ("import resource, json; resource.setrlimit(resource.RLIMIT_AS, (6 * 10**9, resource.RLIM_INFINITY)); "
            "import texseg.device as d; "
            "vm = int([l for l in open('/proc/self/status') if l.startswith('VmSize:')][0].split()[1]) * 1024; "
            "print(json.dumps([d.cpu_available_bytes(), vm]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    available, vm = json.loads(out.stdout)
    assert 0 < available <= 6 * 10**9 - vm + 64 * 2**20  # VmSize grows a little after it is read
    if (unlimited := cpu_available_bytes()) is not None:
        assert available <= unlimited + 64 * 2**20 or available < 6 * 10**9


@pytest.fixture
def two_gib_left(monkeypatch):
    monkeypatch.setattr(texseg.device, "_rlimit_as_available", lambda: 2 * 2**30)


def test_train_is_refused_up_front_under_a_process_limit_naming_the_flag(capsys, tmp_path, two_gib_left):
    code, _, err = run_main(capsys, "train", "--image-size", "512", "--val-size", "1200", "--iterations", "1",
                            "--out", str(tmp_path / "run"), "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "only 2.0 GiB is available" in err and "use a smaller --val-size, --image-size or --batch-size" in err
    assert not (tmp_path / "run").exists()


def test_generate_advice_names_its_own_flags(capsys, tmp_path, two_gib_left):
    code, _, err = run_main(capsys, "generate", "--image-size", "4096", "--rows", "40",
                            "--picture", str(tmp_path / "p.png"))
    assert code == 2 and "use a smaller --image-size or --rows" in err and "batch" not in err, err


def test_a_json_suite_too_large_to_generate_is_refused_naming_count(tmp_path, two_gib_left):
    from texseg.benchmark.suites import resolve_suite

    path = tmp_path / "big.json"
    path.write_text(json.dumps({"scene": {"image_size": 256}, "count": 100000}))
    with pytest.raises(ValueError, match=r"suite big: generating its 100000 images of 256x256 needs about .* "
                                         r"use a smaller count"):
        resolve_suite(path).load()


def test_the_training_memory_estimate_builds_the_model_once_per_process_for_the_same_shapes(monkeypatch):
    """An experiment's trials share their model and input sizes: the meta-device count (25 ms) is not
    repeated before every trial (issue 20)."""
    from texseg.training import memory

    built = []
    real = memory.create_model
    monkeypatch.setattr(memory, "create_model", lambda *a, **k: (built.append(a[0]), real(*a, **k))[1])
    memory._model_elements.cache_clear()
    config = TrainConfig(model="cnn", image_size=32, batch_size=2, val_size=4)
    first = memory.estimate_training_bytes(config)
    n = len(built)
    assert memory.estimate_training_bytes(config) == first and len(built) == n  # nothing counted again
    assert memory.estimate_training_bytes(TrainConfig(model="cnn", image_size=64, batch_size=2, val_size=4)) > first
    assert len(built) > n  # another image size is counted anew
