"""TurboQuant reference codec: the NumPy implementation every other implementation is tested against."""

from tqexport.codec import reference_ops
from tqexport.codec.codebook import build_codebook, lloyd_max_centroids
from tqexport.codec.codec import Codec, DecodedRows
from tqexport.codec.config import FORMAT_VERSION, CodecConfig, CodecConfigError, RowLayout, segment_widths
from tqexport.codec.rotation import build_qjl_matrix, build_rotation

__all__ = [
    "FORMAT_VERSION",
    "Codec",
    "CodecConfig",
    "CodecConfigError",
    "DecodedRows",
    "RowLayout",
    "build_codebook",
    "build_qjl_matrix",
    "build_rotation",
    "lloyd_max_centroids",
    "reference_ops",
    "segment_widths",
]
