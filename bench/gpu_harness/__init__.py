"""ctypes harness over the CUDA launcher API (plugins/kernels/tq_kernels.h) for tests/gpu and bench/*_gpu.py."""
