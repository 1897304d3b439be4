"""The tiny fp32 model and training loop the optimizer tests compare optimizers with (in_backward, overlap): a new
batch each step from a fixed seed, so two optimizers see the same batches and can be held to exact equality."""

import torch
import torch.nn.functional as F

from src.model.config import PRESETS

TINY = PRESETS["tiny"].with_(vocab_size=256, context_length=16)
B, T, LR = 2, 16, 1e-2  # lr 1e-2: large enough that a few steps move every weight visibly


def loss_of(model, step: int):
    g = torch.Generator().manual_seed(step)  # a new batch each step
    x, y = torch.randint(0, TINY.vocab_size, (2, B, T), generator=g).to(model.lm_head.weight.device)
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def train_steps(model, optimizer, checkpointing_group: int = 0, *, steps: int) -> list[float]:
    """`steps` steps of loss, backward, optimizer step and zero_grad; the loss of each."""
    model.checkpoint_group = checkpointing_group
    losses = []
    for step in range(steps):
        loss = loss_of(model, step)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses
