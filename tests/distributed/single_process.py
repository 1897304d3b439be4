"""What the distributed tests compare against: the models, the batches, and the same training loop on one process.

Each strategy is trained on rank r's slice of every batch; the reference trains the unwrapped model on the whole
batch. With equal slices, the average of the slice-mean gradients is the whole-batch mean gradient, so the
parameters must agree up to floating-point reassociation.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from src.distributed import BucketedDDP, FlatDDP, FSDP, NaiveDDP, OverlapDDP, ShardedOptimizer
from src.model.config import ModelConfig
from src.model.transformer import RMSNorm, TransformerLM

CS336_TINY = ModelConfig(d_model=32, d_ff=64, num_layers=2, num_heads=4, vocab_size=64, context_length=16)
# A Llama-like Hugging Face model with grouped-query attention (2 KV heads of 4) and a tied head, built through the
# model interface's hf family as the benchmark builds it
HF_LLAMA_GQA_TIED = dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=64, tie_word_embeddings=True,
                         max_position_embeddings=64)
BATCH, SEQ, STEPS = 8, 16, 3  # 8 sequences split 4 + 4 (2 ranks) or 2 x 4 (4 ranks)


class ToyTied(nn.Module):
    """A tied input/output embedding, a frozen Linear weight (its bias trains), a norm and a plain Linear.

    The norm is our RMSNorm, which computes in fp32: nn.LayerNorm on bf16 inputs reduces its weight gradient in a
    way that made half-batch + half-batch differ from the whole batch by 1.4e-4 after 3 steps (lr 0.02) on CPU,
    with no communication involved - more than the 1e-4 the FSDP low-precision test allows."""

    def __init__(self, vocab: int = 64, d: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.frozen = nn.Linear(d, d)
        self.frozen.weight.requires_grad_(False)
        self.norm = RMSNorm(d)
        self.fc = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, token_ids):  # (B, T) -> (B, T, vocab)
        h = self.embed(token_ids)  # (B, T, d)
        h = h + self.fc(F.gelu(self.frozen(self.norm(h))))
        return self.head(h)


def _hf_llama():
    import json

    from src.model.families.hf import HfModel

    return HfModel("llama-gqa-tied", json.dumps(HF_LLAMA_GQA_TIED, sort_keys=True)).build()


MODELS = {"cs336": lambda: TransformerLM(CS336_TINY), "toy": ToyTied, "hf-llama-gqa-tied": _hf_llama}


def build(model_name: str, seed: int, device: str = "cpu") -> nn.Module:
    torch.manual_seed(seed)
    return MODELS[model_name]().to(device)


def batches(steps: int = STEPS, batch: int = BATCH, device: str = "cpu") -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1234)
    return [torch.randint(0, 64, (batch, SEQ + 1), generator=generator).to(device) for _ in range(steps)]


def rank_slice(tokens: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    per_rank = tokens.shape[0] // world_size
    return tokens[rank * per_rank : (rank + 1) * per_rank]


def train(model: nn.Module, optimizer, token_batches, finish=lambda: None) -> None:
    """Next-token cross entropy (in fp32 whatever the logits' dtype), backward, gradient sync, step."""
    for tokens in token_batches:
        logits = model(tokens[:, :-1])  # (B, T, vocab)
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        finish()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def sgd(params, lr: float = 0.1):
    """Linear in the gradients, so reassociation errors stay ~1e-7 relative (Adam can amplify a near-zero
    gradient's rounding to a full lr-sized update); momentum gives the sharded optimizer state to keep."""
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def reference_params(model_name: str, lr: float = 0.1, device: str = "cpu") -> dict[str, torch.Tensor]:
    model = build(model_name, seed=0, device=device)
    train(model, sgd(model.parameters(), lr), batches(device=device))
    return {name: p.detach() for name, p in model.named_parameters()}


BUCKET_MB, TINY_BUCKET_MB = 0.01, 1e-4  # ~10 KB: a few parameters per bucket; 105 B: smaller than any parameter

# name -> (wrap the model, build the optimizer over the wrapped model)
STRATEGIES = {
    "ddp_naive": (NaiveDDP, lambda m: sgd(m.parameters())),
    "ddp_flat": (FlatDDP, lambda m: sgd(m.parameters())),
    "ddp_overlap": (OverlapDDP, lambda m: sgd(m.parameters())),
    "ddp_bucketed": (lambda m: BucketedDDP(m, BUCKET_MB), lambda m: sgd(m.parameters())),
    "ddp_bucketed_tiny": (lambda m: BucketedDDP(m, TINY_BUCKET_MB), lambda m: sgd(m.parameters())),
    "zero1": (OverlapDDP, lambda m: ShardedOptimizer(m.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)),
    "fsdp": (FSDP, lambda m: sgd(m.parameters())),
}


def full_params(wrapped: nn.Module) -> dict[str, torch.Tensor]:
    from src.distributed import gather_full_params

    if isinstance(wrapped, FSDP):
        return gather_full_params(wrapped)
    return {name: p.detach() for name, p in wrapped.module.named_parameters()}


class _CastTo(nn.Module):
    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def forward(self, weight):
        return weight.to(self.dtype)


def reference_params_with_casts(model_name: str, compute_dtype: torch.dtype, lr: float):
    """Single-process training where each weight FSDP shards is used cast to `compute_dtype` (masters stay fp32):
    the same casts as FSDP(compute_dtype=...), without any communication."""
    from torch.nn.utils import parametrize

    from src.distributed.fsdp import DEFAULT_SHARD_MODULES

    model = build(model_name, seed=0)
    cast = [(m, name) for m in model.modules() if isinstance(m, DEFAULT_SHARD_MODULES) for name, _ in m.named_parameters(recurse=False)]
    for module, name in cast:
        parametrize.register_parametrization(module, name, _CastTo(compute_dtype), unsafe=True)
    train(model, sgd(model.parameters(), lr), batches())
    for module, name in cast:
        parametrize.remove_parametrizations(module, name, leave_parametrized=False)
    return {name: p.detach() for name, p in model.named_parameters()}
