"""Predict before you rent: step time, tokens/s per GPU, scaling efficiency and memory per rank at 1 .. 1024 GPUs.

    python -m src.profiling.predict --sizes 2.7B --attention sdpa --batch_size 4 --context_length 1024
    python -m src.profiling.predict --model llama-3.1-8b --batch_size 1 --context_length 8192 --gpu H100
    python -m src.profiling.predict --sizes 2.7B --results docs/results/side_by_side_h100_2026-11-24.jsonl \\
        --link nvlink4 --inter_link ib_ndr --parallel ddp_overlap fsdp2 --output p.jsonl --plot p.png
    python -m src.profiling.predict --check docs/results/side_by_side_h100_2026-11-24.jsonl
    python -m src.profiling.predict --sizes 2.7B --parallel tp fsdp_tp fsdp2 --probe probe_2p7b.jsonl

Compute per GPU comes from a measured single-GPU row of the same configuration (--results) or from FLOPs at
--mfu of --gpu's peak; communication from src.predict.cost, timed by the alpha-beta model of
src.predict.alpha_beta on --link inside a node and --inter_link between nodes, or by the bus bandwidth
measured in a --collectives file. With --probe (rows of python -m src.profiling.split_probe), TP's compute per
rank is divided by the split efficiency measured for its degree and hidden communication slows the compute
under it by the measured overlap slowdown; without, TP runs at constant MFU and hidden communication is free,
and the output says so. --check compares predictions with measured rows instead.
"""

import argparse
import os
import sys

from src.predict.alpha_beta import LINKS, Network
from src.predict.cost import STRATEGIES
from src.model.catalog import resolve_model
from src.model.config import ATTENTION_IMPLEMENTATIONS, PRESETS, ModelConfig
from src.model.families.cs336 import Cs336Model
from src.spec import checkpoint_group
from src.harness.cli import EXIT_USAGE, OneLineParser, UsageError, parse_and_resolve, positive_float, positive_int
from src.harness.hardware import find_gpu_spec
from src.harness.results import append_record, check_writable, read_records
from src.predict.scaling import Workload, compute_from_flops, predict_scaling
from src.reports.predict_rows import compute_from_record, probe_rows, single_gpu_record, split_probe
from src.reports.predict_plots import plot_paths, plot_scaling
from src.reports.predict_report import (
    backends_in, check, check_summary, device_memory_bytes, format_check, format_table, measured_busbw, pick_summary,
    prediction_record,
)

DEFAULT_WORLD_SIZES = [2**k for k in range(11)]  # 1 .. 1024
NETWORK_LINKS = [k for k, v in LINKS.items() if v.kind == "net"]
MEMORY_NOTE = ("memory: src.model.flops' estimate, an upper bound (the sum of each kind's peak); 2.7B bf16 at context "
               "1024 on an H100 peaked at 70.6 GB against 82.4 GB estimated, so a 'no' within ~15% of the device "
               "may still fit.")
EFFICIENCY_NOTE = ("efficiency above 1: sharding the optimizer state also divides the optimizer step's time "
                   "(weak scaling: each replica keeps its batch).")


def fraction(text: str) -> float:
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m src.profiling.predict", description=__doc__.split("\n")[0])
    size = p.add_argument_group("model size: presets, or one custom size from all four of --d_model --d_ff --num_layers --num_heads")
    size.add_argument("--sizes", nargs="+", choices=list(PRESETS), help="presets (default 2.7B)")
    size.add_argument("--d_model", type=positive_int)
    size.add_argument("--d_ff", type=positive_int)
    size.add_argument("--num_layers", type=positive_int)
    size.add_argument("--num_heads", type=positive_int)
    size.add_argument("--model", nargs="+", metavar="PRESET|CONFIG|PATH",
                      help="models beside --sizes: a preset, a config under configs/, or a path to a config.json "
                           "(GQA, a tied head and experts counted through the model interface)")
    size.add_argument("--name", default="custom", help="label of the custom size in tables, rows and plot names")
    size.add_argument("--vocab_size", type=positive_int, help="vocabulary (default: the preset's, 10000)")
    run = p.add_argument_group("workload (per data-parallel replica)")
    run.add_argument("--batch_size", type=positive_int, default=4)
    run.add_argument("--context_length", type=positive_int, default=1024)
    run.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="bf16")
    run.add_argument("--attention", choices=ATTENTION_IMPLEMENTATIONS, default="sdpa")
    run.add_argument("--activation_checkpointing", default="none", help="none, or blocks:N (a checkpoint every N blocks)")
    par = p.add_argument_group("parallelism")
    par.add_argument("--parallel", nargs="+", choices=STRATEGIES, help="strategies (default: all but none)")
    par.add_argument("--world_sizes", type=positive_int, nargs="+", default=DEFAULT_WORLD_SIZES)
    par.add_argument("--bucket_mb", type=positive_float, default=25.0, help="ddp_bucketed's bucket size")
    par.add_argument("--tp_size", type=positive_int, help="fsdp_tp's tensor-parallel degree (default: largest in a node)")
    par.add_argument("--reduce_dtype", choices=("fp32", "bf16"), default="fp32",
                     help="fsdp2's MixedPrecisionPolicy reduce_dtype (torch's default follows the fp32 parameters)")
    hw = p.add_argument_group("hardware")
    hw.add_argument("--gpu", default="H100 SXM", help="GPU name matched against src/harness/hardware.py")
    hw.add_argument("--gpu_memory_gb", type=positive_float, help="memory per GPU (default: the GPU's datasheet)")
    hw.add_argument("--mfu", type=fraction, default=0.4, help="model FLOPs utilisation when no --results row matches")
    hw.add_argument("--link", choices=list(LINKS), default="nvlink4", help="link between GPUs of one node")
    hw.add_argument("--inter_link", choices=NETWORK_LINKS + ["none"], default="ib_ndr",
                    help="network between nodes, one NIC per GPU unless --nics_per_node; none: one node only")
    hw.add_argument("--gpus_per_node", type=positive_int, default=8)
    hw.add_argument("--nics_per_node", type=positive_int)
    hw.add_argument("--overlap", type=fraction, help="measured fraction of the hideable communication that hides")
    src = p.add_argument_group("measurements and outputs")
    src.add_argument("--results", help="benchmark results file: compute time from its single-GPU row of the same configuration")
    src.add_argument("--collectives", help="collectives results file: measured bus bandwidth instead of the link model")
    src.add_argument("--collectives_backend", choices=("nccl", "gloo"), default="nccl",
                     help="which backend's rows of --collectives to use")
    src.add_argument("--probe", help="split-probe rows (python -m src.profiling.split_probe): TP's split efficiency "
                                     "per degree and the compute slowdown under hidden communication")
    src.add_argument("--check", metavar="RESULTS", help="compare predictions with the measured rows of RESULTS and stop")
    src.add_argument("--output", help="append one row per prediction: CSV, or JSON lines for .jsonl (any case)")
    src.add_argument("--plot", help="PNG of scaling efficiency and memory per rank against world size; with "
                                    "several sizes one per size, the size before the suffix (p_small.png)")
    return p


def _read(path: str, what: str) -> list[dict]:
    try:
        records, warnings = read_records(path)
    except (OSError, ValueError) as error:
        raise UsageError(f"{what}: cannot read {path}: {error}") from None
    for warning in warnings:
        print(f"predict: warning: {warning}", file=sys.stderr)
    if not records:
        raise UsageError(f"{what}: {path} has no rows")
    return records


def resolve(args: argparse.Namespace) -> dict:
    """Turn parsed options into workloads, a network and data read from files, or raise UsageError. No work."""
    custom = [args.d_model, args.d_ff, args.num_layers, args.num_heads]
    if any(v is not None for v in custom) and not all(v is not None for v in custom):
        raise UsageError("a custom size needs all four of --d_model --d_ff --num_layers --num_heads")
    try:
        checkpoint_group(args.activation_checkpointing)
    except ValueError as error:
        raise UsageError(f"--{error}") from None
    names = list(args.sizes or []) + list(args.model or [])
    configs = [(name, PRESETS[name]) for name in names if name in PRESETS] if names or custom[0] else [("2.7B", PRESETS["2.7B"])]
    models = []
    try:
        if custom[0] is not None:
            configs.append((args.name, ModelConfig(d_model=args.d_model, d_ff=args.d_ff, num_layers=args.num_layers,
                                                   num_heads=args.num_heads)))
        for name, m in configs:
            models.append(Cs336Model(name, m.with_(attention=args.attention,
                                                   context_length=max(m.context_length, args.context_length),
                                                   **({"vocab_size": args.vocab_size} if args.vocab_size else {}))))
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        models += [resolve_model(name, vocab_size=args.vocab_size) for name in names if name not in PRESETS]
    except ValueError as error:
        raise UsageError(f"--model: {error}") from None
    workloads = [Workload(m, m.name, args.batch_size, args.context_length, args.precision, args.activation_checkpointing)
                 for m in models]
    gpu = find_gpu_spec(args.gpu)
    if gpu is None:
        raise UsageError(f"--gpu {args.gpu!r} is not in the hardware table; name one of H100, H200, A100, ...")
    try:
        memory = device_memory_bytes(args.gpu, args.gpu_memory_gb)
    except ValueError as error:
        raise UsageError(str(error)) from None
    inter = None if args.inter_link == "none" else LINKS[args.inter_link]
    if args.nics_per_node and inter is None:
        raise UsageError("--nics_per_node describes the network: pass --inter_link too")
    if LINKS[args.link].kind == "net":
        raise UsageError(f"--link {args.link} is a network; inside a node use one of nvlink3/4/5, pcie4/5")
    measured = {}
    if args.collectives:
        rows = _read(args.collectives, "--collectives")
        measured = measured_busbw(rows, args.collectives_backend)
        if not measured:
            others = [b for b in backends_in(rows) if b != args.collectives_backend]
            raise UsageError(f"--collectives {args.collectives}: no ok {args.collectives_backend} rows with op, world_size, "
                             f"size_bytes, busbw_gbps" + (f" (it has {', '.join(others)}: pass --collectives_backend)" if others else ""))
    network = Network(LINKS[args.link], inter, args.gpus_per_node,
                      args.nics_per_node, measured)
    if not args.check and inter is None and max(args.world_sizes) > args.gpus_per_node:
        raise UsageError(f"world size {max(args.world_sizes)} spans nodes of {args.gpus_per_node} GPUs: "
                         "--inter_link none describes one node")
    results = _read(args.results, "--results") if args.results else []
    checked = _read(args.check, "--check") if args.check else None
    probe = _read(args.probe, "--probe") if args.probe else []
    if args.probe and not probe_rows(probe):
        raise UsageError(f"--probe {args.probe}: no ok split_summary or overlap rows (python -m "
                         "src.profiling.split_probe writes them)")
    plots = plot_paths(args.plot, [w.size for w in workloads]) if args.plot and not args.check else {}
    for path, what, replaces in ((args.output, "--output", False), *((p, "--plot", True) for p in plots.values())):
        if path:
            try:
                check_writable(path, replaces=replaces)
            except ValueError as error:
                raise UsageError(f"{what}: {error}") from None
    return {"workloads": workloads, "gpu": gpu, "memory": memory, "network": network, "results": results,
            "checked": checked, "probe": probe, "plots": plots, "strategies": args.parallel or [s for s in STRATEGIES if s != "none"]}


def assumptions(probe, path: str | None) -> str:
    """The line under each size's header: what TP's compute and hidden communication are taken to cost."""
    if probe is not None and probe.efficiency:
        rates = ", ".join(f"tp {t} {e:.3g}" for t, e in sorted(probe.efficiency.items()) if t > 1)
        tp = (f"TP compute per rank: single-GPU compute / tp / split efficiency measured by {probe.source} "
              f"({rates}; between degrees interpolated in log2 tp, beyond them n/a)")
    else:
        tp = ("TP compute per rank: single-GPU compute / tp at constant MFU (" +
              (f"no split-probe rows of this shape in {path}" if path else "no --probe") + ")")
    if probe is not None and probe.slowdown:
        copy = f", {probe.copy_engine_slowdown:.3g}x beside copy-engine copies" if probe.copy_engine_slowdown else ""
        hidden = (f"hidden communication slows the compute under it {probe.slowdown:.3g}x (an SM copy kernel "
                  f"beside a GEMM loop{copy})")
    else:
        hidden = "hidden communication is free (" + ("no overlap rows in --probe" if path else "no --probe") + ")"
    return f"{tp}; {hidden}"


def main(argv=None) -> int:
    parsed = parse_and_resolve(build_parser, resolve, argv, "predict")
    if parsed is None:
        return EXIT_USAGE
    args, r = parsed
    network = r["network"]
    if r["checked"] is not None:
        rows = check(r["checked"], network, args.mfu, os.path.basename(args.check), r["probe"],
                     os.path.basename(args.probe or ""))
        print(format_check(rows))
        print(f"\n{check_summary(rows)}")
        return 0
    options = {"bucket_mb": args.bucket_mb, "tp_size": args.tp_size, "reduce_dtype_bytes": 4 if args.reduce_dtype == "fp32" else 2}
    all_predictions = {}
    for workload in r["workloads"]:
        row = single_gpu_record(r["results"], workload)
        if row is not None:
            compute = compute_from_record(row, f"{os.path.basename(args.results)}#{r['results'].index(row) + 1}")
        else:
            if args.results:
                print(f"note: no single-GPU row of {workload.size} in {args.results}; using FLOPs", file=sys.stderr)
            compute = compute_from_flops(workload, r["gpu"], args.mfu)
        probe = split_probe(r["probe"], workload, os.path.basename(args.probe)) if args.probe else None
        predictions = {s: predict_scaling(workload, s, args.world_sizes, network, compute, r["memory"], overlap=args.overlap,
                                          probe=probe, **options) for s in r["strategies"]}
        a = workload.model.architecture
        experts = f", {a.num_experts} experts ({a.experts_per_token} per token)" if a.moe else ""
        print(f"\n## {workload.size}: {a.model_type}, d_model {a.d_model}, d_ff {a.d_ff or a.expert_d_ff}, "
              f"{a.num_layers} layers, {a.num_heads} heads ({a.num_kv_heads} KV), vocab {a.vocab_size}"
              f"{', tied head' if a.tied_embeddings else ''}{experts}; "
              f"batch {workload.batch_size} x context {workload.context_length} per replica, {workload.precision}, "
              f"{a.attention}, checkpointing {workload.checkpointing}")
        print(f"compute: {compute.source}; links: {network.intra.name} in nodes of {network.gpus_per_node}"
              + (f", {network.inter.name} between them" if network.inter else "")
              + ("; measured bus bandwidth where --collectives has the world size" if network.measured else "")
              + f"; {r['gpu'].name} with {r['memory'] / 1e9:g} GB")
        print(f"{assumptions(probe, args.probe)}\n")
        flat = [p for rows in predictions.values() for p in rows]
        print(format_table(flat))
        if pick_summary(flat):
            print(f"\n{pick_summary(flat)}")
        print(f"\n{MEMORY_NOTE}")
        if any((p.scaling_efficiency or 0) > 1.001 for p in flat):
            print(EFFICIENCY_NOTE)
        if args.output:
            extra = {"gpu": r["gpu"].name, "mfu": args.mfu if "FLOPs" in compute.source else None,
                     "probe": probe.source if probe else ""}
            for rows in predictions.values():
                for p in rows:
                    append_record(args.output, prediction_record(p, workload, network, compute, extra))
        all_predictions[workload.size] = predictions
    if args.plot:
        for size, predictions in all_predictions.items():
            path = r["plots"][size]
            link = network.intra.name + (f" / {network.inter.name}" if network.inter else "")
            plot_scaling(predictions, r["memory"], f"{size}: batch {args.batch_size} x {args.context_length}, "
                         f"{args.precision}, {link}, nodes of {network.gpus_per_node}", path)
            print(f"\nplot: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
