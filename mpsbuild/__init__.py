"""Build driver for the thread-safe MPS PyTorch toolkit.

One module per pipeline stage: preflight, source, series, build, package, test.
Each stage is a plain function with typed inputs; ``build.py`` only parses arguments.
"""
