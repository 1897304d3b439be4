"""Condensed tables of the committed GPU results (docs/results/*.md): python scripts/condense_results.py train|precision|memory|fast.

The full table of any results file: python -m src.profiling.table FILE."""
import json, sys
def load(p): return [json.loads(l) for l in open(p)]
def ms(x): return "" if x is None else f"{x*1e3:.1f}"
def env_line(rows):
    e = rows[0]['env']
    return f"GPU {e['gpu_name']}, driver {e['driver_version']}, CUDA {e['cuda_version']}, torch {e['torch_version']}, triton {e['triton_version']}, Python {e['python_version']}, project commit {e['git_commit']}, {e['timestamp']}"
which = sys.argv[1]
if which == 'train':
    rows = load('docs/results/train_bf16_ctx1024_h100_2026-11-24.jsonl')
    print(env_line(rows)); print()
    print("| size | attention | forward ms | backward ms | optimizer ms | step ms (median) | tokens/s | TFLOP/s | MFU (989) | speed of light | peak GB | status |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        c = r['config']
        if r['status'] != 'ok':
            print(f"| {c['size']} | {c['attention']} | | | | | | | | | {r['peak_memory_gb']:.1f} (at failure) | {r['status']} |"); continue
        print(f"| {c['size']} | {c['attention']} | {ms(r['median_time_forward'])} | {ms(r['median_time_backward'])} | {ms(r['median_time_optimizer'])} | {ms(r['median_time_step'])} | {r['tokens_per_second']:.0f} | {r['tflops']:.0f} | {r['mfu']:.1%} | {r['speed_of_light_pct']:.0f}% | {r['peak_memory_gb']:.1f} | ok |")
if which == 'precision':
    rows = load('docs/results/precision_train_ctx128_h100_2026-11-24.jsonl')
    print(env_line(rows)); print()
    by = {(r['config']['size'], r['config']['precision']): r for r in rows}
    print("| size | fp32 fwd ms | bf16 fwd ms | fp32 bwd ms | bf16 bwd ms | fp32 optimizer ms | bf16 optimizer ms | fp32 step ms | bf16 step ms | bf16 speed-up | fp32 peak GB | bf16 peak GB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in ['small','medium','large','xl','2.7B']:
        a, b = by[(s,'fp32')], by[(s,'bf16')]
        print(f"| {s} | {ms(a['median_time_forward'])} | {ms(b['median_time_forward'])} | {ms(a['median_time_backward'])} | {ms(b['median_time_backward'])} | {ms(a['median_time_optimizer'])} | {ms(b['median_time_optimizer'])} | {ms(a['median_time_step'])} | {ms(b['median_time_step'])} | {a['median_time_step']/b['median_time_step']:.2f}x | {a['peak_memory_gb']:.1f} | {b['peak_memory_gb']:.1f} |")
if which == 'memory':
    rows = load('docs/results/memory_2p7b_h100_2026-11-24.jsonl')
    print(env_line(rows)); print()
    print("| precision | mode | context | peak GB (measured) | peak in forward | peak in backward | peak in optimizer | estimate GB | params | grads | AdamW state | activations (est.) | timeline |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        c = r['config']; m = r['memory_summary']['peak_by_phase_bytes']; e = r['estimated_memory']
        g = lambda k: f"{m[k]/1e9:.1f}" if k in m else ""
        png = r['memory_summary'].get('plot', '').split('/')[-1]
        print(f"| {c['precision']} | {c['mode']} | {c['context_length']} | {r['peak_memory_gb']:.1f} | {g('forward')} | {g('backward')} | {g('optimizer')} | {r['estimated_memory_bytes']/1e9:.1f} | {e['parameters']/1e9:.1f} | {e['gradients']/1e9:.1f} | {e['optimizer_state']/1e9:.1f} | {e['activations']/1e9:.1f} | [png](memory_2p7b_h100_2026-11-24/{png}) |")
if which == 'fast':  # the side-by-side train step, one run (scripts/gpu_fast_path.sh)
    rows = load('docs/results/side_by_side_h100_2026-11-24.jsonl')
    print(env_line(rows)); print()
    N = {'small': 128625408, '2.7B': 3406809600}
    print("| size | variant | forward ms | backward ms | optimizer ms | step ms (median) | TFLOP/s (6·N·tokens) | TFLOP/s (model FLOPs) | compile s | peak GB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in ['small', '2.7B']:
        for r in rows:
            c = r['config']
            if c['size'] != size: continue
            name = ("Hugging Face Llama (eager, SDPA)" if c['backend'] == 'hf_llama' else "**fast recipe**" if c['recipe'] else
                    f"compile, {c['attention']}" if c['compile'] else f"eager, {c['attention']}")
            if r['status'] != 'ok':
                print(f"| {size} | {name} | | | | {r['status']} | | | | {r['peak_memory_gb']:.1f} (at failure) |"); continue
            t = r['median_time_step']
            cs = '' if r['compile_time_s'] is None else format(r['compile_time_s'], '.1f')
            print(f"| {size} | {name} | {ms(r['median_time_forward'])} | {ms(r['median_time_backward'])} | {ms(r['median_time_optimizer'])} | {ms(t)} | {6*N[size]*4096/t/1e12:.0f} | {r['tflops']:.0f} | {cs} | {r['peak_memory_gb']:.1f} |")
