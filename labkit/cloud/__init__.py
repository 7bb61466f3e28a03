"""Running the labs on rented GPUs with SkyPilot: `labkit cloud task|validate|fetch`.

    task.py       the SkyPilot task a GPU-tier batch run needs: resources (GPUs, spot, disk,
                  job recovery), a bucket for the run directory, setup and run scripts
    validate.py   SkyPilot's own parser (sky.Task.from_yaml, offline, in its own venv)
                  plus the checks it leaves out (recovery strategy, GPU names)
    cli.py        `labkit cloud task` / `validate` / `fetch`

SkyPilot lives in a virtual environment of its own (.venv-sky, made by scripts/bootstrap.sh):
it pins click, uvicorn and bcrypt to versions that clash with vLLM's.
"""
