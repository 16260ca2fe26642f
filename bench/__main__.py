"""``python -m bench``: run the benchmarks of issue 6 (see bench/README.md)."""

import sys

from bench.run import main

sys.exit(main())
