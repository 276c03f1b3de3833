"""The browser UI under load: concurrent HTTP clients against one `pops serve`, each checking its own answers.

    .venv/bin/python -m benchmarks.ui_load --models outputs/demo [--clients 8] [--requests 25] [--queue-size 64]
        [--steps 3] [--renderer auto] [--warmup 1] [--rounds 1] [--timeout 120]

Starts `pops serve --models DIR` on a free loopback port (its log and output folder in a temporary folder), then:

1. Warm-up: one equation naming every picture (the operators load, the three pictures are encoded in one batch and
   cached), then every client sends --warmup requests at once; then the server's RSS (VmRSS of its process).
2. Load: --clients gradio_client clients, each in a thread of its own, send --requests requests one after the other
   through the HTTP API, alternating the texturing tab (`/texturing`, two pictures into its slots) and an equation
   (`/equation`: `let t = texturing(a, b)` then `union(t, c)`, three pictures uploaded), each request with a seed
   of its own. The pictures are the models folder's assets/*.png (a `pops demo` folder holds three), else random
   ones; each client takes them in its own order. A request the server refuses because its queue is full
   (gradio_client's QueueError) counts as a refusal and is not retried.
3. Every answer is checked against a direct run of the same equation with the same seed and settings in this
   process (the EquationRunner that `pops.apply(equation, models=DIR, seed=...)` runs): the output embedding (the
   run's downloaded output.safetensors) must be the same bit for bit (same models, same seeds, CPU) and the record
   must carry the request's own seed and a run folder of its own. Bit for bit needs the same picture embeddings on
   both sides: a runner caches each picture's embedding the first time it encodes it, and the encoder's rounding
   depends on the batch it ran in (a picture encoded alone and in a batch of two differ by ~4e-6) and on the number
   of torch threads. So both sides first run the same equation naming all three pictures (step 1; the check on a
   fresh runner), and the check runs with the server's number of torch threads.

Prints, per round, requests, answers, refusals, errors, lost requests, mix-ups, latency p50/p95/max (seconds from
submitting to the downloaded answer, uploads included), answers per second and the server's RSS after it; --rounds N
repeats the load round (is the memory steady, or does it grow with every round?). The same load pattern runs in
tests/test_ui_load.py, on tiny operators.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
OPERATOR_ENDPOINT = "/texturing"
EQUATION = "let t = texturing({a}, {b})\nunion(t, {c})"
PRIME_SEED = 999_999  # the first request's seed: no other request has it
BUSY = "Queue is full"  # the start of gradio_client's QueueError when the server answers 503 (its queue is full)


# ----- what the clients send ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """One request of one client: the endpoint, the pictures it uploads, its seed, and the equation over the
    pictures' file names that a direct `pops.apply` runs to check the answer."""

    client: int
    index: int
    endpoint: str  # "/texturing" or "/equation"
    seed: int
    pictures: tuple[Path, ...]
    equation: str


@dataclass
class Answer:
    """What came back for one request. outcome: "answered" (a record and an output embedding), "refused" (the queue
    was full), "error" (anything else the server or the client said), "lost" (no answer within the timeout) or
    "unsent" (the round's deadline passed first)."""

    request: Request
    outcome: str
    seconds: float = 0.0
    message: str = ""
    output: object = None  # torch.Tensor (num_samples, D) of an answered request
    record: dict | None = None


def plan_requests(clients: int, requests: int, pictures: list[Path], first_seed: int = 0) -> list[list[Request]]:
    """Per client, `requests` requests alternating the texturing tab and the equation (clients start on different
    ones), each with a seed no other request has; client c uses the pictures from its own offset in the list."""
    if len(pictures) < 3:
        raise ValueError("the load needs three pictures")
    plans = []
    for c in range(clients):
        a, b, third = (pictures[(c + k) % len(pictures)] for k in range(3))
        plan = []
        for i in range(requests):
            seed = first_seed + c * requests + i
            if (c + i) % 2 == 0:
                request = Request(c, i, OPERATOR_ENDPOINT, seed, (a, b), f"texturing({a.name}, {b.name})")
            else:
                text = EQUATION.format(a=a.name, b=b.name, c=third.name)
                request = Request(c, i, "/equation", seed, (a, b, third), text)
            plan.append(request)
        plans.append(plan)
    return plans


def prime_request(pictures: list[Path]) -> Request:
    """The first request a server gets: the equation over the first three pictures, which encodes them in one batch
    (and caches them) the same way the check's direct runner does (check_answers)."""
    a, b, c = pictures[:3]
    return Request(-1, 0, "/equation", PRIME_SEED, (a, b, c), EQUATION.format(a=a.name, b=b.name, c=c.name))


def send(client, request: Request, models: str, renderer: str, steps: int, timeout: float) -> Answer:
    """Send one request through gradio_client and wait (at most `timeout` seconds) for its answer."""
    from gradio_client import handle_file
    from gradio_client.utils import QueueError

    from pops.embeddings.io import load_embeddings

    files = [handle_file(str(p)) for p in request.pictures]
    head = (request.equation, files) if request.endpoint == "/equation" else tuple(files)
    settings = (models, renderer, request.seed, 0, steps, 1)  # guidance 0: each operator's own; one sample
    start = time.perf_counter()
    job = None
    try:
        job = client.submit(*head, *settings, api_name=request.endpoint)
        result = job.result(timeout=timeout)
    except QueueError as exc:
        return Answer(request, "refused", time.perf_counter() - start, str(exc))
    except concurrent.futures.TimeoutError:
        if job is not None:
            job.cancel()
        return Answer(request, "lost", time.perf_counter() - start, f"no answer within {timeout:.0f} s")
    except Exception as exc:  # whatever else the client raises is reported, not hidden
        return Answer(request, "error", time.perf_counter() - start, f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - start
    _results, _steps, downloads, record, status = result[:5]
    outputs = [p for p in downloads or [] if Path(p).name == "output.safetensors"]
    if not record or not outputs:
        return Answer(request, "error", seconds, str(status))
    output, _ = load_embeddings(outputs[0])
    return Answer(request, "answered", seconds, str(status).splitlines()[0], output, record)


@contextmanager
def open_clients(url: str, n: int, download_dir: Path):
    """`n` gradio_client clients of the server at `url` (each downloads into download_dir/client-N), closed together
    afterwards (a client's close waits up to a second for its heartbeat thread: in parallel, not one after the
    other)."""
    from gradio_client import Client

    clients = [Client(url, verbose=False, download_files=str(download_dir / f"client-{c}")) for c in range(n)]
    try:
        yield clients
    finally:
        closing = [threading.Thread(target=_close, args=(client,), daemon=True) for client in clients]
        for thread in closing:
            thread.start()
        for thread in closing:
            thread.join(timeout=5)


def _close(client) -> None:
    try:
        client.close()
    except Exception:  # a client whose server is gone has nothing left to release
        pass


def run_round(
    clients: list,
    plans: list[list[Request]],
    models: str,
    *,
    renderer: str = "auto",
    steps: int = 3,
    timeout: float = 120.0,
    deadline: float | None = None,
) -> tuple[list[Answer], float]:
    """Plan c sent by clients[c], each client in its own thread, all starting at once; each sends its requests one
    after the other. Returns every request's answer (in plan order) and the round's wall-clock seconds. A request not
    sent by `deadline` (time.monotonic()) is "unsent"; a client still waiting for an answer `timeout` seconds after
    the deadline (or after the time its requests may take, without one) is given up: its requests are "lost"."""
    answers: list[list[Answer]] = [[] for _ in plans]
    barrier = threading.Barrier(len(plans))

    def work(c: int) -> None:
        barrier.wait(timeout=timeout)
        for request in plans[c]:
            if deadline is not None and time.monotonic() > deadline:
                answers[c].append(Answer(request, "unsent", message="the round's deadline passed"))
                continue
            answers[c].append(send(clients[c], request, models, renderer, steps, timeout))

    threads = [threading.Thread(target=work, args=(c,), daemon=True, name=f"client-{c}") for c in range(len(plans))]
    start = time.perf_counter()
    give_up = time.monotonic() + timeout + (max(map(len, plans)) * timeout if deadline is None else 0)
    if deadline is not None:
        give_up += max(0.0, deadline - time.monotonic())
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.1, give_up - time.monotonic()))
    seconds = time.perf_counter() - start
    out = []
    for c, plan in enumerate(plans):
        got = list(answers[c])
        out += got + [Answer(r, "lost", message="the client was still waiting") for r in plan[len(got) :]]
    return out, seconds


# ----- checking the answers ----------------------------------------------------------------------------------------
def check_answers(
    answers: list[Answer], models: str, pictures: list[Path], *, steps: int = 3, threads: int | None = None
) -> list[str]:
    """Mix-ups: every answered request against a direct run of its own equation and seed (bit for bit), its
    record's seed, and run folders that no two answers share. Returns one line per problem.

    The direct runs: a fresh EquationRunner of `models` (what `pops.apply(equation, models=DIR, seed=...)` runs), over
    the pictures' folder, with `threads` torch threads (None: as they are); it first runs the prime request's
    equation, so that it encodes the pictures in the same batch as the server did with its first request."""
    import torch

    from pops.equation.runner import EquationRunner

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        runner = EquationRunner(models)
        base_dir = pictures[0].parent
        prime = prime_request(pictures)
        runner.run(prime.equation, seed=prime.seed, base_dir=base_dir, num_inference_steps=steps)
        return _check(answers, runner, base_dir, steps)
    finally:
        torch.set_num_threads(before)


def _check(answers: list[Answer], runner, base_dir: Path, steps: int) -> list[str]:
    import torch

    problems, runs = [], {}
    for answer in answers:
        if answer.outcome != "answered":
            continue
        r = answer.request
        who = f"client {r.client} request {r.index} ({r.endpoint}, seed {r.seed})"
        if answer.record.get("seed") != r.seed:
            problems.append(f"{who}: the record's seed is {answer.record.get('seed')}")
        run = answer.record.get("ui_run")
        if run in runs:
            problems.append(f"{who}: run folder {run} also answered {runs[run]}")
        runs[run] = who
        direct = runner.run(r.equation, seed=r.seed, base_dir=base_dir, num_inference_steps=steps).output
        if answer.output.shape != direct.shape:
            problems.append(
                f"{who}: the output is {tuple(answer.output.shape)}, the direct run's {tuple(direct.shape)}"
            )
        elif not torch.equal(answer.output, direct):
            diff = (answer.output - direct).abs().max().item()
            problems.append(f"{who}: the output differs from the direct run of {r.equation!r} (max |diff| {diff:.3g})")
    return problems


# ----- the figures ---------------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of `values`; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary(answers: list[Answer], seconds: float, mixed_up: int = 0) -> dict:
    """Counts per outcome, latency of the answered requests (p50, p95, max) and answers per second."""
    counts = {k: sum(a.outcome == k for a in answers) for k in ("answered", "refused", "error", "lost", "unsent")}
    latency = [a.seconds for a in answers if a.outcome == "answered"]
    return {
        "requests": len(answers),
        **counts,
        "mixed_up": mixed_up,
        "p50_s": percentile(latency, 50),
        "p95_s": percentile(latency, 95),
        "max_s": max(latency, default=math.nan),
        "seconds": seconds,
        "per_s": counts["answered"] / seconds if seconds > 0 else math.nan,
    }


COLUMNS = ("requests", "answered", "refused", "error", "lost", "unsent", "mixed_up", "p50_s", "p95_s", "max_s", "per_s")


def table(rows: dict[str, dict]) -> str:
    """The summaries as a text table, one row per round (with the server's RSS in MiB where the rows have it)."""
    columns = COLUMNS + tuple(c for c in ("rss_mib",) if all(c in row for row in rows.values()))
    lines = [f"{'':10}" + "".join(f"{c:>10}" for c in columns)]
    for name, row in rows.items():
        cells = [f"{row[c]:>10.3f}" if isinstance(row[c], float) else f"{row[c]:>10}" for c in columns]
        lines.append(f"{name:10}" + "".join(cells))
    return "\n".join(lines)


def rss_kib(pid: int) -> int:
    """The resident memory of process `pid` in KiB (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for process {pid}")


# ----- the server ----------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(models: Path, out: Path, queue_size: int, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    """`pops serve` of this checkout on a free loopback port, logging to OUT/serve.log; returns it and its URL once
    its page answers."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.update(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "pops", "serve", "--models", str(models), "--out", str(out / "served")]
    cmd += ["--port", str(port), "--queue-size", str(queue_size)]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "serve.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pops serve exited with {proc.returncode}:\n{(out / 'serve.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return proc, url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"pops serve did not answer within {timeout:.0f} s")


def pictures_for(models: Path, folder: Path) -> list[Path]:
    """Three of the models folder's assets/*.png, copied into `folder`; else three random 64 px pictures."""
    folder.mkdir(parents=True, exist_ok=True)
    assets = sorted((models / "assets").glob("*.png"))
    if len(assets) >= 3:
        return [Path(shutil.copyfile(p, folder / p.name)) for p in assets[:3]]
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / name)
        paths.append(folder / name)
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="a models folder with texturing and union")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25, help="per client")
    parser.add_argument("--warmup", type=int, default=1, help="requests per client before the RSS is first read")
    parser.add_argument("--queue-size", type=int, default=64, help="`pops serve --queue-size`")
    parser.add_argument("--steps", type=int, default=3, help="sampling steps per operator call")
    parser.add_argument("--renderer", default="auto")
    parser.add_argument("--timeout", type=float, default=120, help="seconds a request may wait for its answer")
    parser.add_argument("--rounds", type=int, default=1, help="load rounds one after the other (RSS after each)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the server's log and output here")
    args = parser.parse_args(argv)
    models = args.models.expanduser().resolve()
    missing = [k for k in ("texturing", "union") if not (models / "operators" / k).is_dir()]
    if missing:
        parser.error(f"{models} has no operators/{missing[0]}")

    work = args.keep or Path(tempfile.mkdtemp(prefix="pops-ui-load-"))
    pictures = pictures_for(models, work / "pictures")
    proc, url = start_server(models, work, args.queue_size)
    rows, rss = {}, {}
    try:
        common = dict(renderer=args.renderer, steps=args.steps, timeout=args.timeout)
        with open_clients(url, args.clients, work / "downloads") as clients:
            first, _ = run_round(clients[:1], [[prime_request(pictures)]], str(models), **common)
            if first[0].outcome != "answered":
                raise RuntimeError(f"the first request was not answered: {first[0].message}")
            answers = {}
            rounds = [("warm-up", args.warmup, 10**6)]
            per_round = args.clients * args.requests
            rounds += [
                ("load" if args.rounds == 1 else f"load {r + 1}", args.requests, r * per_round)
                for r in range(args.rounds)
            ]
            for name, n, first_seed in rounds:
                plans = plan_requests(args.clients, n, pictures, first_seed)
                answers[name], seconds = run_round(clients, plans, str(models), **common)
                rss[name] = rss_kib(proc.pid)
                rows[name] = summary(answers[name], seconds)
                rows[name]["rss_mib"] = rss[name] / 1024
        answers["warm-up"] = first + answers["warm-up"]
        for name, got in answers.items():  # after the load: the checks take no CPU from the server's rounds
            problems = check_answers(got, str(models), pictures, steps=args.steps)
            rows[name]["mixed_up"] = len(problems)
            for line in problems[:10] + sorted({a.message for a in got if a.outcome != "answered"})[:10]:
                print(f"  {name}: {line}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"pops serve under load: {models}")
    print(
        f"{args.rounds} x {args.clients} clients x {args.requests} requests (texturing tab and an equation, "
        f"alternating), warm-up {args.clients} x {args.warmup}, queue size {args.queue_size}, {args.steps} steps, "
        f"renderer {args.renderer}, torch threads in the server: its default"
    )
    print(table(rows))
    end = rss[rounds[-1][0]]
    growth = 100 * (end - rss["warm-up"]) / rss["warm-up"]
    print(
        f"server RSS: {rss['warm-up'] / 1024:.1f} MiB after the warm-up, {end / 1024:.1f} MiB at the end "
        f"({growth:+.1f} %)"
    )


if __name__ == "__main__":
    main()
