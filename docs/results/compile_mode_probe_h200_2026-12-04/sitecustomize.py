# The probe of 2026-12-04 (commit f4fe9f8, before --compile_mode existed), kept to reproduce
# reduce_overhead_by_probe.jsonl. On PYTHONPATH with LMBENCH_PROBE_COMPILE_MODE=reduce-overhead, every
# nn.Module.compile() in each process the sweep starts passes that mode, and each TrainStep call marks a CUDA
# graph trees step. Without the variable it does nothing. Those rows' configs do not record the mode.
import os

_mode = os.environ.get("LMBENCH_PROBE_COMPILE_MODE")
if _mode:
    import torch
    import torch.nn as nn

    _orig = nn.Module.compile

    def _compile(self, *args, **kwargs):
        kwargs.setdefault("mode", _mode)
        import src.train.step as step
        if not getattr(step.TrainStep, "_probe", False):
            call = step.TrainStep.__call__

            def marked(self, *a, **k):
                torch.compiler.cudagraph_mark_step_begin()
                return call(self, *a, **k)

            step.TrainStep.__call__ = marked
            step.TrainStep._probe = True
        return _orig(self, *args, **kwargs)

    nn.Module.compile = _compile
