"""Graph passes that find the KV cache and rewrite it to the TurboQuant ops (TQQuantize, TQAttention).

- `kv_write`: cache Concat -> TQQuantize;  - `attention_read`: scores/mask/softmax/PV -> TQAttention;
- `cache_io`: cache graph I/O retyped to uint8 (+ window I/O), Shape(cache) reads made logical;
- `layers.analyze`: per-layer matching with near-miss reasons;  - `pipeline.run_pipeline`: the ordered passes;
- `group_query_attention`: unfuses com.microsoft::GroupQueryAttention (genai graphs) first, for the above.
"""

from tqexport.passes.layers import ModelAnalysis, analyze
from tqexport.passes.pipeline import PASSES, LayerPlan, RewritePlan, run_pipeline

__all__ = ["PASSES", "LayerPlan", "ModelAnalysis", "RewritePlan", "analyze", "run_pipeline"]
