"""LiveBytes: the bytes of tensor storages that ops create under a dispatch mode and that are still alive, now
(`current`) and at most (`peak`): what the memory estimates are checked against on CPU, where no allocator counts."""

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveBytes(TorchDispatchMode):
    """Storages whose data_ptr is in `excluded` (a model's parameters and buffers) are not counted."""

    def __init__(self, excluded=()):
        super().__init__()
        self.excluded, self.sizes, self.current, self.peak = set(excluded), {}, 0, 0

    def _freed(self, key):
        self.current -= self.sizes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()  # the same Python object for every view of it, so it can be watched
                if id(storage) in self.sizes or storage.data_ptr() in self.excluded or not storage.nbytes():
                    continue
                self.sizes[id(storage)] = storage.nbytes()
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
                weakref.finalize(storage, self._freed, id(storage))
        return out


def owned_storages(model) -> set:
    """The storages of a model's parameters and buffers: what LiveBytes should leave out (views of them count
    nothing new: `weight.t()` in a linear layer shares the weight's storage)."""
    return {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}


def saved_bytes(model, tokens, precision: str) -> int:
    """Bytes of the distinct storages autograd saves for backward over a forward and its loss (the model's
    parameters and buffers excluded), plus the kept logits: what the activation estimates are checked against."""
    import contextlib

    import torch.nn.functional as F

    owned = owned_storages(model)
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in owned:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        logits = model(tokens)
        F.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten())
    saved[logits.untyped_storage().data_ptr()] = logits.untyped_storage().nbytes()
    return sum(saved.values())


def cpu_autocast_softmax_bytes(architecture, batch: int, seq: int, precision: str) -> int:
    """The estimates are CUDA's: under CUDA's autocast the naive attention's softmax runs in fp32 and its fp32
    output is kept beside the bf16 copy P @ V keeps; CPU's autocast keeps the softmax in bf16 (measured: only the
    bf16 (B, nh, T, T) tensor is saved). What to add to a CPU measurement to compare it with the estimate."""
    if architecture.attention != "naive" or precision == "fp32":
        return 0
    return architecture.num_layers * batch * architecture.num_heads * seq * seq * 4
