"""`python -m labkit.bench …` runs `labkit bench …`."""

import sys

from labkit.bench.cli import main

sys.exit(main())
