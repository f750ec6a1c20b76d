"""End-to-end workflows composed of the layers below: the demo and the GPU self-test.

Each is a library call that returns its results; the CLI only parses options and renders them.
"""
