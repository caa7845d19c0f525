"""The one training loop of the GAN and GCN stages: a fixed number of steps, each on one
mini-batch, with an optional critic trained alongside the generator (WGAN-GP style).

A stage supplies what one step computes (:class:`Step`); the loop owns the order of the
updates, the batches, the critic's freezing during the generator update and the history.
No AnnData, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .._memory import release_freed_memory

ProgressFn = Callable[..., Iterable]


def no_progress(it, total=None, desc=None):
    """A progress wrapper that shows nothing."""
    return it


class MiniBatches:
    """Shuffled mini-batches of ``n`` rows, reshuffled after each pass; the last partial
    batch of a pass is dropped (one batch of all rows when ``n <= batch_size``)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, device) -> None:
        self.n, self.batch_size, self.generator, self.device = int(n), int(batch_size), generator, device
        self.per_pass = max(1, self.n // self.batch_size)
        self._perm: torch.Tensor | None = None
        self._next = self.per_pass

    def __call__(self) -> torch.Tensor:
        if self._next == self.per_pass:
            self._perm = torch.randperm(self.n, generator=self.generator, device=self.device)
            self._next = 0
        size = self.n if self.n <= self.batch_size else self.batch_size
        batch = self._perm[self._next * size:(self._next + 1) * size]
        self._next += 1
        return batch


def full_batch() -> slice:
    """Every row at each step (full-batch training)."""
    return slice(None)


@dataclasses.dataclass
class Step:
    """What one training step computes, given the step's batch (an index into the rows).

    ``prepare(batch)`` returns what the losses of that step share (e.g. one mask draw);
    ``generator_loss(shared)`` returns the generator's loss (logged as ``"generator"``), or
    ``(loss, logged)`` with ``logged`` a dict of named values to log instead;
    ``critic_loss(shared)`` (optional) the critic's loss (logged as ``"critic"``). ``after_update`` runs
    after each generator update (e.g. a moving average of the weights).
    """

    prepare: Callable[[Any], Any]
    generator_loss: Callable[[Any], Any]
    critic_loss: Callable[[Any], torch.Tensor] | None = None
    after_update: Callable[[], None] | None = None


def train(
    step: Step,
    *,
    steps: int,
    batches: Callable[[], Any],
    optimizer: torch.optim.Optimizer,
    critic: nn.Module | None = None,
    critic_optimizer: torch.optim.Optimizer | None = None,
    update_every: int = 1,
    log_every: int = 1,
    release_memory: bool = False,
    progress: ProgressFn = no_progress,
    desc: str | None = None,
) -> dict[str, list[float]]:
    """Run ``steps`` training steps.

    Each step draws a batch, updates the critic once (when ``step.critic_loss`` is given)
    and, on every ``update_every``-th step (counted over the whole run), updates the
    generator with the critic's parameters frozen. Without a critic, the other steps are
    skipped entirely.

    Returns
    -------
    dict
        Each logged name (``"generator"``, ``"critic"``, ...): its mean over each block of
        ``log_every`` steps (NaN for a block without an update); one host transfer at the end.
    """
    has_critic = step.critic_loss is not None
    logs: dict[str, list] = {}
    for i in progress(range(1, steps + 1), total=steps, desc=desc):
        update = i % update_every == 0
        if has_critic or update:
            shared = step.prepare(batches())
            if has_critic:
                loss = step.critic_loss(shared)
                critic_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                critic_optimizer.step()
                logs.setdefault("critic", []).append((i, loss.detach()))
            if update:
                if critic is not None:
                    critic.requires_grad_(False)
                out = step.generator_loss(shared)
                loss, logged = out if isinstance(out, tuple) else (out, {"generator": out})
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if critic is not None:
                    critic.requires_grad_(True)
                if step.after_update is not None:
                    step.after_update()
                for name, value in logged.items():
                    logs.setdefault(name, []).append((i, value.detach()))
            del shared
        if release_memory:
            release_freed_memory()
    return {name: _block_means(entries, steps, log_every) for name, entries in logs.items()}


def _block_means(entries: list, steps: int, log_every: int) -> list[float]:
    n_blocks = -(-steps // max(1, log_every))
    values = torch.stack([v for _, v in entries]).double().cpu()
    blocks = torch.tensor([(i - 1) // log_every for i, _ in entries])
    sums = torch.zeros(n_blocks, dtype=torch.float64).index_add_(0, blocks, values)
    counts = torch.zeros(n_blocks, dtype=torch.float64).index_add_(0, blocks, torch.ones_like(values))
    return (sums / counts).tolist()  # 0 / 0 = NaN for a block without an update
