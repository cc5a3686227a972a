"""numpy_gpt: GPT-2 in pure NumPy with every backward pass written by hand.

A companion to "Build a Large Language Model (From Scratch)". The public API is re-exported here.
"""

__version__ = "0.1.0"
