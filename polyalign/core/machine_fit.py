"""Does a valid recipe fit this machine: the memory it is known to need before any step, and what one
loss step costs here. A check apart from validity: ``polyalign validate`` prints it after the recipe's
validity, and ``train`` refuses a recipe whose memory need exceeds this machine's (``--force`` trains anyway)."""

from __future__ import annotations

import torch

from . import memory
from .errors import PolyalignError
from .plugin_manager import Plugins
from .recipe_schema import Recipe
from .requirements import recipe_nodes
from .step_cost import recipe_step_cost


class DoesNotFit(PolyalignError):
    """A valid recipe needs more memory than this machine has; ``problems`` holds (yaml path, estimate)."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = [f"{source} is valid but does not fit this machine (pass --force, or force=True, to train anyway):"]
        super().__init__("\n".join(lines + [f"  {path}: {message}" for path, message in problems]))


def memory_needs(recipe: Recipe, plugins: Plugins) -> list[tuple[str, memory.MemoryNeed]]:
    """(yaml path, need) for the projection heads and every plugin whose config counts its memory
    (a ``memory_need(context)`` method, given the recipe's plugin context)."""
    dim, batch, m = recipe.model.embed_dim, recipe.train.batch_size, len(recipe.modalities)
    needs = [("model.embed_dim", memory.MemoryNeed(
        4.0 * dim * m * (8 + 2 * batch), f"{dim} dimensions x {m} modalities x (8 numbers per dimension for each "
        f"head's weights, gradients and optimizer state + 2 x {batch} embeddings of a batch and their gradients) "
        f"x 4 bytes", "lower model.embed_dim"))]
    context = recipe.plugin_context()
    for kind, path, node in recipe_nodes(recipe):
        config = plugins.registry.get(kind, node.plugin).make_config(node.options(), context)
        counter = getattr(config, "memory_need", None)
        need = counter(context) if callable(counter) else None
        if need is not None:
            needs.append((path, need))
    return needs


def memory_problems(needs: list[tuple[str, memory.MemoryNeed]]) -> list[tuple[str, str]]:
    """(yaml path, message with the estimate and what to change) for every need over this machine's memory."""
    return [(path, problem) for path, need in needs if (problem := memory.memory_problem(need)) is not None]


def check_fit(recipe: Recipe, plugins: Plugins, source: str, force: bool = False) -> list[str]:
    """Before training: raise :class:`DoesNotFit` when the recipe needs more memory than this machine
    has; with ``force``, return those problems as warning lines instead (and nothing when it fits)."""
    problems = memory_problems(memory_needs(recipe, plugins))
    if problems and not force:
        raise DoesNotFit(source, problems)
    return [f"warning: does not fit this machine, training anyway (force): {path}: {message}"
            for path, message in problems]


def fit_lines(recipe: Recipe, plugins: Plugins, loss: torch.nn.Module, device: torch.device | str) -> list[str]:
    """What ``polyalign validate`` prints of this machine: memory (fits, or each need over it, with the
    estimate and what to change) and, when it fits, the cost of one loss step (measured: it allocates)."""
    needs = memory_needs(recipe, plugins)
    problems = memory_problems(needs)
    if problems:
        return [f"memory: does not fit (train refuses it; --force trains anyway): {path}: {message}"
                for path, message in problems]
    path, need = max(needs, key=lambda found: found[1].bytes)
    have = memory.physical_memory()
    lines = [f"memory: fits (the largest need known before any step, {path}, is {memory.bytes_text(need.bytes)}"
             + (f"; this machine has {memory.bytes_text(have)})" if have is not None else ")")]
    step = step_cost_line(recipe, loss, device)
    return lines + ([step] if step is not None else [])


def step_cost_line(recipe: Recipe, loss: torch.nn.Module, device: torch.device | str,
                   only_slow: bool = False) -> str | None:
    """``step cost: ...`` for one loss step on ``device`` (``note: ...`` when it is slow), or None when the
    loss counts no operations; with ``only_slow``, only a slow step's note (measured only if it can be slow)."""
    found = recipe_step_cost(recipe, loss, device, only_slow)
    if found is None or (only_slow and not found[0].slow):
        return None
    return f"{'note' if found[0].slow else 'step cost'}: {found[1]}"

