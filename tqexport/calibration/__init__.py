"""Calibration on text: per-channel K/V statistics, per-layer sensitivity, and bit allocation under a budget.

- `capture`: run the original model on calibration text and record per-(layer, kv head) channel RMS of the new
  K/V (the scores the outlier split uses) and the largest vector norms (float16 norm headroom).
- `fake_quant`: standard-ONNX quantize-dequantize of the new K/V, switchable per layer at run time, so one
  session measures every layer's sensitivity.
- `sensitivity`: KL(original || only this layer compressed at b bits) for each (layer, K/V, b).
- `budget`: bit widths per (layer, K/V) whose average, every overhead counted, stays within a budget.
"""
