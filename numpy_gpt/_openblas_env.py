"""The one setting that must be made before NumPy is imported: how long NumPy's OpenBLAS lets its
idle threads spin. ``numpy_gpt/__init__.py`` imports this module first; ``numpy_gpt.runtime``
explains the choice and reports what is in effect (``openblas_thread_timeout``).
"""

import os
import sys

THREAD_TIMEOUT = 24               # idle OpenBLAS threads spin 2^24 cycles (~6 ms), not 2^28 (~0.1 s)

numpy_loaded_first = "numpy" in sys.modules   # then OpenBLAS has already read its environment
if not numpy_loaded_first:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", str(THREAD_TIMEOUT))   # a user's value wins
