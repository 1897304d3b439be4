"""Which kind of work an operator or kernel is: the categories of the trace's time table, decided by name.

Two kinds of rule. Enclosing rules claim everything run inside an op: fp8 scaling work, the optimizer's step, a
normalisation op and a fused attention op (SDPA's math fallback calls matmul and softmax, but it is one attention
call). Name rules sort the innermost op: aten::mm is a matmul wherever it runs. A view or bookkeeping op has no
category of its own (None) and takes its parent's, so aten::t inside aten::linear counts as matmul. Module context (the
RMSNorm and attention modules, which are compositions of plain ops) is applied by the caller, trace_summary.py.
"""

import re

MATMUL = "matmul"
ATTENTION = "attention"
SOFTMAX = "softmax"
NORMALISATION = "normalisation"
ELEMENTWISE = "elementwise and activation"
OPTIMIZER = "optimizer"
COPIES = "copies and casts"
FP8_SCALING = "fp8 scaling and casts"
OTHER = "other"
CATEGORIES = (MATMUL, ATTENTION, SOFTMAX, NORMALISATION, ELEMENTWISE, OPTIMIZER, COPIES, FP8_SCALING, OTHER)

# torchao's float8 work as inductor fuses it: amax reductions, scale arithmetic (clamp, reciprocal) and the casts
# feeding a scaled matmul (`_scaled_mm` in a Triton kernel's name is its prologue, not the matmul, which is a cuBLAS
# kernel). The first enclosing rule, so it claims the kernel whether the kernel's name or its launcher's (inductor
# records a host op of the same name) is read: the fusions carry the neighbour's name too, and by it the 2.7B fp8
# tensorwise step's trace (H200, 2026-12-03) put ~18.5 ms of such kernels in normalisation (fused with RMSNorm)
# and the rowwise step's 6.8 ms in matmul (the `_mm_` rule), hiding what fp8 costs beside its faster matmuls.
_FP8_SCALING = re.compile(r"^triton_\w*(amax|abs_max|_scaled_mm|clamp\w*reciprocal)", re.I)

_ENCLOSING = (
    (FP8_SCALING, _FP8_SCALING),
    (OPTIMIZER, re.compile(r"^Optimizer\.step#|adamw?_|_foreach_|_amp_(update|foreach)|multi_tensor_apply", re.I)),
    (NORMALISATION, re.compile(r"rms_?norm|layer_?norm|group_?norm|batch_?norm", re.I)),
    (ATTENTION, re.compile(r"scaled_dot_product|flash|fmha|efficient_attention|cudnn_attention|sdpa", re.I)),
)

_ATEN_OPS = {
    MATMUL: "mm bmm addmm baddbmm addbmm matmul linear _scaled_mm dot einsum",
    SOFTMAX: "softmax _softmax log_softmax _log_softmax _softmax_backward_data _log_softmax_backward_data",
    COPIES: "copy_ to _to_copy clone contiguous cat stack fill_ zero_ zeros zeros_like ones_like full "
            "reshape index_put_ masked_scatter",
    ELEMENTWISE: "add add_ sub rsub mul mul_ div div_ neg pow rsqrt sqrt exp log sin cos silu gelu relu sigmoid "
                 "tanh where masked_fill masked_fill_ mean sum maximum minimum clamp abs sign le lt ge gt eq ne "
                 "bitwise_not logical_not silu_backward gelu_backward threshold_backward sigmoid_backward "
                 "tanh_backward arange",
}
_ATEN_CATEGORY = {op: category for category, ops in _ATEN_OPS.items() for op in ops.split()}
_BOOKKEEPING = set(
    "view _unsafe_view as_strided transpose t permute expand expand_as slice select unsqueeze squeeze detach "
    "alias empty empty_strided resolve_conj resolve_neg flatten unflatten split chunk narrow lift_fresh "
    "result_type unbind view_as _reshape_alias empty_like new_empty".split())

# Autograd nodes are named after the forward op: MmBackward0, SoftmaxBackward0, ToCopyBackward0.
_NODE_CATEGORY = {
    **dict.fromkeys(("mm", "bmm", "addmm", "baddbmm"), MATMUL),
    **dict.fromkeys(("softmax", "logsoftmax"), SOFTMAX),
    **dict.fromkeys(("tocopy", "clone", "stack", "cat", "copy"), COPIES),
    **dict.fromkeys(("add", "sub", "rsub", "mul", "div", "neg", "pow", "rsqrt", "sqrt", "exp", "silu", "gelu",
                     "relu", "sigmoid", "tanh", "where", "maskedfill", "mean", "sum"), ELEMENTWISE),
}
_NODE = re.compile(r"(?:^|: )(\w+?)Backward\d*$")

# Kernels without an aten op above them (Triton, torch.compile) and kernels named more precisely than their op.
_KERNELS = (
    (MATMUL, re.compile(r"gemm|nvjet|cutlass|cublas|xmma|wgmma|triton_tem_fused|_mm_", re.I)),
    (SOFTMAX, re.compile(r"softmax", re.I)),
    (NORMALISATION, re.compile(r"^triton_\w*rsqrt", re.I)),
    (COPIES, re.compile(r"memcpy|memset|copy|(?<!broad)cast|convert|fill", re.I)),
    (ELEMENTWISE, re.compile(r"elementwise|vectorized|reduce_kernel|^triton_", re.I)),
)


def enclosing_category(name: str) -> str | None:
    """The category an op imposes on everything inside it (optimizer, normalisation, fused attention), or None."""
    for category, pattern in _ENCLOSING:
        if pattern.search(name):
            return category
    return None


def op_category(name: str) -> str | None:
    """The category of one host op or autograd node by its own name; None where it should take its parent's."""
    if name.startswith("aten::"):
        op = name[len("aten::"):]
        return None if op in _BOOKKEEPING else _ATEN_CATEGORY.get(op, OTHER)
    node = _NODE.search(name)
    if node:
        return _NODE_CATEGORY.get(node.group(1).lower())
    return None


def kernel_category(name: str) -> str:
    """The category of a device kernel (or memcpy/memset) by its own name alone."""
    enclosing = enclosing_category(name)
    if enclosing:
        return enclosing
    for category, pattern in _KERNELS:
        if pattern.search(name):
            return category
    return OTHER


def is_norm_module(class_name: str) -> bool:
    return "Norm" in class_name


def is_attention_module(class_name: str) -> bool:
    return "Attention" in class_name
