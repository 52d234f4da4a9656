"""Benchmarks: quart-chat side by side with peer servers (``python -m bench``)."""
