"""Serving: Triton model repositories, a managed `tritonserver` and an image client.

The Python model that Triton loads (`serving.triton_python_model`) imports only the runtime.
"""
