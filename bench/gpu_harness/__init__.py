"""ctypes harness over the CUDA launchers (plugins/kernels/tq_kernels.h) for tests/gpu and bench/*_gpu.py."""
