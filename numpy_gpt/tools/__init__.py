"""Measuring tools, not the lesson: the benchmark (``numpy-gpt bench``), the PyTorch twin that the
parity tests and the benchmark compare against, and the minimal TensorFlow-checkpoint writer used
by the reader's tests and the load benchmark. Nothing in the teaching modules imports these."""
