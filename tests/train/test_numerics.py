import torch

from src.profiling.numerics import ACTIVE_TOKENS, SUCCESSORS, markov_tokens


def test_markov_stream_is_fixed_and_learnable():
    a, b = markov_tokens(500, 3, 2, 64, seed=7), markov_tokens(500, 3, 2, 64, seed=7)
    assert a.shape == (3, 2, 65) and torch.equal(a, b)
    pairs = a.flatten(0, 1).unfold(1, 2, 1).reshape(-1, 2)  # every (token, next token) in the stream
    successors: dict[int, set[int]] = {}
    for x, y in pairs.tolist():
        successors.setdefault(x, set()).add(y)
    assert max(len(s) for s in successors.values()) <= SUCCESSORS  # each token has at most SUCCESSORS next tokens
    assert len(torch.unique(a)) <= min(ACTIVE_TOKENS, 500)
