"""The benchmark loop: fire each request at its scheduled time, record, summarise.

    schedule (arrivals.py) ──► dispatcher ──► client.send (one task per request)
                                                  │ on completion, at once:
                                                  ▼
                                 requests.jsonl  (one line per finished request, flushed)
                                 at the end: summary.json, summary.csv

The dispatcher sleeps until each request's *absolute* time (t0 + offset on the loop
clock). Adding relative sleeps (`sleep(gap)` after each send) would make every late
wake-up push all later requests back, and the achieved rate drifts below the target
(vLLM #21104: 183.5 req/s sent for 200 asked). Here a late wake-up delays one request; the
next one is still aimed at its own time.

With `concurrency=C` a request waits for one of C slots before it is sent. That wait is
client-side queueing: it shows up in `queue_wait` and in the `*_from_schedule` latencies,
never hidden inside the server's numbers.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import gc
import math
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labkit.bench import arrivals, report
from labkit.bench.client import RequestRecord, StreamingClient
from labkit.bench.request_metrics import summarize
from labkit.bench.workloads import WorkloadParams, make_requests, token_counter
from labkit.errors import UserError


@dataclass
class BenchConfig:
    base_url: str
    model: str
    workload: str = "random"
    api: str = "completions"
    rate: float = math.inf  # requests per second; inf = all at once
    burstiness: float = 1.0  # gamma shape; 1 = Poisson
    arrival: str = "poisson"  # poisson | gamma | constant (gamma when burstiness != 1)
    concurrency: int | None = None  # at most C requests in flight
    num_requests: int | None = None
    duration: float | None = None  # seconds of measured arrivals
    warmup: float = 0.0  # seconds of arrivals sent but left out of the statistics
    # The first N requests sent but left out of the statistics: the warm-up of a closed loop,
    # where every arrival is "scheduled" at 0 and a time-based warm-up cannot tell them apart.
    warmup_requests: int = 0
    slo: dict = field(default_factory=dict)  # {"ttft": ms, "tpot": ms, "e2e": ms}
    # Judge the SLO from the scheduled send (what a user waits) or the actual send. "auto":
    # the schedule, except with rate=inf, where every request is "scheduled" at t=0 and
    # only the send clock means anything.
    slo_clock: str = "auto"
    out_dir: str | None = None
    seed: int = 0
    timeout: float = 600.0  # per request, seconds
    params: WorkloadParams = field(default_factory=WorkloadParams)
    tokenizer: str | None = None  # local tokenizer for client-side token counts
    progress: bool = True
    api_key: str | None = field(default=None, repr=False)  # never written anywhere

    def public_dict(self) -> dict:
        """The config as recorded in summary.json: without the API key."""
        d = asdict(self)
        d.pop("api_key")
        d["params"].pop("count_tokens", None)
        return d


def _raise_fd_limit() -> None:
    """Each in-flight request holds a socket; a burst of 1,000 needs more than the common
    default of 1,024 open files. Raise the soft limit to the hard one (no privileges)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def default_out_dir() -> str:
    return str(Path("runs") / "bench" / _dt.datetime.now().strftime("%Y%m%d-%H%M%S"))


async def run_async(cfg: BenchConfig) -> dict:
    from tqdm import tqdm

    if cfg.num_requests is None and cfg.duration is None:
        raise UserError("say how long to run: --num-requests N or --duration SECONDS")
    kind = "gamma" if cfg.burstiness != 1.0 and cfg.arrival == "poisson" else cfg.arrival
    try:
        times = arrivals.schedule(cfg.rate, cfg.num_requests, cfg.duration, kind,
                                  cfg.burstiness, cfg.seed, cfg.warmup)
    except ValueError as e:
        raise UserError(str(e)) from None
    if len(times) == 0:
        raise UserError("the schedule is empty: raise --duration or --rate")
    if cfg.tokenizer:
        cfg.params.count_tokens = token_counter(cfg.tokenizer)
    requests = make_requests(cfg.workload, len(times), cfg.params, cfg.seed)
    out = Path(cfg.out_dir or default_out_dir())
    _raise_fd_limit()

    loop = asyncio.get_running_loop()
    records: list[RequestRecord] = []
    started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    async with StreamingClient(cfg.base_url, cfg.model, cfg.api, cfg.api_key, cfg.timeout,
                               cfg.params.count_tokens) as client:
        served = await client.check_server()
        if served and cfg.model not in served:
            raise UserError(f"model {cfg.model!r} is not served at {cfg.base_url}; it serves: "
                            f"{', '.join(served)} (pass one of these to --model)")
        out.mkdir(parents=True, exist_ok=True)  # only once a server answered
        slots = asyncio.Semaphore(cfg.concurrency) if cfg.concurrency else None
        bar = tqdm(total=len(times), file=sys.stderr, unit="req", disable=not cfg.progress,
                   desc=f"bench {cfg.workload}", mininterval=0.5)
        # requests.jsonl: one line per finished request, written at once with one write()
        # on a raw file descriptor (no Python buffer), so a crash or Ctrl-C loses nothing
        # that completed. Opened fresh: one run, one file.
        jsonl = os.open(out / "requests.jsonl", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        # Freeze what exists now so the garbage collector does not rescan it mid-run; a
        # multi-millisecond GC pause would land in someone's TTFT.
        gc.collect()
        gc.freeze()
        t0 = loop.time() + 0.01  # a short lead so request 0 is not born late

        async def one(i: int) -> None:
            req = requests[i]
            rec = RequestRecord(id=i, scheduled=float(times[i]), dispatched=loop.time() - t0,
                                warmup=bool(times[i] < cfg.warmup or i < cfg.warmup_requests), max_tokens=req.max_tokens,
                                prompt_len=req.prompt_len, tag=req.tag)
            if slots is not None:
                async with slots:
                    await client.send(req, rec, t0)
            else:
                await client.send(req, rec, t0)
            records.append(rec)
            os.write(jsonl, (rec.to_json() + "\n").encode())
            bar.update(1)

        tasks: list[asyncio.Task] = []
        interrupted = False
        try:
            for i, offset in enumerate(times):
                delay = t0 + offset - loop.time()  # absolute target: no drift
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:  # Ctrl-C: keep what finished, then stop
            interrupted = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            os.close(jsonl)
            bar.close()
            gc.unfreeze()

    clock = cfg.slo_clock if cfg.slo_clock != "auto" else (
        "send" if math.isinf(cfg.rate) else "schedule")
    summary = summarize(sorted(records, key=lambda r: r.id), cfg.rate, cfg.slo, clock,
                        capped=cfg.concurrency is not None)
    summary["run"] = {
        "started": started, "out_dir": str(out), "interrupted": interrupted,
        "arrivals": arrivals.describe(cfg.rate, kind, cfg.burstiness),
        "scheduled_requests": len(times), "machine": platform.node(),
        "python": platform.python_version(), "config": cfg.public_dict()}
    report.write_summary(out, summary)
    if interrupted:
        print(f"interrupted: {len(records)} finished requests kept in {out}/requests.jsonl",
              file=sys.stderr)
        raise KeyboardInterrupt
    return summary


def run_bench(cfg: BenchConfig) -> dict:
    """Run one benchmark to completion and return its summary (also written to out_dir).

    Works from a Jupyter cell too. A kernel already runs an asyncio event loop in its main
    thread and `asyncio.run` refuses to start a second one there, so in that case the
    benchmark gets a thread, and an event loop, of its own; this thread waits for it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop running here: the plain call
        return asyncio.run(run_async(cfg))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="labkit-bench") as pool:
        return pool.submit(lambda: asyncio.run(run_async(cfg))).result()
