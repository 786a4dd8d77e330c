"""The builder role: uploads in, immutable content-addressed images out.

Entry point: `roost.builder.daemon.run`. The pipeline is in `pipeline.py`;
each step's helpers live in a module named after it.
"""
