"""Which strategy to pick: the fastest one that fits in memory, and by how much it beats the next one that fits.

The distributed report asks it of measured rows (an OOM row did not fit) and `predict` of predicted ones (the
memory estimate against the GPU's); both print its answer under their tables.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Choice:
    name: str
    tokens_per_s: float | None  # per GPU; None for an option that did not fit or did not run
    fits: bool


@dataclass(frozen=True)
class Pick:
    best: Choice
    runner_up: Choice | None  # the next fastest that fits
    not_fitting: list[str]

    @property
    def margin(self) -> float | None:
        """best's tokens/s over the runner-up's, minus 1 (0.12: 12% more tokens per second)."""
        if self.runner_up is None or not self.runner_up.tokens_per_s:
            return None
        return self.best.tokens_per_s / self.runner_up.tokens_per_s - 1.0


def pick(choices: list[Choice]) -> Pick | None:
    """The fastest choice that fits (most tokens/s per GPU; the first listed wins a tie), or None if none does."""
    fitting = sorted((c for c in choices if c.fits and c.tokens_per_s), key=lambda c: -c.tokens_per_s)
    if not fitting:
        return None
    return Pick(fitting[0], fitting[1] if len(fitting) > 1 else None,
                list(dict.fromkeys(c.name for c in choices if not c.fits)))


def describe(found: Pick | None, noise: float | None = None, choices: list[Choice] = ()) -> str:
    """One sentence: "ddp_overlap: 1,800 tokens/s per GPU, 20% ahead of fsdp (1,500); does not fit: zero1".
    `noise` (a relative change two runs of the same code can show) adds a caution when the margin is within it;
    `choices` names what was tried when nothing fits."""
    if found is None:
        names = ", ".join(dict.fromkeys(c.name for c in choices))
        return "nothing fits in memory" + (f" ({names})" if names else "")
    text = f"{found.best.name}: {found.best.tokens_per_s:,.0f} tokens/s per GPU"
    if found.runner_up is not None:
        margin = f"{found.margin:.0%}" if found.margin >= 0.1 else f"{found.margin:.1%}"
        text += f", {margin} ahead of {found.runner_up.name} ({found.runner_up.tokens_per_s:,.0f})"
        if noise is not None and found.margin < noise:
            text += f" (within the {noise:.0%} run-to-run noise of one run each: measure both again)"
    else:
        text += ", the only one that fits"
    if found.not_fitting:
        text += f"; does not fit: {', '.join(found.not_fitting)}"
    return text
