"""--explain_precision: the dtype of every tensor of one training step under --precision, as autocast really runs it.

    python -m src.profiling.benchmark --sizes small --precision bf16 --explain_precision

Autocast picks a dtype per op, and its op lists differ between CPU and CUDA, so this runs one step of the
harness's own TrainStep (src/train/step.py: same autocast, no_grad, loss and GradScaler) on the configuration's device and reports:
parameters; the output of every module (embeddings, each RMSNorm, q/k/v/output projections, the attention
function, SwiGLU's w1/w2/w3, the LM head) through forward hooks; the loss, the gradient of the logits, the
parameters' gradients and the optimizer's state; and every torch function called in the forward pass and the
loss with its input and output dtypes (a TorchFunctionMode, which sees results after autocast chose), which is
how softmax and cross_entropy, inside the attention function and the loss, show up.
Dtypes do not depend on depth, batch or length, so a large model is explained on its own shape with 2 layers,
and the batch is cut to a few short sequences; the report says so.
"""

import re
from dataclasses import dataclass, field, replace

import torch
from torch.overrides import TorchFunctionMode

from src.spec import RunSpec
from src.train.step import TrainStep, build_model

PARAMETER_CAP = 50_000_000  # above this, 2 layers of the same shape: a 2.7B model would not fit a CPU's patience
MAX_BATCH, MAX_TOKENS = 2, 32
SHORT = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float64: "float64"}
# Views and metadata: their output has their input's dtype and says nothing about autocast.
# The embedding lookup (weight[ids], "getitem") is left out too: the Embedding module's row reports it.
_VIEWS = {"view", "view_as", "transpose", "reshape", "flatten", "unflatten", "permute", "expand", "unsqueeze",
          "squeeze", "contiguous", "detach", "getitem", "get", "t", "select", "narrow", "split", "chunk"}


def _name(dtype) -> str:
    return SHORT.get(dtype, str(dtype).replace("torch.", ""))


@dataclass
class PrecisionReport:
    spec: RunSpec
    layers: int
    batch: int
    tokens: int
    notes: list = field(default_factory=list)
    tensors: list = field(default_factory=list)  # [(what, made by, dtype)], in call order
    ops: dict = field(default_factory=dict)  # (function, input dtypes, output dtype) -> calls, in call order

    def dtype_of(self, what: str) -> str | None:
        """The dtype of the first tensor named `what` (e.g. "layers.0.attn.q_proj", "loss")."""
        return next((dtype for name, _, dtype in self.tensors if name == what), None)


class _RecordOps(TorchFunctionMode):
    """Counts (function, input dtypes, output dtype) of every torch function called while `active`."""

    def __init__(self, ops: dict):
        super().__init__()
        self.ops, self.active = ops, False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", str(func)).strip("_")
        if self.active and name not in _VIEWS and isinstance(out, torch.Tensor) and out.is_floating_point():
            values = [*args, *(kwargs or {}).values()]
            values += [v for a in values if isinstance(a, (list, tuple)) for v in a]  # torch.stack((a, b))
            inputs = [a for a in values if isinstance(a, torch.Tensor)]
            dtypes = ", ".join(sorted({_name(a.dtype) for a in inputs if a.is_floating_point()})) or "-"
            key = (name, dtypes, _name(out.dtype))
            self.ops[key] = self.ops.get(key, 0) + 1
        return out


def _affordable(spec: RunSpec, notes: list) -> RunSpec:
    """The configuration to explain: eager, and small enough to run anywhere; `notes` says what changed."""
    changes = {}
    parameters = spec.model_spec().parameter_count().total
    if parameters > PARAMETER_CAP and spec.num_layers > 2:
        notes.append(f"{spec.size} has {parameters / 1e6:.0f}M parameters: explained on its shape with 2 "
                     f"layers instead of {spec.num_layers} (dtypes do not depend on depth)")
        changes["num_layers"] = 2
    if spec.compiled:
        notes.append("run eagerly, without torch.compile or the recipe's fused kernels: the tensors keep these "
                     "dtypes, though fused kernels may compute in float32 inside")
        changes.update(compile=False, recipe="")
    batch, tokens = min(spec.batch_size, MAX_BATCH), min(spec.context_length, MAX_TOKENS)
    if (batch, tokens) != (spec.batch_size, spec.context_length):
        notes.append(f"batch {batch} x {tokens} tokens instead of {spec.batch_size} x {spec.context_length}")
        changes.update(batch_size=batch, context_length=tokens)
    return replace(spec, **changes)


def observe_precision(spec: RunSpec) -> PrecisionReport:
    """Run one step of `spec` (cheap shape) with hooks and record every dtype; see the module docstring."""
    notes = []
    run = _affordable(spec, notes)
    report = PrecisionReport(spec=spec, layers=run.num_layers, batch=run.batch_size, tokens=run.context_length,
                             notes=notes)
    torch.manual_seed(run.seed)
    model = build_model(run)
    record = report.tensors.append
    ops = _RecordOps(report.ops)

    def output_hook(name):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                record((name or "logits", type(module).__name__, _name(output.dtype)))
                if not name and output.requires_grad:
                    output.register_hook(lambda grad: record(("gradient of the logits", "backward", _name(grad.dtype))))
        return hook

    def recorded_attention(name, attend):
        def attention(q, k, v, is_causal=False):
            out = attend(q, k, v, is_causal=is_causal)
            record((f"{name}.attend", f"attention function ({spec.attention})", _name(out.dtype)))
            return out
        return attention

    record(("parameters", f"{sum(1 for _ in model.parameters())} tensors",
            ", ".join(sorted({_name(p.dtype) for p in model.parameters()}))))
    model.register_forward_pre_hook(lambda module, args: setattr(ops, "active", True))
    for name, module in model.named_modules():
        module.register_forward_hook(output_hook(name))
        if callable(getattr(module, "attend", None)):  # ours: the pluggable attention function of a layer
            module.attend = recorded_attention(name, module.attend)
    grads = set()
    for p in model.parameters():
        p.register_post_accumulate_grad_hook(lambda p: grads.add(_name(p.grad.dtype)))

    step = TrainStep(run, model)
    optimizer = step.optimizer
    if isinstance(optimizer, torch.optim.Optimizer):
        optimizer.register_step_pre_hook(lambda *args: setattr(ops, "active", False))
    elif optimizer is not None:  # in_backward, overlap: their AdamW steps from gradient hooks, inside backward
        notes.append(f"optimizer {run.optimizer} steps inside backward: its ops are listed with backward's")
    ids = torch.randint(0, run.vocab_size, (run.batch_size, run.context_length + 1), device=run.device)
    with ops:
        loss = step(ids[:, :-1], ids[:, 1:], timer=None)
    record(("loss", "cross_entropy", _name(loss.dtype)))
    if grads:
        record(("parameter gradients", "backward", ", ".join(sorted(grads))))
    if optimizer is not None:
        state = {_name(t.dtype) for s in optimizer.state.values() for t in s.values()
                 if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() > 0}
        record(("optimizer state (exp_avg, exp_avg_sq)", "AdamW", ", ".join(sorted(state))))
    return report


def _merge_layers(tensors: list, layers: int) -> list:
    """One row per role (layers.*.attn.q_proj) and dtype, instead of one per layer; names the layers if not all."""
    rows: dict[tuple, set] = {}
    for name, made_by, dtype in tensors:
        match = re.search(r"\b(?:layers|h)\.(\d+)", name)  # ours: layers.0.attn; Hugging Face's: hf.model.layers.0
        role = name[:match.start()] + "layers.*" + name[match.end():] if match else name
        layer = int(match.group(1)) if match else None
        rows.setdefault((role, made_by, dtype), set()).add(layer)
    merged = []
    for (role, made_by, dtype), seen in rows.items():
        if "layers.*" in role and len(seen) < layers:
            role = role.replace("*", ",".join(str(i) for i in sorted(seen)), 1)
        merged.append((role, made_by, dtype))
    return merged


def explain_precision(spec: RunSpec) -> str:
    """A markdown report of which dtypes one step of `spec` uses; see the module docstring."""
    report = observe_precision(spec)
    how = "fp32: no autocast" if spec.precision == "fp32" else f"{spec.precision} autocast"
    lines = [f"## Precision of one {spec.mode} step: {spec.size} under {how} on {spec.device} "
             f"({spec.attention} attention)", "",
             f"Model: {report.layers} layers, d_model {spec.d_model}, batch {report.batch} x {report.tokens} tokens."]
    lines += [f"Note: {note}." for note in report.notes]
    lines += ["", "| tensor | made by | dtype |", "|---|---|---|"]
    lines += [f"| {name} | {made_by} | {dtype} |"
              for name, made_by, dtype in _merge_layers(report.tensors, report.layers)]
    lines += ["", "| torch function (forward and loss) | input dtypes | output dtype | calls |",
              "|---|---|---|---:|"]
    lines += [f"| {name} | {inputs} | {output} | {calls} |" for (name, inputs, output), calls in report.ops.items()]
    outputs: dict[str, set] = {}
    for (name, _, output) in report.ops:
        outputs.setdefault(name, set()).add(output)
    lines.append("")
    for dtype in sorted({d for dtypes in outputs.values() for d in dtypes}):
        always = [name for name, dtypes in outputs.items() if dtypes == {dtype}]
        if always:
            lines.append(f"Always {dtype}: {', '.join(always)}.")
    either = [name for name, dtypes in outputs.items() if len(dtypes) > 1]
    if either:
        lines.append(f"Either, following their inputs: {', '.join(either)}.")
    if spec.precision != "fp32":
        lines.append("Autocast leaves the parameters in float32 and casts a low-precision copy of each weight per "
                     "matmul. Its op lists differ between CPU and CUDA: explain on the device you benchmark.")
    return "\n".join(lines) + "\n"
