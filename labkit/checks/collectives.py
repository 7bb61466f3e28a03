"""Self-check for the ring all_reduce exercise (labkit/collectives/ring.py).

    check_ring_all_reduce(ring_all_reduce)   # prints a pass line, or raises ExerciseFailed
                                             # with the failing input, expected and actual

Your function runs on real ranks (separate processes started by the launcher), so it has to
travel to them. A function from a .py module travels by name ("module:function"). A function
defined in a notebook cell cannot be imported by another process, so its *source code* is
sent instead (inspect.getsource) and re-created in every rank with exec. For that to work the
function must be self-contained: it may use `torch`, `dist` (torch.distributed), modules
imported in the notebook, simple constants and other functions defined in the notebook; it
cannot use notebook variables holding tensors or objects.
"""

from __future__ import annotations

import inspect
import textwrap
import types
from dataclasses import dataclass

from labkit.checks import ExerciseFailed
from labkit.collectives.launch import LaunchTimeout, RankFailed, launch
from labkit.collectives.worker import resolve

DEFAULT_SIZES = (1, 2, 3, 4, 5, 7, 16, 33, 1000, 1001, (5, 3))


@dataclass
class CheckResult:
    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok


def function_spec(fn) -> dict:
    """How to rebuild `fn` in another process: by import path, or by its source code."""
    if isinstance(fn, str):
        return {"target": fn}
    module = getattr(fn, "__module__", None)
    if module and module != "__main__" and "<locals>" not in fn.__qualname__:
        return {"target": f"{module}:{fn.__qualname__}"}
    return _source_spec(fn)


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:  # nested functions and comprehensions
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _source_spec(fn) -> dict:
    imports, constants, helpers, seen = {}, {}, [], {fn.__name__}
    todo = [fn]
    while todo:
        f = todo.pop()
        for name in sorted(_global_names(f.__code__)):
            value = f.__globals__.get(name)
            if isinstance(value, types.ModuleType):
                imports[name] = value.__name__
            elif isinstance(value, (int, float, str, bool)):
                constants[name] = value
            elif isinstance(value, types.FunctionType) and name not in seen:
                if value.__module__ == "__main__":
                    seen.add(name)
                    helpers.append(textwrap.dedent(inspect.getsource(value)))
                    todo.append(value)
                else:
                    imports[name] = f"{value.__module__}:{value.__qualname__}"
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as e:
        from labkit.errors import UserError

        raise UserError(f"cannot read the source of {fn.__name__} ({e}); define it in a "
                        "notebook cell or a .py file") from None
    return {"source": "\n\n".join(helpers + [source]), "name": fn.__name__,
            "imports": imports, "constants": constants}


def load_function(spec: dict):
    """Inverse of function_spec, run inside a rank."""
    import importlib
    import linecache

    import torch
    import torch.distributed as dist

    if "target" in spec:
        return resolve(spec["target"])
    namespace = {"torch": torch, "dist": dist, "__name__": "__exercise__"}
    for name, what in spec["imports"].items():
        namespace[name] = resolve(what) if ":" in what else importlib.import_module(what)
    namespace.update(spec["constants"])
    filename = f"<notebook cell defining {spec['name']}>"
    # registering the source lets tracebacks show the learner's own lines
    linecache.cache[filename] = (len(spec["source"]), None,
                                 spec["source"].splitlines(True), filename)
    exec(compile(spec["source"], filename, "exec"), namespace)
    return namespace[spec["name"]]


def ring_worker(fn_spec: dict, sizes: list, seed: int = 0) -> dict:
    """Runs on every rank: compare fn with dist.all_reduce on random tensors, stop together."""
    import torch
    import torch.distributed as dist

    fn = load_function(fn_spec)
    rank, n = dist.get_rank(), dist.get_world_size()
    gen = torch.Generator().manual_seed(seed * 1009 + rank)  # different data on every rank
    for size in sizes:
        x = torch.randn(size, generator=gen)
        expected = x.clone()
        dist.all_reduce(expected)
        actual = x.clone()
        out = fn(actual)
        got = out if isinstance(out, torch.Tensor) else actual  # in place or returned: both ok
        failure = None
        if got.shape != expected.shape:
            failure = {"problem": f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"}
        elif not torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * n):
            bad = (got - expected).abs().flatten() > 1e-5 * n + 1e-5 * expected.abs().flatten()
            i = int(bad.nonzero()[0])
            lo = max(0, i - 2)
            failure = {"problem": f"first wrong element at flat index {i}", "from_index": lo,
                       "input": x.flatten()[lo:lo + 6].tolist(),
                       "expected": expected.flatten()[lo:lo + 6].tolist(),
                       "actual": got.flatten()[lo:lo + 6].tolist()}
        # every rank must stop at the same size, or the others would wait for it forever
        flag = torch.tensor([0 if failure is None else 1])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if failure is not None:
            return {"ok": False, "rank": rank, "size": list(x.shape), **failure}
        if flag.item():
            return {"ok": False, "rank": rank, "size": list(x.shape), "problem": None}
    return {"ok": True}


def _failure_message(name, n, result) -> str:
    lines = [f"{name} FAILED with world_size={n} on a float32 tensor of shape "
             f"{tuple(result['size'])} (rank {result['rank']}): {result['problem']}"]
    if "input" in result:
        fmt = lambda v: "[" + ", ".join(f"{a:.4f}" for a in v) + "]"  # noqa: E731
        lines += [f"  elements from index {result['from_index']}:",
                  f"  {'input on rank ' + str(result['rank']):27s} {fmt(result['input'])}",
                  f"  {'expected (dist.all_reduce)':27s} {fmt(result['expected'])}",
                  f"  {'actual (your function)':27s} {fmt(result['actual'])}"]
    return "\n".join(lines)


def check_ring_all_reduce(fn, world_sizes=(2, 3, 4), sizes=DEFAULT_SIZES, seed=0,
                          timeout=90, verbose=True, raise_on_failure=True) -> CheckResult:
    """Run `fn` on real gloo ranks for every world size; compare with dist.all_reduce.

    Prints a pass line; on failure raises ExerciseFailed (like every labkit check) naming
    the world size, the tensor and the expected vs actual values, or returns the failed
    CheckResult when raise_on_failure=False. verbose=False hides the ranks' own output.
    """
    name = getattr(fn, "__name__", str(fn))
    spec, sizes = function_spec(fn), [list(s) if isinstance(s, tuple) else s for s in sizes]
    result = None
    for n in world_sizes:
        try:
            results = launch("labkit.checks.collectives:ring_worker", nproc=n, backend="gloo",
                             args={"fn_spec": spec, "sizes": sizes, "seed": seed},
                             timeout=timeout, log=print if verbose else None)
        except RankFailed as e:
            tb = e.traceback.strip().splitlines()
            if tb and tb[-1].startswith("NotImplementedError"):
                hint = tb[-1].removeprefix("NotImplementedError").lstrip(": ")
                result = CheckResult(False, f"{name}: not implemented yet — {hint}")
            else:
                result = CheckResult(False, f"{name} FAILED with world_size={n}: rank "
                                     f"{e.rank} raised:\n  " + "\n  ".join(tb[-6:]))
            break
        except LaunchTimeout:
            result = CheckResult(False, (
                f"{name} FAILED with world_size={n}: no result within {timeout} s. Usually a "
                "deadlock: a rank waits in recv for a message its neighbour never sends (or "
                "every rank does a blocking send first). Post dist.isend before dist.recv."))
            break
        bad = [r for r in results if not r["ok"] and r.get("problem")]
        if bad:
            result = CheckResult(False, _failure_message(name, n, bad[0]))
            break
    if result is None:
        shown = ", ".join(str(tuple(s)) if isinstance(s, list) else str(s) for s in sizes)
        result = CheckResult(True, (
            f"✔ {name}: matches dist.all_reduce for world sizes "
            f"{', '.join(map(str, world_sizes))} on tensors of sizes {shown}"))
    if not result.ok and raise_on_failure:
        raise ExerciseFailed(result.message)
    print(result.message)
    return result
