"""FLOPs and activation bytes counted on fake tensors, for architectures the analytic formulas do not know.

The model is built and run under FakeTensorMode: every tensor has its shape, dtype and device but no memory, so an
8B model at context 8192 is counted on a laptop. FLOPs: torch.utils.flop_counter.FlopCounterMode over a forward
(backward is twice it, as in src/model/flops.py). Activations: the storages autograd saves for backward
(saved-tensor hooks), parameters excluded, each storage once. What this cannot count: data-dependent control flow
(a mixture of experts that routes with nonzero(), for example) fails under fake tensors; the error then says so
and the row's figure is left empty by the caller. Both run in fp32 or under the CPU's bf16 autocast, which makes
the same casts as CUDA's.
"""

import contextlib
import functools


def _fake_forward(spec, batch_size: int, seq_len: int, precision: str, mode, reference: bool = False):
    """A forward and its loss on fake tensors, inside the context `mode(model)` makes. reference=True builds the
    model the FLOP counter fully sees (eager attention, experts one by one: SDPA on CPU and transformers'
    grouped experts have no FLOP formula and would count as 0)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        with torch.device("cpu"):
            model = spec.build_reference() if reference else spec.build()
        tokens = torch.zeros(batch_size, seq_len, dtype=torch.long)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision != "fp32" else contextlib.nullcontext()
        with mode(model), autocast:
            logits = model(tokens)
            torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten())
        return logits


@functools.lru_cache(maxsize=64)
def counted_forward_flops(spec, batch_size: int, seq_len: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    _fake_forward(spec, batch_size, seq_len, "fp32", lambda model: counter, reference=True)
    return counter.get_total_flops()


@functools.lru_cache(maxsize=64)
def counted_activation_bytes(spec, batch_size: int, seq_len: int, precision: str, checkpoint_group: int = 0) -> int:
    """The storages the forward saves for backward, and the kept logits. With checkpointing in groups of N blocks
    (saved-tensor hooks do not see inside a checkpoint): one block's saved bytes and what lies outside the blocks
    are counted on the same model with 2 and 1 layers, then put together as src/model/memory.py puts its analytic
    figures: each group's fp32 input and the outside kept, one group re-made."""
    if checkpoint_group:
        two, one = (counted_activation_bytes(spec.with_layers(n), batch_size, seq_len, precision) for n in (2, 1))
        block, outside = two - one, 2 * one - two
        a = spec.architecture
        group_input = 4 * batch_size * seq_len * a.d_model
        groups, n = -(-a.num_layers // checkpoint_group), min(checkpoint_group, a.num_layers)
        return groups * group_input + outside + n * block - group_input
    import torch
    from torch.multiprocessing.reductions import StorageWeakRef

    saved: dict = {}

    @contextlib.contextmanager
    def saving(model):
        owned = {StorageWeakRef(t.untyped_storage()) for t in [*model.parameters(), *model.buffers()]}

        def pack(t):
            ref = StorageWeakRef(t.untyped_storage())
            if ref not in owned:
                saved[ref] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield

    logits = _fake_forward(spec, batch_size, seq_len, precision, saving)
    return sum(saved.values()) + logits.untyped_storage().nbytes()
