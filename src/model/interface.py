"""The model interface: the one thing every layer above the model asks of it. No layer above names an architecture.

A ModelSpec says what a model is and what it costs: it builds itself (on torch's current default device, with
activation checkpointing in groups of N blocks), counts its parameters (total, and active per token for a
mixture of experts) on the meta device, gives the forward FLOPs of a step (analytic where src/model/flops.py knows
the architecture, else counted with FlopCounterMode on fake tensors) and the activation bytes kept for backward,
and names its parts for the strategies and the step: the transformer blocks (FSDP units, compile and
checkpointing wrappers), how tensor parallelism splits a block (tp_plan), the module types whose weights a
sharding strategy splits, and the linear layer type whose weights can live in bf16 with fp32 masters in the
optimizer. The runner, the train step, the strategies,
the cost model, the instruments and the predictor use only this (torchtitan's ModelSpec and optimum-benchmark's
backends are the pattern). A family is one file under src/model/families/ that subclasses ModelSpec.
"""

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass

from src.model.architecture import Architecture
from src.model.flops import forward_flops, step_flops_from_forward
from src.model.memory import MemoryEstimate, activation_bytes, estimate_memory

FLOPS_ANALYTIC, FLOPS_COUNTED = "analytic", "counted"  # how a row's FLOPs were obtained (its flops_method)


@dataclass(frozen=True)
class ParameterCount:
    total: int  # every trainable parameter, a tied one once
    active: int  # used per token: the total less the experts a token is not routed to (= total when dense)


@dataclass(frozen=True)
class Parameter:
    """One trainable parameter as the strategies see it (src/predict/cost.py counts their traffic)."""
    name: str
    numel: int
    dim0: int  # FSDP2 chunks every parameter on dim 0
    module: str  # "linear", "embedding" or "other" (norms, biases' owners aside: what a sharding strategy replicates)
    unit: str  # FSDP2's communication unit: "layers.<i>" for the i-th block's parameters, "root" for the rest

    @property
    def sharded(self) -> bool:
        """A weight of a shard type (Linear, Embedding): our FSDP shards these, TP splits them."""
        return self.module != "other"


@dataclass(frozen=True)
class TensorParallelPlan:
    """How tensor parallelism splits every transformer block (Megatron-LM's layout, Shoeybi et al. 2019 sec. 3).

    layers: (path inside a block, "colwise" | "rowwise"): q/k/v and the MLP's gate/up split their output features
      (whole heads: the attention must view its projections with -1 heads of head_dim), the output and down
      projections their input features, so each pair needs one all-reduce in forward.
    inputs: the modules (attention, MLP) whose input all their column-wise layers read: it is made a replicated
      DTensor once, so backward sums its gradient with one all-reduce, not one per layer.
    input_kwarg: the keyword a block passes that input by when not positionally (transformers: hidden_states).
    """

    layers: tuple[tuple[str, str], ...]
    inputs: tuple[str, ...]
    input_kwarg: str = ""

    def style_of(self, parameter_name: str) -> str:
        """"colwise", "rowwise" or "" (not split) of the layer holding a block's parameter, by its full name
        ("layers.0.attn.q_proj.weight"). A row-wise layer's bias is whole on every rank."""
        layer, _, _ = parameter_name.rpartition(".")
        for path, style in self.layers:
            if layer.endswith(f".{path}"):
                return style
        return ""


class ModelSpec(ABC):
    """Subclasses are frozen dataclasses (hashable: the counts below are cached per spec)."""

    family: str = ""
    name: str

    # --- what a family provides -----------------------------------------------------------------------------
    @property
    @abstractmethod
    def architecture(self) -> Architecture: ...

    @abstractmethod
    def build(self, checkpoint_group: int = 0):
        """The model as an nn.Module, (B, T) int64 token ids -> (B, T, vocab) logits, on torch's default device,
        in fp32, in train mode; checkpoint_group N > 0 recomputes the blocks in groups of N during backward."""

    @abstractmethod
    def blocks(self, model) -> list:
        """The transformer blocks of a model this spec built, in order."""

    @property
    @abstractmethod
    def shard_types(self) -> tuple:
        """Module types whose `.weight` a sharding strategy splits (the rest is replicated)."""

    @property
    @abstractmethod
    def linear_types(self) -> tuple:
        """Module types whose `.weight` is a matmul operand (bf16 weights with fp32 masters, float8)."""

    def build_reference(self):
        """The model as torch.utils.flop_counter sees every matmul of it (the counted FLOPs, the tests' reference);
        by default the model itself."""
        return self.build()

    def with_layers(self, num_layers: int) -> "ModelSpec":
        """The same model with `num_layers` blocks (how one block's figures are counted apart)."""
        raise NotImplementedError(f"{type(self).__name__} cannot change its depth")

    def tp_plan(self) -> TensorParallelPlan | None:
        """How --parallel tp and fsdp_tp split a block; None: this model has no plan (the spec refuses it)."""
        return None

    def check_checkpoint_group(self, group: int) -> None:
        """Raise ValueError when this family cannot checkpoint in groups of `group` blocks (0: off)."""

    def row_fields(self) -> dict:
        """What a results row records of the model beyond its shape (the RunSpec has the shape)."""
        a, count = self.architecture, self.parameter_count()
        return {"family": self.family, "architecture": a.model_type, "num_kv_heads": a.num_kv_heads,
                "tied_embeddings": a.tied_embeddings, "num_experts": a.num_experts,
                "experts_per_token": a.experts_per_token, "active_parameters": count.active,
                "flops_method": self.flops_method}

    # --- what every family gets from the above ----------------------------------------------------------------
    def parameter_count(self) -> ParameterCount:
        return _parameter_count(self)

    def parameter_table(self) -> tuple[Parameter, ...]:
        """Every trainable parameter (a tied one once) in registration order; backward produces them in reverse."""
        return _parameter_table(self)

    @property
    def flops_method(self) -> str:
        return FLOPS_ANALYTIC if self.architecture.known else FLOPS_COUNTED

    def forward_flops(self, batch_size: int, seq_len: int) -> int:
        if self.architecture.known:
            return forward_flops(self.architecture, batch_size, seq_len)
        from src.model.counted import counted_forward_flops

        return counted_forward_flops(self, batch_size, seq_len)

    def step_flops(self, batch_size: int, seq_len: int, mode: str) -> int:
        return step_flops_from_forward(self.forward_flops(batch_size, seq_len), mode)

    def activation_bytes(self, batch_size: int, seq_len: int, precision: str, checkpoint_group: int = 0) -> int:
        """Bytes a train step holds for backward at its peak (src/model/memory.py; counted on fake tensors for an
        architecture the formulas do not know)."""
        if self.architecture.known:
            return activation_bytes(self.architecture, batch_size, seq_len, precision, checkpoint_group)
        from src.model.counted import counted_activation_bytes

        return counted_activation_bytes(self, batch_size, seq_len, precision, checkpoint_group)

    def memory_estimate(self, batch_size: int, seq_len: int, mode: str, precision: str,
                        checkpoint_group: int = 0) -> MemoryEstimate:
        """The single-process estimate: every user of a memory figure asks this one."""
        activations = None if mode == "forward" else self.activation_bytes(batch_size, seq_len, precision,
                                                                             checkpoint_group)
        return estimate_memory(self.architecture, self.parameter_count().total, batch_size, seq_len, mode,
                               precision, checkpoint_group, activations=activations)


@functools.lru_cache(maxsize=64)
def _meta_model(spec: ModelSpec):
    import torch

    with torch.device("meta"):
        return spec.build()


@functools.lru_cache(maxsize=64)
def _parameter_count(spec: ModelSpec) -> ParameterCount:
    total = sum(p.numel() for p in _meta_model(spec).parameters() if p.requires_grad)
    a = spec.architecture
    idle_experts = a.num_experts - a.experts_per_token if a.moe else 0
    per_expert = 3 * a.d_model * a.expert_d_ff  # gate, up, down
    return ParameterCount(total, total - a.num_layers * idle_experts * per_expert)


@functools.lru_cache(maxsize=64)
def _parameter_table(spec: ModelSpec) -> tuple[Parameter, ...]:
    import torch.nn as nn

    model = _meta_model(spec)
    block_of = {id(p): f"layers.{i}" for i, block in enumerate(spec.blocks(model)) for p in block.parameters()}
    owner = {}  # id(parameter) -> (its name, whether its module shards it, kind): the first module to hold it
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in owner:
                continue
            sharded = isinstance(module, spec.shard_types)  # our FSDP shards every parameter of such a module
            embedding = isinstance(module, nn.Embedding) or "embedding" in type(module).__name__.lower()
            owner[id(p)] = (f"{module_name}.{name}" if module_name else name,
                            ("embedding" if embedding else "linear") if sharded else "other")
    return tuple(Parameter(owner[id(p)][0], p.numel(), p.shape[0] if p.dim() else 1, owner[id(p)][1],
                           block_of.get(id(p), "root"))
                 for p in model.parameters() if p.requires_grad)  # registration order, which backward reverses
