"""`labkit run`: execute labs in roadmap order with papermill, recording every result.

    profile (profiles/cpu.yaml) + -p overrides ──validated──► papermill, one child per lab

Each lab runs in a child process (`python -m labkit.run_labs --child SPEC`), so a per-lab
timeout or Ctrl-C can end the lab *and* its Jupyter kernel (the kernel lives in a session of
its own, so we kill the whole process tree, not a process group). A failed lab is reported
with its cell and error; the other labs still run; the exit code is 1 if any lab failed.

Secrets: a parameter whose name looks secret (`-p hf_token=...`) is never injected into the
notebook (papermill writes injected parameters into the executed copy). It reaches the
kernel as an environment variable (HF_TOKEN) instead, and after each lab every text file
in the lab's folder is searched for the value and redacted, just in case.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from labkit import labs as labs_mod
from labkit import runs, secrets
from labkit.errors import UserError

PROFILES_DIR = labs_mod.PROJECT_ROOT / "profiles"


# --- parameters -----------------------------------------------------------------------------

def load_profile(name_or_path: str) -> dict:
    import yaml

    p = Path(name_or_path)
    if not p.suffix:
        p = PROFILES_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        known = sorted(x.stem for x in PROFILES_DIR.glob("*.yaml"))
        raise UserError(f"no profile {name_or_path!r}; profiles: {', '.join(known)} "
                        f"(or give a path to a YAML file)")
    prof = yaml.safe_load(p.read_text()) or {}
    prof.setdefault("name", p.stem)
    base = prof.pop("extends", None)
    if base:  # `extends: h100`: start from that profile, then apply this one's differences
        if base == p.stem:
            raise UserError(f"profile {p.stem!r} extends itself")
        parent = load_profile(str(p.with_name(f"{base}.yaml")) if not Path(base).suffix
                              else base)
        labs = {k: dict(v or {}) for k, v in (parent.get("labs") or {}).items()}
        for lab, values in (prof.get("labs") or {}).items():
            labs.setdefault(lab, {}).update(values or {})
        prof = {**parent, **prof, "labs": labs,
                "params": {**(parent.get("params") or {}), **(prof.get("params") or {})}}
    return prof


def parse_overrides(pairs: list[str]) -> tuple[dict, dict, dict]:
    """-p name=value / -p lab.name=value → (common, per_lab, secret) with YAML-typed values."""
    import yaml

    common: dict = {}
    per_lab: dict[str, dict] = {}
    secret: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"-p {pair!r}: write -p name=value (or -p 00_orientation.name=value)")
        key, raw = pair.split("=", 1)
        if secrets.is_secret_name(key):
            secret[key.upper().replace("-", "_")] = raw  # hf_token → HF_TOKEN in the kernel
            continue
        value = yaml.safe_load(raw) if raw else ""
        lab, _, name = key.rpartition(".")
        (per_lab.setdefault(lab, {}) if lab else common)[name] = value
    return common, per_lab, secret


def check_value(lab: str, name: str, value, spec: dict):
    """Coerce/validate one value against the declared default's type; return it or raise."""
    kind, choices = spec["type"], spec["choices"]
    want = f"{kind} (default {spec['default']!r})"
    ok = True
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "str":
        value = value if isinstance(value, str) else str(value)
    elif kind in ("list", "dict"):
        ok = isinstance(value, list if kind == "list" else dict)
    if not ok:
        raise UserError(f"lab {lab}: parameter {name}={value!r} should be {want}")
    if choices and str(value) not in choices:
        raise UserError(f"lab {lab}: parameter {name}={value!r} is not allowed; "
                        f"allowed values: {', '.join(choices)}")
    return value


TIERS = ("cpu", "gpu")


def validate_profile(profile: dict) -> None:
    """The whole profile against every lab's parameter cell, whichever labs run now: a typo
    in a lab you run next week should fail today, not after an hour of rented GPU time."""
    where = f"profile {profile['name']!r}"
    if profile.get("tier", "cpu") not in TIERS:
        raise UserError(f"{where}: tier must be one of {', '.join(TIERS)}, "
                        f"not {profile.get('tier')!r}")
    every = {lab.name: lab for lab in labs_mod.all_labs()}
    for name, values in (profile.get("labs") or {}).items():
        if name not in every:
            raise UserError(f"{where} sets parameters for lab {name!r}, which does not exist; "
                            f"labs are: {', '.join(sorted(every))}")
        spec = every[name].parameters()
        for param, value in (values or {}).items():
            if param not in spec:
                raise UserError(f"{where}: lab {name} has no parameter {param!r}; its "
                                f"parameters are: {', '.join(spec) or 'none'}")
            check_value(name, param, value, spec[param])
    names = {n for lab in every.values() for n in lab.parameters()}
    stray = sorted(set(profile.get("params") or {}) - names)
    if stray:
        raise UserError(f"{where}: no lab has parameter(s) {', '.join(stray)}")


def needs_more_gpus(lab, profile: dict, gpu_count: int) -> str | None:
    """Why a GPU-tier run must skip this lab here (it needs 2+ GPUs), else None."""
    if profile.get("tier") == "gpu" and "multi_gpu" in lab.requires.get("gpu", []) \
            and gpu_count < 2:
        return f"skipped: needs 2 GPUs, this machine has {gpu_count}"
    return None


def resolve_parameters(selected: list, profile: dict, overrides: list[str]):
    """Per-lab parameter dicts, validated before any notebook starts."""
    validate_profile(profile)
    common_o, lab_o, secret = parse_overrides(overrides)
    per_lab_profile = profile.get("labs") or {}
    specs = {lab.name: lab.parameters() for lab in selected}
    by_name = {lab.name: lab for lab in selected}
    for key in list(lab_o):  # accept "00" or "orientation" for a lab in -p 00.name=value
        if key not in by_name:
            lab_o[labs_mod.select([key])[0].name] = lab_o.pop(key)
    unused = set(profile.get("params") or {}) | set(common_o)
    out = {}
    for lab in selected:
        spec = specs[lab.name]
        params = {}
        # Later layers win: profile-wide < profile per lab < -p name=… < -p lab.name=…
        layers = [(profile.get("params") or {}, False), (per_lab_profile.get(lab.name) or {}, True),
                  (common_o, False), (lab_o.get(lab.name) or {}, True)]
        for values, strict in layers:
            for name, value in values.items():
                if name not in spec:
                    if strict:
                        raise UserError(f"lab {lab.name} has no parameter {name!r}; its "
                                        f"parameters are: {', '.join(spec) or 'none'}")
                    continue
                unused.discard(name)
                params[name] = check_value(lab.name, name, value, spec[name])
        out[lab.name] = params
    if unused:
        allowed = sorted({n for s in specs.values() for n in s})
        raise UserError(f"no selected lab has parameter(s) {', '.join(sorted(unused))}; "
                        f"allowed: {', '.join(allowed)}")
    return out, secret


# --- execution --------------------------------------------------------------------------------

def kill_tree(pid: int) -> None:
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = parent.children(recursive=True) + [parent]
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def run_lab(lab, run_dir: Path, params: dict, secret_env: dict, timeout: float) -> dict:
    lab_dir = run_dir / lab.name
    (lab_dir / "logs").mkdir(parents=True, exist_ok=True)
    spec = {"input": str(lab.path), "output": str(lab_dir / f"{lab.name}.ipynb"),
            "params": params, "lab": lab.name, "status": str(lab_dir / "status.json"),
            "log": str(lab_dir / "logs" / "papermill.log")}
    spec_path = lab_dir / "logs" / "spec.json"
    runs.atomic_write_json(spec_path, spec)
    env = {**os.environ, **secret_env, runs.RUN_DIR_ENV: str(run_dir),
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
           "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    runs.atomic_write_json(lab_dir / "status.json", {"status": "running", "params": params,
                                                     "started": time.time()})
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "labkit.run_labs", "--child", str(spec_path)],
                            env=env, cwd=lab.path.parent)
    try:
        proc.wait(timeout=timeout)
        status = runs.read_json(lab_dir / "status.json", default={})
        if status.get("status") == "running":  # the child died without a word (OOM kill…)
            status = {"status": "failed", "error": f"lab process exited {proc.returncode}"}
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        status = {"status": "timeout", "error": f"lab exceeded its {timeout:.0f} s timeout "
                  f"(raise it with --timeout or timeout_per_lab in the profile)"}
    except KeyboardInterrupt:
        kill_tree(proc.pid)
        status = {"status": "interrupted", "error": "stopped by Ctrl-C"}
        _finish(lab_dir, status, params, t0, secret_env)
        raise
    return _finish(lab_dir, status, params, t0, secret_env)


def _finish(lab_dir: Path, status: dict, params: dict, t0: float, secret_env: dict) -> dict:
    status.update(params=params, seconds=round(time.time() - t0, 1))
    runs.atomic_write_json(lab_dir / "status.json", status)
    values = secrets.secret_values(secret_env.values())
    for f in lab_dir.rglob("*"):
        if f.is_file():
            secrets.redact_file(f, values)
    return status


def child_main(spec_path: str) -> int:
    """Inside the per-lab child: run papermill, write status.json with the outcome."""
    import logging

    import papermill as pm

    from labkit.kernel_transport import IPCKernelManager

    spec = json.loads(Path(spec_path).read_text())
    handler = logging.FileHandler(spec["log"])
    logging.getLogger("papermill").addHandler(handler)
    logging.getLogger("papermill").setLevel(logging.INFO)
    try:
        pm.execute_notebook(spec["input"], spec["output"], parameters=spec["params"],
                            kernel_name="python3", progress_bar=True, log_output=True,
                            cwd=str(Path(spec["input"]).parent),
                            kernel_manager_class=IPCKernelManager)  # no TCP ports
        status = {"status": "completed"}
    except pm.PapermillExecutionError as e:
        status = {"status": "failed", "cell": e.exec_count, "cell_index": e.cell_index,
                  "error": f"{e.ename}: {e.evalue}"}
    except Exception as e:  # noqa: BLE001 - kernel failed to start, bad notebook, …
        status = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    runs.atomic_write_json(spec["status"], status)
    return 0 if status["status"] == "completed" else 1


def cmd_run(args) -> int:
    from tqdm import tqdm

    profile = load_profile(args.profile)
    selected = labs_mod.select(args.labs)
    per_lab, secret_env = resolve_parameters(selected, profile, args.param or [])
    timeout = float(args.timeout or profile.get("timeout_per_lab", 1800))
    if args.out:
        os.environ[runs.RUNS_DIR_ENV] = str(Path(args.out).resolve())
    if args.resume:
        run_dir = runs.resolve_run_dir(args.resume)
    elif args.run_id:  # a fixed name: a batch job restarted after a preemption resumes it
        if not re.fullmatch(r"[A-Za-z0-9._-]+", args.run_id):
            raise UserError(f"--run-id {args.run_id!r}: use letters, digits, '.', '_', '-'")
        run_dir = runs.runs_root() / args.run_id
        args.resume = str(run_dir) if (run_dir / "run.json").exists() else None
    else:
        run_dir = runs.runs_root() / runs.new_run_id(profile["name"])
    run_dir.mkdir(parents=True, exist_ok=True)
    command = "labkit " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    runs.write_run_json(run_dir, profile=profile["name"], command=secrets.redact_text(
        command, secrets.secret_values(secret_env.values())), params=per_lab)
    _point_latest(run_dir)
    print(f"run directory: {run_dir}", file=sys.stderr)

    results = {}
    gpus = _gpu_count() if profile.get("tier") == "gpu" else 0
    bar = tqdm(selected, desc="labs", unit="lab", file=sys.stderr, position=0)
    for lab in bar:
        bar.set_postfix_str(lab.name)
        prev = runs.read_json(run_dir / lab.name / "status.json", default={})
        if args.resume and prev.get("status") == "completed":
            tqdm.write(f"- {lab.name}: completed earlier in this run, skipped", file=sys.stderr)
            results[lab.name] = prev
            continue
        why = needs_more_gpus(lab, profile, gpus)
        if why:  # the run goes on: a 1-GPU box runs every lab it can
            results[lab.name] = {"status": "skipped", "reason": why, "seconds": 0}
            runs.atomic_write_json(run_dir / lab.name / "status.json", results[lab.name])
            tqdm.write(f"- {lab.name}: {why}", file=sys.stderr)
            continue
        st = run_lab(lab, run_dir, per_lab[lab.name], secret_env, timeout)
        results[lab.name] = st
        if st["status"] == "completed":
            _check_contract(lab, run_dir)
        where = (f" at notebook cell #{st['cell_index']} (In [{st['cell']}])"
                 if st.get("cell_index") is not None else "")
        msg = (f"✔ {lab.name} {st['seconds']} s" if st["status"] == "completed"
               else f"✘ {lab.name} {st['status']}{where}: {st.get('error', '')}\n"
                    f"  executed notebook: {run_dir / lab.name / (lab.name + '.ipynb')}")
        tqdm.write(msg, file=sys.stderr)
    bar.close()
    failed = [n for n, s in results.items() if s.get("status") not in ("completed", "skipped")]
    skipped = [n for n, s in results.items() if s.get("status") == "skipped"]
    done = len(results) - len(failed) - len(skipped)
    print(f"\n{done}/{len(results)} labs completed" + (f", {len(skipped)} skipped"
          if skipped else "") + f"; results in {run_dir}", file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)} — fix and rerun just those with "
              f"`labkit run --resume {run_dir.name}`", file=sys.stderr)
    print(run_dir)
    return 1 if failed else 0


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def _check_contract(lab, run_dir: Path) -> None:
    """Print and record (status.json "contract") whether the lab recorded what it declares."""
    from labkit.portfolio import contract

    problems = contract.check_lab_dir(lab, run_dir / lab.name)
    status_path = run_dir / lab.name / "status.json"
    status = runs.read_json(status_path, default={})
    status["contract"] = {"holds": not problems, "problems": problems}
    runs.atomic_write_json(status_path, status)
    from tqdm import tqdm

    tqdm.write("  " + contract.format_report({lab.name: problems}), file=sys.stderr)


def _point_latest(run_dir: Path) -> None:
    """runs/latest → the newest run (a symlink, replaced atomically)."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run_dir.name)
        os.replace(tmp, link)
    except OSError:
        pass  # file systems without symlinks: `latest` is a convenience only


def register(sub) -> None:
    import argparse

    p = sub.add_parser(
        "run", help="execute labs with papermill and record their results",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Execute labs in roadmap order (kernel python3). Parameters come from the "
        "profile plus -p overrides and are checked against each lab's `parameters` cell before "
        "any notebook starts. Each lab writes runs/<run-id>/<lab>/ (results.json, tables, "
        "figures, the executed notebook); a failed lab is reported and the rest still run.",
        epilog="examples:\n"
        "  labkit run                          every lab, CPU tier\n"
        "  labkit run 00 -p matmul_size=512    one lab, one parameter changed\n"
        "  labkit run --profile h100           the GPU tier on a rented box\n"
        "  labkit run -p hf_token=$HF_TOKEN    secrets go to the kernel's environment, never to disk\n"
        "  labkit run --resume latest          rerun only the labs that did not complete")
    p.add_argument("labs", nargs="*", metavar="LAB", help="lab number or name (default: all)")
    p.add_argument("--profile", default="cpu", help="profiles/<name>.yaml or a path (default cpu)")
    p.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                   help="override a parameter (YAML-typed); LAB.NAME=VALUE targets one lab")
    p.add_argument("--out", metavar="DIR", help="runs folder (default ./runs or $LABKIT_RUNS_DIR)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN (id, path or 'latest'), "
                   "skipping labs that completed")
    p.add_argument("--run-id", metavar="NAME", help="name the run directory; if it exists, "
                   "resume it (what a preempted cloud job does when it restarts)")
    p.add_argument("--timeout", type=float, metavar="S", help="per-lab timeout in seconds")
    p.set_defaults(func=cmd_run)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2]))
    sys.exit("usage: python -m labkit.run_labs --child SPEC.json (internal; use `labkit run`)")
