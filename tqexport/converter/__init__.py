"""The converter: options and presets, codec construction per layer, and the `convert_model` driver."""

from tqexport.converter.convert import ConvertOptions, ConvertResult, convert_model, inspect_model

__all__ = ["ConvertOptions", "ConvertResult", "convert_model", "inspect_model"]
