"""`labkit cloud`: run the GPU tier on a rented box with SkyPilot, and bring the run home."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from labkit.errors import UserError

EPILOG = """\
examples:
  labkit cloud task --gpus H100:1 --spot --bucket my-labkit-runs --out task.yaml
  sky jobs launch task.yaml --secret HF_TOKEN     # managed spot job: preemptions recover
  labkit cloud fetch --bucket my-labkit-runs --run h100-h100x1-20261203
  labkit portfolio build runs/<cpu-run> runs/h100-h100x1-20261203

The task validates offline with SkyPilot's own parser before it is written."""


def cmd_task(args) -> int:
    from labkit.cloud.task import build_task
    from labkit.cloud.validate import validate_task_file
    from labkit.run_labs import load_profile, validate_profile

    validate_profile(load_profile(args.profile))  # a bad profile fails here, not on the box
    task = build_task(gpus=args.gpus, profile=args.profile, spot=args.spot, labs=args.labs,
                      bucket=args.bucket, mount_mode=args.mount_mode, disk_gb=args.disk,
                      recovery=args.recovery, max_restarts_on_errors=args.max_restarts,
                      run_id=args.run_id)
    out = Path(args.out)
    out.write_text(dump_yaml(task))
    if not args.no_validate:
        result = validate_task_file(out)
        if not result["ok"]:
            raise UserError(f"SkyPilot rejects {out}: {result['error']}")
        print(f"{out}: valid SkyPilot {result['sky']} task ({', '.join(result['resources'])})")
    if not args.bucket:
        print("note: no --bucket: the run directory stays on the VM (lost with it); "
              "`sky rsync-down` it before `sky down`")
    launch = "sky jobs launch" if args.spot else "sky launch -c labkit"
    print(f"launch: {launch} {out} --secret HF_TOKEN")
    return 0


def dump_yaml(task: dict) -> str:
    """YAML with the setup and run scripts as literal blocks, readable as shell."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value,
                                       style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    return yaml.dump(task, Dumper=Dumper, sort_keys=False, width=100)


def cmd_validate(args) -> int:
    from labkit.cloud.validate import validate_task_file

    result = validate_task_file(args.task)
    if not result["ok"]:
        raise UserError(f"SkyPilot rejects {args.task}: {result['error']}")
    print(f"{args.task}: valid (SkyPilot {result['sky']}; {', '.join(result['resources'])})")
    return 0


def fetch_command(bucket: str, run: str, store: str, dest: Path) -> list[str]:
    src = f"{'s3' if store == 's3' else 'gs'}://{bucket}/{run}"
    if store == "s3":
        return ["aws", "s3", "sync", src, str(dest / run)]
    return ["gsutil", "-m", "rsync", "-r", src, str(dest / run)]


def cmd_fetch(args) -> int:
    cmd = fetch_command(args.bucket, args.run, args.store, Path(args.dest))
    if shutil.which(cmd[0]) is None:
        print("run this where your cloud credentials are:\n  " + " ".join(cmd))
        return 0
    subprocess.run(cmd, check=True)
    print(f"fetched into {Path(args.dest) / args.run}; then: labkit portfolio build "
          f"{Path(args.dest) / args.run}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("cloud", help="GPU-tier runs on rented GPUs (SkyPilot task, fetch)",
                       description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_subparsers(dest="cloud_cmd", metavar="ACTION", required=True)
    t = s.add_parser("task", help="write (and validate) a SkyPilot task for `labkit run`")
    t.add_argument("labs", nargs="*", metavar="LAB", help="labs to run (default: all)")
    t.add_argument("--gpus", default="H100:1", help="NAME[:COUNT], e.g. H100:1, A100-80GB:8")
    t.add_argument("--profile", default="h100", help="profile the box runs (default h100)")
    t.add_argument("--spot", action="store_true",
                   help="spot instances as a managed job: cheaper, preemptions recover")
    t.add_argument("--bucket", help="bucket for the run directory (survives the VM)")
    t.add_argument("--mount-mode", default="MOUNT_CACHED", help="MOUNT_CACHED or MOUNT")
    t.add_argument("--disk", type=int, default=256, help="disk GB (model weights)")
    t.add_argument("--recovery", default="FAILOVER", help="FAILOVER or EAGER_NEXT_REGION")
    t.add_argument("--max-restarts", type=int, default=1,
                   help="restarts after a user-code failure (preemptions always recover)")
    t.add_argument("--run-id", help="run directory name (default <profile>-<gpu>x<n>-<date>)")
    t.add_argument("--out", default="task.yaml", help="where to write it (default task.yaml)")
    t.add_argument("--no-validate", action="store_true", help="skip SkyPilot's parser")
    t.set_defaults(func=cmd_task)
    v = s.add_parser("validate", help="check a SkyPilot task offline with SkyPilot's parser")
    v.add_argument("task")
    v.set_defaults(func=cmd_validate)
    f = s.add_parser("fetch", help="copy a run directory out of the bucket")
    f.add_argument("--bucket", required=True)
    f.add_argument("--run", required=True, help="run id (the task's --run-id)")
    f.add_argument("--store", choices=["s3", "gcs"], default="s3")
    f.add_argument("--dest", default="runs", help="local runs folder (default ./runs)")
    f.set_defaults(func=cmd_fetch)
