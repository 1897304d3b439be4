"""How many graphs torch.compile makes of our model: 1 with no breaks is right. This is how the large/xl anomaly
was found on the H200 (docs/results/anomaly_h200_2026-12-01.md): 9 graphs for 2 layers with the old no-op range.

    python3 scripts/graph_breaks.py            # CUDA and bf16 autocast when a GPU is there, else CPU
    TORCH_LOGS=graph_breaks python3 scripts/graph_breaks.py    # and each break's reason
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.model import ModelConfig, TransformerLM  # noqa: E402

device = "cuda" if torch.cuda.is_available() else "cpu"
config = ModelConfig(d_model=256, d_ff=512, num_layers=2, num_heads=4, vocab_size=1000, context_length=128,
                     attention="sdpa")
with torch.device(device):
    model = TransformerLM(config)
tokens = torch.randint(0, config.vocab_size, (2, config.context_length), device=device)
with torch.autocast(device, dtype=torch.bfloat16):
    explained = torch._dynamo.explain(lambda ids: model(ids).float().sum())(tokens)
print(f"torch {torch.__version__}, {device}: {explained.graph_count} graph(s), {explained.graph_break_count} break(s)")
