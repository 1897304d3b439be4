"""FlashAttention-2, tiled PyTorch and Triton, against the float64 reference: O, the saved logsumexp L, dQ, dK, dV.

Without a GPU the Triton kernels run under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET) on small
shapes; bfloat16 is left to the GPU there, because Triton 3.6's interpreter (the lock's) gets bfloat16 tl.dot wrong
(a 16 x 16 product off by ~1e10; test_the_interpreter_still_gets_bfloat16_dot_wrong says when a release fixes it). Larger shapes and the tuned tiles (lengths past SHORT_SEQ) run only on CUDA.
"""

import os
import re

import pytest
import torch
import triton
import triton.language as tl

from src.kernels import FlashAttentionPytorch, FlashAttentionTriton, flash_attention
from src.kernels import flash_pytorch, flash_triton
from src.kernels.reference import attention_reference
from tests.conftest import needs_cuda as cuda_only

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
INTERPRETED = not CUDA and os.environ.get("TRITON_INTERPRET") == "1"

# (atol, rtol) per dtype against float64. L is a float32 sum of exact products of the rounded inputs, so it stays
# near float32 accuracy in every dtype. O rounds P to the input dtype before P @ V, and the gradients round dS too.
# A float64 emulation of those rounding points (T up to 4096, d 64 and 128, causal or not) used about a third at most
# of each 16-bit bound; float32 errors measured 2e-6 at most.
TOLERANCES = {
    torch.float32: {"out": (1e-5, 1e-5), "lse": (1e-5, 1e-5), "grad": (5e-5, 1e-4)},
    torch.float16: {"out": (2e-3, 2e-3), "lse": (1e-4, 1e-5), "grad": (5e-3, 5e-3)},
    torch.bfloat16: {"out": (1e-2, 1e-2), "lse": (1e-4, 1e-5), "grad": (2e-2, 2e-2)},
}
triton_runs = pytest.mark.skipif(not (CUDA or INTERPRETED), reason="needs CUDA or TRITON_INTERPRET=1 (conftest.py)")
IMPLEMENTATIONS = [pytest.param(FlashAttentionPytorch.apply, id="pytorch"),
                   pytest.param(FlashAttentionTriton.apply, id="triton", marks=triton_runs)]


def _skip_unsupported(fn, dtype):
    if fn == FlashAttentionTriton.apply and INTERPRETED and dtype == torch.bfloat16:
        pytest.skip(f"Triton {triton.__version__}'s interpreter gets bfloat16 tl.dot wrong "
                    "(test_the_interpreter_still_gets_bfloat16_dot_wrong); bfloat16 is tested on CUDA")


def _inputs(shape_q, shape_k, dtype, seed):
    """Fresh random q (shape_q), k, v (shape_k) and the upstream gradient, drawn on the test device."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    q = torch.randn(shape_q, generator=g, device=DEVICE, dtype=dtype, requires_grad=True)
    k = torch.randn(shape_k, generator=g, device=DEVICE, dtype=dtype, requires_grad=True)
    v = torch.randn(shape_k, generator=g, device=DEVICE, dtype=dtype, requires_grad=True)
    dout = torch.randn(shape_q, generator=g, device=DEVICE, dtype=dtype)
    return q, k, v, dout


def _saved_lse(out, q):
    """L as the autograd Function saved it: the one saved tensor shaped like Q without its last dim."""
    found = [t for t in out.grad_fn.saved_tensors if t.shape == q.shape[:-1]]
    assert len(found) == 1, [tuple(t.shape) for t in out.grad_fn.saved_tensors]
    return found[0]


def _check(fn, q, k, v, dout, is_causal):
    tol = TOLERANCES[q.dtype]
    out = fn(q, k, v, is_causal)
    lse = _saved_lse(out, q)
    assert out.dtype == q.dtype and out.shape == q.shape
    assert lse.dtype == torch.float32
    grads = torch.autograd.grad(out, (q, k, v), dout)

    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref_out, ref_lse = attention_reference(q64, k64, v64, is_causal)
    ref_grads = torch.autograd.grad(ref_out, (q64, k64, v64), dout.double())

    def close(name, actual, expected, kind):
        atol, rtol = tol[kind]
        torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=rtol,
                                   msg=lambda m: f"{name}: {m}")

    close("O", out, ref_out, "out")
    close("L", lse, ref_lse, "lse")
    for name, grad, ref in zip(("dQ", "dK", "dV"), grads, ref_grads):
        assert grad.shape == ref.shape and grad.dtype == q.dtype
        close(name, grad, ref, "grad")


# Odd lengths, one-row and one-key inputs, Tq != Tk both ways, and an exact multiple of every tile size.
LENGTHS = [(1, 1), (17, 17), (100, 100), (17, 100), (100, 17), (1, 33), (128, 128)]
HEAD_DIMS = [16, 32, 64, 80, 96, 128]


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("tq,tk", LENGTHS)
def test_lengths(fn, tq, tk, is_causal):
    q, k, v, dout = _inputs((2, 2, tq, 64), (2, 2, tk, 64), torch.float32, seed=tq * 1000 + tk)
    _check(fn, q, k, v, dout, is_causal)


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("d", HEAD_DIMS)
def test_head_dims(fn, d, is_causal):
    q, k, v, dout = _inputs((2, 1, 70, d), (2, 1, 45, d), torch.float32, seed=d)
    _check(fn, q, k, v, dout, is_causal)


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_dtypes(fn, dtype, is_causal):
    _skip_unsupported(fn, dtype)
    q, k, v, dout = _inputs((1, 2, 90, 32), (1, 2, 90, 32), dtype, seed=3)
    _check(fn, q, k, v, dout, is_causal)


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
def test_three_dim_inputs_and_a_long_sequence(fn):
    """(batch, seq, d) as the CS336 tests call it, at length 1000 on a GPU: many tiles, causal. Under the
    interpreter 400 (13 x 25 of its 32 x 16 tiles): 1000 took 24-27 s there, the suite's slowest kernel test."""
    length = 400 if INTERPRETED else 1000
    q, k, v, dout = _inputs((1, length, 64), (1, length, 64), torch.float32, seed=1000)
    _check(fn, q, k, v, dout, True)


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
def test_strided_heads_and_a_broadcast_gradient(fn):
    """Heads split off the model's (B, T, nh, hs) layout are strided views; o.sum()'s gradient has stride 0."""
    g = torch.Generator(device=DEVICE).manual_seed(7)
    qkv = torch.randn(2, 50, 3, 3, 32, generator=g, device=DEVICE)  # (B, T, q|k|v, nh, hs)
    q, k, v = (qkv[:, :, i].transpose(1, 2).requires_grad_() for i in range(3))  # (B, nh, T, hs), not contiguous
    dout = torch.ones(1, device=DEVICE).expand(q.shape)
    _check(fn, q, k, v, dout, True)


def test_pytorch_tile_sizes_do_not_change_the_result():
    q, k, v, dout = _inputs((1, 1, 50, 16), (1, 1, 50, 16), torch.float32, seed=5)
    expected = flash_pytorch.flash_forward(q, k, v, True, q_tile=64, k_tile=64)
    for q_tile, k_tile in [(16, 16), (16, 48), (32, 8), (1, 7)]:
        out, lse = flash_pytorch.flash_forward(q, k, v, True, q_tile=q_tile, k_tile=k_tile)
        torch.testing.assert_close(out, expected[0], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(lse, expected[1], atol=1e-6, rtol=1e-6)


def test_public_flash_attention_picks_the_device_path():
    q, k, v, dout = _inputs((1, 2, 40, 16), (1, 2, 40, 16), torch.float32, seed=9)
    out = flash_attention(q, k, v, is_causal=True)
    assert type(out.grad_fn).__name__.startswith("FlashAttentionTriton" if CUDA else "FlashAttentionPytorch")
    torch.testing.assert_close(out.double(), attention_reference(q, k, v, True)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shapes,message", [
    (((1, 8, 8), (1, 8, 8)), "head dim"),
    (((1, 8, 256), (1, 8, 256)), "head dim"),
    (((8, 16), (8, 16)), "batch"),
    (((1, 8, 16), (2, 8, 16)), "share batch"),
    (((1, 0, 16), (1, 8, 16)), "at least 1"),
])
def test_triton_rejects_what_it_cannot_run(shapes, message):
    q, k = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=message):
        flash_triton.check_inputs(q, k, k)


@triton_runs
def test_triton_program_groups_do_not_change_the_result():
    """The grid's order (heads in groups, the last group smaller) moves work between programs, not the arithmetic:
    the same bits for every group size."""
    q, k, v, dout = _inputs((3, 2, 70, 16), (3, 2, 70, 16), torch.float32, seed=11)
    results = []
    for group in (1, 4, 6):
        out, lse = flash_triton.flash_forward(q, k, v, True, group=group)
        results.append((out, lse, *flash_triton.flash_backward(q, k, v, out, lse, dout, True, group=group)))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_group_size_keeps_a_group_within_half_of_l2():
    half = flash_triton.L2_BYTES // 2
    assert flash_triton.group_size(128, half // 3) == 3
    assert flash_triton.group_size(4, 1) == 4  # never more than there are heads
    assert flash_triton.group_size(5, 2 * half) == 1  # never fewer than one


@triton_runs
def test_chosen_tiles_names_a_shape_for_every_kernel():
    text = flash_triton.chosen_tiles(torch.float16, 4096, 64)
    shape = r"\d+x\d+ w\d+ s\d+( tma)?"
    assert re.fullmatch(f"fwd {shape}; dq {shape}; dkdv {shape}", text), text


def test_tile_shapes_read_back_from_their_text():
    for tiles in (flash_triton.Tiles(128, 64, 8, 3), flash_triton.Tiles(64, 128, 4, 2, tma=True)):
        assert flash_triton.Tiles.parse(str(tiles)) == tiles
    with pytest.raises(ValueError, match="not a tile shape"):
        flash_triton.Tiles.parse("128x64 w8 s3 fast")


def _layouts(tq, tk, d, dtype, seed):
    """The same problem as contiguous (B, nh, T, d) tensors and as (B, nh, T, d) views of (B, T, nh, d) memory (the
    model's layout after its head split)."""
    q, k, v, dout = _inputs((1, 2, tq, d), (1, 2, tk, d), dtype, seed)
    yield q, k, v, dout
    q2, k2, v2, dout2 = (x.detach().transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v, dout))
    yield q2.requires_grad_(), k2.requires_grad_(), v2.requires_grad_(), dout2


@triton_runs
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("tq,tk", [(40, 40), (33, 70), (70, 33)])
def test_triton_tiles_moved_by_tma_give_what_pointer_loads_give(tq, tk, is_causal):
    """TMA (tensor descriptors) in all three kernels, both layouts, ragged ends where the descriptor's zero fill
    and clipped stores stand in for the masks: against the float64 reference, and (under the interpreter, where
    the arithmetic is the same) the very bits of the pointer path. float16: the interpreter's bfloat16 dot is
    wrong (test_the_interpreter_still_gets_bfloat16_dot_wrong)."""
    table = flash_triton.tile_table(torch.device(DEVICE), torch.float16, max(tq, tk), 32)
    by_tma = {name: t._replace(tma=True) for name, t in table.items()}
    for q, k, v, dout in _layouts(tq, tk, 32, torch.float16, seed=tq * tk):
        assert all(x is not None for x in flash_triton._descriptors("fwd", by_tma["fwd"], (q, k, v, q), 32))
        out, lse = flash_triton.flash_forward(q, k, v, is_causal, tiles=by_tma)
        grads = flash_triton.flash_backward(q, k, v, out, lse, dout, is_causal, tiles=by_tma)
        out_p, lse_p = flash_triton.flash_forward(q, k, v, is_causal, tiles=table)
        grads_p = flash_triton.flash_backward(q, k, v, out_p, lse_p, dout, is_causal, tiles=table)
        if INTERPRETED:
            for a, b in zip((out, lse, *grads), (out_p, lse_p, *grads_p)):
                assert torch.equal(a, b)
        q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
        ref_out, _ = attention_reference(q64, k64, v64, is_causal)
        ref_grads = torch.autograd.grad(ref_out, (q64, k64, v64), dout.double())
        tol = TOLERANCES[torch.float16]
        torch.testing.assert_close(out.double(), ref_out, atol=tol["out"][0], rtol=tol["out"][1])
        for grad, ref in zip(grads, ref_grads):
            torch.testing.assert_close(grad.double(), ref, atol=tol["grad"][0], rtol=tol["grad"][1])


def test_tma_is_taken_only_where_the_tensors_allow_it(monkeypatch):
    """Descriptors need 16-byte aligned starts and strides and a contiguous last dim; a padded head dim keeps
    pointer loads. Where they cannot be used the kernels get None and load by pointer: no problem loses support."""
    monkeypatch.setattr(flash_triton, "_INTERPRET", True)  # the device check is the GPU's; the layout rules are ours
    tma = flash_triton.Tiles(32, 16, 4, 1, tma=True)
    good = torch.zeros(1, 2, 40, 32, dtype=torch.float16)
    assert flash_triton.tma_ready(good) and None not in flash_triton._descriptors("fwd", tma, (good,) * 4, 32)
    assert flash_triton._descriptors("fwd", tma._replace(tma=False), (good,) * 4, 32) == (None,) * 4
    d20 = torch.zeros(1, 2, 40, 20, dtype=torch.float16)  # 40-byte rows: not a multiple of 16
    assert not flash_triton.tma_ready(d20)
    d80 = torch.zeros(1, 2, 40, 80, dtype=torch.float16)  # 160-byte rows are fine, but d pads to 128
    assert flash_triton.tma_ready(d80) and flash_triton._descriptors("fwd", tma, (d80,) * 4, 128) == (None,) * 4
    shifted = torch.zeros(1 * 2 * 40 * 32 + 1, dtype=torch.float16)[1:].view(1, 2, 40, 32)  # starts 2 bytes in
    assert not flash_triton.tma_ready(shifted)
    assert not flash_triton.tma_ready(good.transpose(-1, -2))  # the last dim strided


def test_triton_rejects_mixed_dtypes():
    q = torch.zeros(1, 8, 16)
    with pytest.raises(ValueError, match="dtype"):
        flash_triton.check_inputs(q, q.half(), q)


# ------------------------------------------------------------------------------------------------ CUDA only
@cuda_only
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("tq,tk", [(1000, 1000), (1024, 2048), (2048, 1024)])
def test_triton_long_sequences_bf16(tq, tk, d, is_causal):
    """Past SHORT_SEQ (the tuned regime), with and without a ragged end."""
    q, k, v, dout = _inputs((2, 2, tq, d), (2, 2, tk, d), torch.bfloat16, seed=tq + d)
    _check(FlashAttentionTriton.apply, q, k, v, dout, is_causal)


def _tile_shapes(d: int) -> list[dict]:
    """Every tile shape any table gives a 16-bit problem of head dim d, one {kernel: Tiles} per run, each kernel
    cycling through its own shapes."""
    tables = [t for (d_class, _), t in flash_triton._SM90_TILES.items() if (d <= 64) == (d_class == 64)]
    tables += [flash_triton._DEFAULT_TILES, flash_triton._SHORT_TILES]
    shapes = {name: sorted({t[name] for t in tables} | {t[name]._replace(tma=True) for t in tables})
              for name in flash_triton.KERNELS}  # each also by TMA, whether the table asks for it or not
    return [{name: s[i % len(s)] for name, s in shapes.items()} for i in range(max(map(len, shapes.values())))]


@cuda_only
@pytest.mark.parametrize("d", [64, 128])
def test_triton_every_tile_shape(d, monkeypatch):
    """Whatever the table gives on any GPU must be right: run each kernel with each of its tile shapes, on a
    ragged length (1000) so that masked and unmasked loops both run."""
    q, k, v, dout = _inputs((1, 2, 1000, d), (1, 2, 1000, d), torch.bfloat16, seed=d)
    for tiles in _tile_shapes(d):
        monkeypatch.setattr(flash_triton, "tile_table", lambda *args, tiles=tiles: tiles)
        _check(FlashAttentionTriton.apply, q, k, v, dout, True)


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_triton_long_sequence_other_dtypes(dtype):
    q, k, v, dout = _inputs((1, 2, 1500, 64), (1, 2, 1500, 64), dtype, seed=15)
    _check(FlashAttentionTriton.apply, q, k, v, dout, True)


@cuda_only
def test_triton_under_torch_compile():
    q, k, v, dout = _inputs((2, 300, 64), (2, 300, 64), torch.bfloat16, seed=21)
    compiled = torch.compile(FlashAttentionTriton.apply)
    out = compiled(q, k, v, True)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    q2, k2, v2 = (x.detach().requires_grad_() for x in (q, k, v))
    eager = FlashAttentionTriton.apply(q2, k2, v2, True)
    eager_grads = torch.autograd.grad(eager, (q2, k2, v2), dout)
    torch.testing.assert_close(out, eager, atol=1e-2, rtol=1e-2)  # bf16
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b, atol=5e-2, rtol=5e-2)


@triton.jit
def _dot_kernel(a_ptr, b_ptr, c_ptr, N: tl.constexpr):
    rows = tl.arange(0, N)
    offsets = rows[:, None] * N + rows[None, :]
    tl.store(c_ptr + offsets, tl.dot(tl.load(a_ptr + offsets), tl.load(b_ptr + offsets)))


@pytest.mark.skipif(not INTERPRETED, reason="the claim is about Triton's CPU interpreter")
def test_the_interpreter_still_gets_bfloat16_dot_wrong():
    """Why bfloat16 skips under the interpreter, checked against the installed Triton: when this fails, a release
    has fixed it and the bfloat16 cases can run on CPU."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(16, 16, generator=g).bfloat16() for _ in range(2))
    out = torch.empty(16, 16)
    _dot_kernel[(1,)](a, b, out, 16)
    assert not torch.allclose(out, a.float() @ b.float(), atol=1e-2, rtol=1e-2)
