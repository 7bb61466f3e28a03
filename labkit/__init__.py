"""labkit: the helper package behind the labs.

Every lab notebook is thin: it calls into labkit and records what it measured with
`labkit.runs` so that `labkit portfolio build` can turn a run into case studies.
Heavy imports (torch, transformers, vllm) live inside functions so that `labkit --help`
and `labkit doctor` start fast on any machine.
"""

__version__ = "0.1.0"
