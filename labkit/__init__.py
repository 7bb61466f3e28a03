"""labkit: the helper package behind the labs.

Every lab notebook is thin: it calls into labkit and records what it measured with
`labkit.runs` so that `labkit portfolio build` can turn a run into case studies.
Heavy imports (torch, transformers, vllm) live inside functions so that `labkit --help`
and `labkit doctor` start fast on any machine. Layers and import rules: ARCHITECTURE.md.

Core modules (the packages list their own):

    cli.py              the `labkit` command: one sub-command module per user task
    errors.py           UserError: a problem the user can fix, shown without a traceback
    atomic.py           atomic file writes (a leaf: everything may import it)
    secrets.py          secret names and values kept out of records, logs and pages
    runs.py             the run directory and LabRecorder (record(), results.json)
    run_labs.py         `labkit run`: papermill batch runs, profiles, resume, timeouts
    kernel_transport.py Jupyter kernels over Unix sockets instead of TCP ports
    env.py              `labkit doctor`: what this machine has, which labs run at which tier
    exercises.py        `labkit exercises export|reset`: learner copies, solutions removed
    lab_server.py       `labkit lab`: JupyterLab on the learner copies, loopback, token
    roofline.py         matmul FLOP/s and copy bandwidth, datasheet peaks
    gpu_check.py        `labkit gpu-check`: one JSON that says whether the GPU tier works
"""

__version__ = "0.1.0"
