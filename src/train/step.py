"""How one configuration trains: the model (built through the model interface: ours, or any Hugging Face causal
LM), the optimizer, autocast, torch.compile, and the fast recipe. The runner times what this builds; the numerics check reuses it.

The fast recipe (`--recipe fast`) keeps standard mixed-precision numerics (fp32 master weights, bf16 autocast)
and changes only how the step runs: fused attention, model and loss compiled together (so the cross-entropy
fuses with the head's output), linear weights kept in bf16 with their fp32 masters in an AdamW that writes the
bf16 copy as it updates (no weight or gradient casts; one fused pass per parameter), and CUDA graphs for models
small enough to be launch-bound; in fp8, inductor's own CUDA graphs instead (compile mode reduce-overhead: torchao's
scaling kernels make every size launch-bound below 2.7B). Under a --parallel strategy it is bf16 autocast, fused
attention, torch.compile and fused AdamW only (src/train/parallel.py says what each strategy compiles).
"""

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from src import nvtx
from src.spec import GRAPHED_COMPILE_MODE, HOOKED_OPTIMIZERS, SHARDED_OPTIMIZERS, RunSpec
from src.train.quiet import quiet_cpu_compile_logs


class phase:
    """`with phase(timer, "forward"):` times the block with any timer that has start(name)/stop(name) (the
    harness's timers); `timer` may be None (untimed)."""

    __slots__ = ("timer", "name")

    def __init__(self, timer, name: str):
        self.timer, self.name = timer, name

    def __enter__(self):
        if self.timer is not None:
            self.timer.start(self.name)

    def __exit__(self, *exc):
        if self.timer is not None and exc[0] is None:
            self.timer.stop(self.name)


# fp8: torchao's float8 linears compute their matmuls in fp8; everything else runs under bf16 autocast
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.bfloat16}
# Below this many parameters the step is launch-bound on an H100 (the small preset's eager step is 57 ms for
# ~4 ms of matmul work), so the recipe replays the compiled step as a CUDA graph.
CUDA_GRAPH_MAX_PARAMETERS = 500_000_000
# Optimizers the recipe's CUDA graphs do not capture (not tried): ours (see TrainStep), and those stepped from
# gradient hooks inside the backward
UNGRAPHED_OPTIMIZERS = ("ours", *HOOKED_OPTIMIZERS)


class LanguageModelLoss(nn.Module):
    """model + cross-entropy as one module, so torch.compile sees (and fuses) both."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs, targets):  # (B, T), (B, T) -> scalar
        logits = self.model(inputs)  # (B, T, vocab)
        with nvtx.model_range("loss"):
            return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def build_model(spec: RunSpec) -> nn.Module:
    with torch.device(spec.device):
        return spec.model_spec().build(spec.checkpoint_group)


def uses_cuda_graphs(spec: RunSpec, parameters: int) -> bool:
    """The recipe's whole-step graphs (TrainStep._capture). fp8 is left out: it compiles in reduce-overhead mode
    instead (inductor's own CUDA graphs, per compiled graph), and so is any step compiled that way: a replay of
    inductor's graphs inside our capture fails ("Cannot prepare for replay during capturing stage", small, H200,
    2026-12-04). So are the strategies (their collectives and hooks under graph capture are not built)."""
    return (spec.recipe == "fast" and spec.device == "cuda" and parameters < CUDA_GRAPH_MAX_PARAMETERS
            and spec.precision != "fp8" and spec.parallel == "none" and not spec.replays_compiled_graphs)


def compile_options(spec: RunSpec) -> dict:
    """torch.compile's keyword arguments for this step: its mode where not the default."""
    return {"mode": spec.compile_mode} if spec.compile_mode not in ("", "default") else {}


def uses_bf16_weights(spec: RunSpec) -> bool:
    """The fast recipe trains the model's linear layers (the interface's linear_types, and torchao's float8
    linears under fp8) on bf16 weights with fp32 masters in the optimizer (where it does not use CUDA graphs);
    single-process only (the strategies would all-reduce or shard bf16 weights whose masters the optimizer holds:
    not built). Under fp8 the float8 linears then scale and cast bf16 weights, not fp32 ones: half the bytes read
    (the 2.7B step's weight amax and transposed-cast kernels, 5 ms of its trace with fp32 weights, 2026-12-03),
    and our AdamW instead of torch's fused one over fp32 weights (24.6 against 27.2 ms there)."""
    return (spec.recipe == "fast" and spec.mode == "train" and spec.device == "cuda"
            and spec.precision in ("bf16", "fp8") and spec.parallel == "none")


def trains_bf16_weights(spec: RunSpec, optimizer: str) -> bool:
    """Whether the step keeps bf16 weights with fp32 masters: always with ours; with overlap where the recipe would
    (each block's inner AdamW is then ours over the block's masters)."""
    return optimizer == "ours" or (optimizer == "overlap" and uses_bf16_weights(spec))


def chosen_optimizer(spec: RunSpec, parameters: int) -> str:
    """The AdamW a step uses: spec.optimizer when given; else the recipe's choice, ours (bf16 weights with fp32
    masters) where it applies and the step is not replayed as CUDA graphs, fused elsewhere on CUDA; else torch's
    default. An explicit choice beats the recipe's: --optimizer ours turns the recipe's CUDA graphs off (they
    cannot capture it, see TrainStep), default and fused keep them (both capturable). The sharded optimizers
    (zero1, torch_zero1) wrap torch's default AdamW."""
    if spec.optimizer:
        return spec.optimizer
    if spec.recipe != "fast" or spec.device != "cuda" or spec.parallel in SHARDED_OPTIMIZERS:
        return "default"
    return "ours" if uses_bf16_weights(spec) and not uses_cuda_graphs(spec, parameters) else "fused"


def master_weighted(model: nn.Module, model_spec) -> list[nn.Parameter]:
    """The weights that become bf16 with fp32 masters: every linear's (the interface's linear_types, and
    nn.Linear: torchao's Float8Linear, which replaced our linears under fp8, is one), in module order. A head tied
    to the embedding stays fp32: in bf16 the embedding would start the residual stream in bf16."""
    linear = (*model_spec.linear_types, nn.Linear)
    embeddings = {id(m.weight) for m in model.modules()
                  if isinstance(m, model_spec.shard_types) and not isinstance(m, linear)}
    return [m.weight for m in model.modules() if isinstance(m, linear) and id(m.weight) not in embeddings]


class TrainStep:
    """One step of `spec.mode`, each phase timed and annotated: forward (with loss), backward, optimizer.

    With CUDA graphs (the fast recipe on a launch-bound model) the first call records forward, backward and the
    optimizer step as three graphs sharing one memory pool, and every call replays them inside the same phase
    timers: no Python and no kernel launches left on the host, yet each phase is still timed on its own.
    """

    def __init__(self, spec: RunSpec, model: nn.Module, lr: float = 1e-4, fused_adamw: bool | None = None,
                 cuda_graphs: bool | None = None, bf16_weights: bool | None = None):
        """fused_adamw / cuda_graphs / bf16_weights override the recipe's choice (the numerics check isolates
        each change)."""
        self.fp8_linears: list[str] = []
        if spec.precision == "fp8":  # convert before any wrapper or compile sees the model (torchao's rule)
            from src.train.fp8 import convert_to_fp8  # torchao is imported only when fp8 is asked for

            self.fp8_linears = convert_to_fp8(model, spec.fp8_recipe)
        self.parallel = None
        if spec.parallel != "none":  # wrap first: the optimizer steps the wrapper's (maybe sharded) parameters
            from src.train.parallel import parallelize

            self.parallel = parallelize(spec, model)
            model = self.parallel.model
        self.spec, self.model = spec, model
        parameters = sum(p.numel() for p in model.parameters())
        self.optimizer_name = chosen_optimizer(spec, parameters)
        if cuda_graphs is None:
            cuda_graphs = uses_cuda_graphs(spec, parameters) and self.optimizer_name not in UNGRAPHED_OPTIMIZERS
        if cuda_graphs and spec.replays_compiled_graphs:
            raise ValueError(f"compile mode {GRAPHED_COMPILE_MODE} replays its own CUDA graphs; the step's whole-step "
                             "graphs cannot capture them")
        if cuda_graphs and self.optimizer_name in HOOKED_OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer_name} steps from gradient hooks; CUDA graphs do not "
                             "capture it")
        self.cuda_graphs = cuda_graphs
        self.bf16_weights = trains_bf16_weights(spec, self.optimizer_name) if bf16_weights is None else bf16_weights
        if self.bf16_weights and self.cuda_graphs:
            # Capturing the backward graph failed on an H100 (torch 2.11: cudaErrorStreamCaptureImplicit, "would
            # make the legacy stream depend on a capturing blocking stream"); not investigated further.
            raise ValueError("bf16 weights with fp32 masters do not run under the recipe's CUDA graphs")
        self.notes: list[str] = []  # what the step had to change, for the record's warnings
        self.optimizer = None
        if spec.mode == "train" and self.bf16_weights:
            # Linear weights become bf16 Parameters and their fp32 masters move into the optimizer, which writes
            # the rounded copy as it updates: no autocast casts of weights and gradients (the 2.7B step went from
            # 226 to 205 ms on an H100), the same arithmetic (src/kernels/master_adamw.py).
            from src.kernels.master_adamw import MasterWeightAdamW, bf16_with_masters  # Triton, loaded when used

            masters = bf16_with_masters(master_weighted(model, spec.model_spec()))
            if self.optimizer_name == "overlap":  # one MasterWeightAdamW per block, each finding its own masters
                self.optimizer = self._overlapped(lambda params: MasterWeightAdamW(params, masters=masters, lr=lr))
            else:
                self.optimizer = MasterWeightAdamW(model.parameters(), masters=masters, lr=lr)
        elif spec.mode == "train" and self.optimizer_name == "overlap":
            fused = spec.device == "cuda" if fused_adamw is None else fused_adamw
            self.optimizer = self._overlapped(lambda params: torch.optim.AdamW(params, lr=lr, fused=fused or None))
        elif spec.mode == "train" and self.optimizer_name == "in_backward":
            # Each parameter's AdamW step runs from its post-accumulate-grad hook and frees the gradient: the
            # optimizer phase's time moves into backward, and no whole set of gradients is ever alive.
            from src.train.optimizer_in_backward import OptimizerInBackward

            self.optimizer = OptimizerInBackward(model.parameters(), lr=lr, fused=spec.device == "cuda" or None)
        elif spec.mode == "train" and self.parallel and self.parallel.make_optimizer:
            self.optimizer = self.parallel.make_optimizer(model.parameters(), lr)  # zero1, torch_zero1: sharded
        elif spec.mode == "train":
            # fused=True: one multi-tensor CUDA kernel; the default foreach path runs ~10 kernels per parameter
            # group and took 94 ms for 2.7B on an H100, against ~32 ms for its 95 GB of traffic (fused: 36.5 ms).
            fused = self.optimizer_name == "fused" if fused_adamw is None else fused_adamw
            if self.cuda_graphs:  # a replayed graph reads lr and the step count from device memory
                self.optimizer = torch.optim.AdamW(model.parameters(), lr=torch.tensor(lr, device=spec.device),
                                                   fused=fused or None, capturable=True)
            else:
                self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, fused=fused or None)
        use_scaler = spec.precision == "fp16" and spec.mode != "forward"
        self.scaler = torch.amp.GradScaler(spec.device) if use_scaler else None
        dtype = AUTOCAST_DTYPES.get(spec.precision)
        # Autocast's cache of cast weights must be off while a graph records (torch.cuda.graph's documented rule).
        self.autocast = (lambda: torch.autocast(spec.device, dtype=dtype, cache_enabled=not self.cuda_graphs)) \
            if dtype else contextlib.nullcontext
        self.grad_mode = torch.no_grad if spec.mode == "forward" else contextlib.nullcontext
        self.loss = LanguageModelLoss(model)
        if spec.compiled:
            quiet_cpu_compile_logs()
            if self.parallel and self.parallel.compiled:
                pass  # fsdp2 compiled its blocks before sharding them
            elif spec.compile_scope == "blocks":
                # Each block compiled in place (torchtitan's way); embedding, final norm, head and loss stay eager.
                # The blocks share one graph (same code, parameters as inputs), so compile time is one block's.
                for block in spec.model_spec().blocks(model):
                    block.compile(**compile_options(spec))
            else:
                self.loss = torch.compile(self.loss, **compile_options(spec))
        self.graphs = None

    def _overlapped(self, make_optimizer):
        """Each block's AdamW stepped on a side stream once the block's gradients are ready; the embedding, final
        norm and head (and a tied weight) in step(); src/train/optimizer_overlap.py."""
        from src.train.optimizer_overlap import OverlappedOptimizer, split_by_block

        groups, rest = split_by_block(self.model.parameters(), self.spec.model_spec().blocks(self.model))
        return OverlappedOptimizer(groups, make_optimizer, rest=rest)

    def _forward(self, inputs, targets):
        if self.spec.replays_compiled_graphs:  # tell inductor's graph trees a step begins, or a replay could
            torch.compiler.cudagraph_mark_step_begin()  # overwrite outputs of the last one still held
        with self.grad_mode(), self.autocast():
            return self.loss(inputs, targets)

    def _backward(self, loss):
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def _optimizer_step(self):
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def __call__(self, inputs, targets, timer):
        if self.cuda_graphs:
            return self._replay(inputs, targets, timer)
        mode = self.spec.mode
        with nvtx.range("forward"), phase(timer, "forward"):
            loss = self._forward(inputs, targets)
        if mode != "forward":
            with nvtx.range("backward"), phase(timer, "backward"):
                self._backward(loss)
            if self.parallel and self.parallel.finish:  # our strategies: what of the gradient sync is left
                with nvtx.range("gradient sync"), phase(timer, "sync"):
                    self.parallel.finish()
        if mode == "train":
            with nvtx.range("optimizer"), phase(timer, "optimizer"):
                self._optimizer_step()
        if mode != "forward":
            self.model.zero_grad(set_to_none=True)
        # a loss that is a graph tree's output (the model compiled whole) is overwritten by the next step's replay
        return loss.detach().clone() if self.spec.replays_compiled_graphs else loss.detach()

    def loss_and_gradients(self, inputs, targets) -> torch.Tensor:
        """Forward and backward at the current weights, eagerly (no graphs, no timer, no optimizer step): the loss,
        with every parameter's .grad left in place for the caller to read and then clear."""
        loss = self._forward(inputs, targets)
        self._backward(loss)
        return loss.detach()

    def _replay(self, inputs, targets, timer):
        if self.graphs is None:
            self._capture(inputs, targets)
        self.static_inputs.copy_(inputs)  # a (B, T) token copy: data loading, outside the timed phases
        self.static_targets.copy_(targets)
        for name, graph in self.graphs.items():
            with nvtx.range(name), phase(timer, name):
                graph.replay()
        return self.static_loss.detach().clone()  # the next replay overwrites static_loss

    def _optimizer_tensors(self) -> list[torch.Tensor]:
        """Every tensor of the optimizer's state and parameter groups (lr and step counts kept on the device)."""
        if self.optimizer is None:
            return []
        values = [v for state in self.optimizer.state.values() for v in state.values()]
        values += [v for group in self.optimizer.param_groups for k, v in group.items() if k != "params"]
        return [v for v in values if torch.is_tensor(v)]

    def _capture(self, inputs, targets):
        """Three real steps on a side stream (compilation, autotuning and allocation must not happen while a graph
        records), then put the weights and AdamW's state back, so a graphed run trains exactly like an eager one."""
        mode = self.spec.mode
        saved = [p.detach().clone() for p in self.model.parameters()]
        saved_state = {id(t): (t, t.clone()) for t in self._optimizer_tensors()}  # holding t keeps its id unique
        self.static_inputs, self.static_targets = inputs.clone(), targets.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                loss = self._forward(self.static_inputs, self.static_targets)
                if mode != "forward":
                    self._backward(loss)
                if mode == "train":
                    self._optimizer_step()
                self.model.zero_grad(set_to_none=True)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for p, value in zip(self.model.parameters(), saved):
                p.copy_(value)
            for t in self._optimizer_tensors():  # master weights, moments, step counts as before the warm-up
                if id(t) in saved_state:
                    t.copy_(saved_state[id(t)][1])
                else:  # state torch's AdamW made at its first step: zero is what it starts from
                    t.zero_()
        self.graphs = {"forward": torch.cuda.CUDAGraph()}
        with torch.cuda.graph(self.graphs["forward"]):
            self.static_loss = self._forward(self.static_inputs, self.static_targets)
        pool = self.graphs["forward"].pool()
        if mode != "forward":
            self.graphs["backward"] = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graphs["backward"], pool=pool):
                self._backward(self.static_loss)  # grads land in the pool; each replay overwrites them
        if mode == "train":
            self.graphs["optimizer"] = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graphs["optimizer"], pool=pool):
                self._optimizer_step()
