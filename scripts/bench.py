"""numpy_gpt against PyTorch eager and transformers: training step, generation, peak memory.

    python scripts/bench.py            # the full table (a few minutes); writes scripts/results/bench.json
    python scripts/bench.py --quick    # small models, few repeats (well under a minute)

The same as ``numpy-gpt bench``; see numpy_gpt/tools/bench.py for what is measured and how.
"""

import sys

from numpy_gpt.cli.tools import main

if __name__ == "__main__":
    sys.exit(main())
