"""Faults: a `pops demo` killed with SIGKILL leaves no worker running and a rerun completes; a damaged demo operator
is trained again; folders appear only once complete; a full disk is one clear error with the earlier files intact."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pops.base.files import write_folder
from pops.embeddings.io import load_embeddings, save_embeddings
from pops.embeddings.pairs import Pairs
from tests.helpers.cli import run_cli
from tests.helpers.models import models_folder
from tests.helpers.priors import picture_operator
from tests.helpers.processes import pops_env

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class MeanColour:
    """A 3-d image "encoder": a picture's mean colour."""

    dim, encoder_id = 3, "test-mean-colour"

    def encode(self, images, batch_size=32, progress=False):
        return torch.tensor([[float(v) for v in im.resize((1, 1)).getpixel((0, 0))] for im in images])


# ----- killing the demo --------------------------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_a_killed_demo_leaves_no_worker_behind_and_a_rerun_completes(tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "pops", "demo", "--quick", "--operator", "union", "--steps", "20"]
    command += ["--no-progress", "-o", str(out)]
    env = pops_env(OMP_NUM_THREADS="1")
    demo = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, workers = time.monotonic() + 600, []
        while time.monotonic() < deadline and demo.poll() is None:
            # The operators + decoder stage: two spawned workers (the resource tracker is a child too).
            workers = [p for p in children(demo.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
            if len(workers) == 2:
                break
            time.sleep(0.5)
        assert len(workers) == 2, "the demo never started its worker processes"
        time.sleep(5)  # the workers are starting or training
        demo.send_signal(signal.SIGKILL)
        demo.wait(timeout=30)
        # The kernel ends an armed worker at once; one still starting up exits in its initializer (on a loaded
        # machine a spawned interpreter can take a while to get there).
        deadline = time.monotonic() + 90
        while any(alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(p) for p in workers), "worker processes outlived the killed demo"
    finally:
        if demo.poll() is None:
            demo.kill()
    operator = out / "operators" / "union"
    saved = (operator / "pops_config.json").is_file()
    assert saved or not operator.exists()  # whole, or not there at all
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    # The rerun trains what the killed run did not finish, and reuses an operator it saved whole (its worker may
    # finish the 20 steps before the kill while the other one trains the decoder).
    trained = "operators trained: union" in rerun.stdout
    assert trained != saved and (out / "report.html").is_file()
    assert not [p for p in (out / "operators").iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_a_failure_while_encoding_stops_the_decoder_started_beside_it(tmp_path, monkeypatch):
    """The decoder starts training in a worker as soon as the class galleries are encoded; when the rest of the
    encoding then fails, the demo fails at once — it neither waits for the decoder nor leaves its worker running."""
    import pops.demo.run as demo_run
    from pops.demo import quick_config

    def broken(*args, **kwargs):
        time.sleep(3)  # the decoder's worker is up and training
        raise RuntimeError("encoding failed")

    monkeypatch.setattr(demo_run, "build_data", broken)
    # Thousands of decoder steps: minutes of training, were it waited for.
    config = quick_config(out=tmp_path / "demo", progress=False, operators=("union",), decoder_steps=20_000)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="encoding failed"):
        demo_run.run_demo(config)
    assert time.monotonic() - start < 90
    deadline = time.monotonic() + 30
    while spawned_workers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not spawned_workers(), "the decoder's worker outlived the failed demo"
    assert not (config.out / "renderers" / "decoder").exists()


def spawned_workers() -> list[int]:
    """This process's live worker processes (spawned by multiprocessing)."""
    workers = []
    for pid in children(os.getpid()):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes() and alive(pid):
                workers.append(pid)
        except OSError:
            continue
    return workers


# ----- a damaged demo operator -------------------------------------------------------------------------------------
def tiny_demo_data(n: int = 16):
    from pops.evaluation.testsets import OperatorData

    g = torch.Generator().manual_seed(0)
    slots = [torch.randn(n, 1280, generator=g).abs() for _ in range(2)]
    train = Pairs("union", slots, torch.ones(n, 2, dtype=torch.bool), sum(slots) / 2, class_ids=torch.arange(n) % 4)
    return OperatorData("union", list("abcd"), train, {}, list("abcd"), torch.randn(4, 1280), validation=None)


def test_a_truncated_demo_operator_is_detected_and_trained_again(tmp_path, capsys):
    from pops.demo import DemoConfig
    from pops.demo.operators import TRAIN_RECORD, train_operator

    config = DemoConfig(
        out=tmp_path, operators=("union",), steps=2, batch_size=4, width=64, layers=1, warmup_steps=0, recombine=1
    )
    config.progress, config.bf16 = False, False
    data = tiny_demo_data()
    _, fresh = train_operator(config, "union", data, {})
    folder = tmp_path / "operators" / "union"
    assert fresh and (folder / TRAIN_RECORD).is_file()  # the record is written with the operator, in one folder
    assert train_operator(config, "union", data, {})[1] is False  # unchanged: reused
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    op, fresh = train_operator(config, "union", data, {})
    assert fresh and "training it again" in capsys.readouterr().err
    assert op.embedding_dim == 1280 and train_operator(config, "union", data, {})[1] is False


# ----- folders appear whole ----------------------------------------------------------------------------------------
def test_a_folder_appears_only_once_complete_and_a_failed_write_changes_nothing(tmp_path):
    def broken(tmp: Path) -> None:
        (tmp / "weights").write_text("half")
        raise KeyboardInterrupt  # killed half way (Ctrl-C; SIGKILL leaves a temporary that the next write removes)

    with pytest.raises(KeyboardInterrupt):
        write_folder(tmp_path / "op", broken, commit="config")
    assert list(tmp_path.iterdir()) == []
    write_folder(tmp_path / "op", lambda tmp: [(tmp / n).write_text(n) for n in ("weights", "config")], commit="config")
    (tmp_path / "op" / "checkpoints").mkdir()  # a training run's other files
    before = files_under(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        write_folder(tmp_path / "op", broken, commit="config")
    assert files_under(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["op"]
    stale = tmp_path / ".tmp-op.999999999-deadbeef.part"  # left by a killed process
    stale.mkdir()
    write_folder(tmp_path / "op", lambda tmp: (tmp / "config").write_text("new"), commit="config")
    assert not stale.exists() and (tmp_path / "op" / "config").read_text() == "new"
    assert (tmp_path / "op" / "weights").read_text() == "weights" and (tmp_path / "op" / "checkpoints").is_dir()


# ----- a full disk -------------------------------------------------------------------------------------------------
def test_a_full_disk_while_writing_embeddings_is_one_line_and_keeps_the_earlier_file(
    tiny_operator, tmp_path, monkeypatch
):
    op = tiny_operator("texturing").save_pretrained(tmp_path / "op")
    a = save_embeddings(tmp_path / "a.safetensors", torch.randn(1, 32))
    out = tmp_path / "out.safetensors"
    args = ["apply", str(a), str(a), "-m", str(op), "--steps", "2", "-o", str(out)]
    assert run_cli(*args).exit_code == 0
    before = files_under(tmp_path)
    monkeypatch.setattr("pops.embeddings.io.save_file", no_space)
    result = run_cli(*args, "--seed", "7", "--overwrite")
    assert result.exit_code != 0 and (result.exception is None or isinstance(result.exception, SystemExit))
    errors = [line for line in result.output.splitlines() if line.startswith("error")]  # (after the progress bar)
    assert errors == [f"error: cannot write {out}: No space left on device"] and "Traceback" not in result.output
    assert files_under(tmp_path) == before  # the earlier output intact, no temporary left


def test_a_full_disk_while_saving_an_operator_keeps_the_earlier_one(tiny_operator, tmp_path, monkeypatch):
    from pops.operators.operator import Operator

    folder = tiny_operator("union", seed=1).save_pretrained(tmp_path / "op")
    before = files_under(tmp_path)
    monkeypatch.setattr("pops.operators.folder.save_file", no_space)
    with pytest.raises(OSError, match="No space left on device") as full:
        tiny_operator("union", seed=2).save_pretrained(folder)
    assert "model.safetensors" in str(full.value) and "\n" not in str(full.value)
    assert files_under(tmp_path) == before
    monkeypatch.undo()
    assert Operator.from_pretrained(folder).spec.kind == "union"


def test_a_full_disk_while_caching_embeddings_keeps_the_earlier_shards(tmp_path, monkeypatch):
    from PIL import Image

    from pops.embeddings.cache import EmbeddingCache

    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    EmbeddingCache(tmp_path, MeanColour()).encode([red], progress=False)
    before = files_under(tmp_path)
    monkeypatch.setattr(Path, "write_bytes", no_space)
    with pytest.raises(OSError, match="cannot write .*shard-.*: No space left on device"):
        EmbeddingCache(tmp_path, MeanColour()).encode([red, blue], progress=False)
    monkeypatch.undo()
    assert files_under(tmp_path) == before
    cache = EmbeddingCache(tmp_path, MeanColour())
    assert red in cache and blue not in cache and cache.stats.discarded_shards == 0


def test_a_full_disk_while_writing_a_report_keeps_the_earlier_one(tmp_path, monkeypatch):
    models = models_folder(tmp_path / "models", picture_operator())
    report = tmp_path / "table.json"
    args = ["eval", "--models", str(models), "--seeds", "1", "--steps", "2", "-o", str(report)]
    assert run_cli(*args).exit_code == 0
    before = files_under(tmp_path)
    monkeypatch.setattr(Path, "write_bytes", no_space)
    result = run_cli(*args, "--overwrite")
    monkeypatch.undo()
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1] == f"error: cannot write {report}: No space left on device"
    assert files_under(tmp_path) == before


def test_embeddings_written_before_the_fault_still_load(tmp_path, monkeypatch):
    path = save_embeddings(tmp_path / "e.safetensors", torch.ones(2, 4))
    monkeypatch.setattr("pops.embeddings.io.save_file", no_space)
    with pytest.raises(OSError):
        save_embeddings(path, torch.zeros(2, 4))
    monkeypatch.undo()
    assert torch.equal(load_embeddings(path)[0], torch.ones(2, 4))


# ----- a real full disk: a small tmpfs ------------------------------------------------------------------------------
class SmallDisk:
    """A folder on a small tmpfs (tests run as root, here and in CI). Where mounting is refused (no root), the same
    test runs on the simulated fault instead: `fill` then patches the given writers to raise ENOSPC."""

    def __init__(self, folder: Path, monkeypatch):
        self.folder, self.monkeypatch = folder, monkeypatch
        folder.mkdir()
        mount = ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)]
        self.mounted = subprocess.run(mount, capture_output=True).returncode == 0

    def fill(self, *fallback_targets: str) -> None:
        """Take every free byte (a filler file written until ENOSPC), or patch `fallback_targets` where unmounted."""
        if not self.mounted:
            for target in fallback_targets:
                self.monkeypatch.setattr(target, no_space)
            return
        with open(self.folder / "filler", "wb", buffering=0) as fh:
            for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
                try:
                    while True:
                        fh.write(b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC

    def files(self) -> dict[str, bytes]:
        return {k: v for k, v in files_under(self.folder).items() if k != "filler"}

    def release(self) -> None:
        self.monkeypatch.undo()
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.folder)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    disk = SmallDisk(tmp_path / "disk", monkeypatch)
    try:
        yield disk
    finally:
        disk.release()


def test_a_real_full_disk_while_caching_embeddings_keeps_the_earlier_shards(small_disk):
    from PIL import Image

    from pops.embeddings.cache import EmbeddingCache

    red = Image.new("RGB", (8, 8), "red")
    others = [Image.new("RGB", (8, 8), (i, 0, 0)) for i in range(200)]
    EmbeddingCache(small_disk.folder, MeanColour()).encode([red], progress=False)
    before = small_disk.files()
    small_disk.fill("pathlib.Path.write_bytes")
    with pytest.raises(OSError, match="No space left on device") as full:
        EmbeddingCache(small_disk.folder, MeanColour(), shard_size=8).encode(others, progress=False)
    assert "\n" not in str(full.value)
    assert small_disk.files() == before  # the earlier shard whole, no temporary left
    small_disk.monkeypatch.undo()
    cache = EmbeddingCache(small_disk.folder, MeanColour())
    assert red in cache and cache.stats.discarded_shards == 0


def test_a_real_full_disk_while_saving_an_operator_keeps_the_earlier_one(tiny_operator, small_disk):
    from pops.operators.operator import Operator

    folder = tiny_operator("union", seed=1).save_pretrained(small_disk.folder / "op")
    before = small_disk.files()
    small_disk.fill("pops.operators.folder.save_file")
    with pytest.raises(OSError, match="No space left on device") as full:
        tiny_operator("union", seed=2).save_pretrained(folder)
    assert "\n" not in str(full.value)
    assert small_disk.files() == before
    small_disk.monkeypatch.undo()
    assert Operator.from_pretrained(folder).spec.kind == "union"


def test_a_real_full_disk_while_writing_a_report_keeps_the_earlier_one(tmp_path, small_disk):
    models = models_folder(tmp_path / "models", picture_operator())
    report = small_disk.folder / "table.json"
    args = ["eval", "--models", str(models), "--seeds", "1", "--steps", "2", "-o", str(report)]
    assert run_cli(*args).exit_code == 0
    before = small_disk.files()
    small_disk.fill("pathlib.Path.write_bytes")
    result = run_cli(*args, "--overwrite")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == f"error: cannot write {report}: No space left on device"
    assert small_disk.files() == before
