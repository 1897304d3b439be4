"""Count what a process sends: a dispatch mode that sees every c10d collective issued through torch.distributed,
and the functional collectives DTensor issues.

Sizes are counted as nccl-tests' "size": the full (unsharded) buffer - all_reduce and broadcast the tensor,
all_gather the output, reduce_scatter the input. (PyTorch's CommDebugMode counts the same ops but not bytes.)
"""

from collections import Counter

from torch.utils._python_dispatch import TorchDispatchMode

# c10d op -> (kind, which argument holds the full buffer)
_FULL_BUFFER = {
    "allreduce_": ("all_reduce", 0),
    "broadcast_": ("broadcast", 0),
    "_allgather_base_": ("all_gather", 0),
    "_reduce_scatter_base_": ("reduce_scatter", 1),
}


# torch's functional collectives (what DTensor redistributes with): op -> kind; the full buffer is the input, or the
# output for the all-gather
_FUNCTIONAL = {"all_reduce": "all_reduce", "all_gather_into_tensor": "all_gather",
               "reduce_scatter_tensor": "reduce_scatter"}
_BOOKKEEPING = ("wait_tensor", "_wrap_tensor_autograd")  # waits on, and wraps, a collective's result: nothing sent


class WireCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.bytes: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.unknown: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        namespace, _, op = func._schema.name.partition("::")
        if namespace == "c10d" and op in _FULL_BUFFER:
            kind, index = _FULL_BUFFER[op]
            tensors = args[index] if isinstance(args[index], (list, tuple)) else [args[index]]
            self.bytes[kind] += sum(t.numel() * t.element_size() for t in tensors)
            self.calls[kind] += 1
        elif namespace == "c10d":
            self.unknown[op] += 1
        elif namespace == "_c10d_functional" and op not in _BOOKKEEPING:
            result = func(*args, **(kwargs or {}))
            if op not in _FUNCTIONAL:
                self.unknown[op] += 1
                return result
            full = result if _FUNCTIONAL[op] == "all_gather" else args[0]
            self.bytes[_FUNCTIONAL[op]] += full.numel() * full.element_size()
            self.calls[_FUNCTIONAL[op]] += 1
            return result
        return func(*args, **(kwargs or {}))
