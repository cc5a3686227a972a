"""Layers with hand-written backward passes (chapters 3 and 4 of the book)."""
