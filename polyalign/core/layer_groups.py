"""An encoder's layer groups: which parameters ``unlocked_layers`` locks and ``layer_decay`` scales."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from torch import nn

from .encoder import Encoder
from .errors import PluginError, PolyalignError

Part = nn.Module | nn.Parameter | None


def named_layer_groups(encoder: nn.Module, groups: Sequence[Sequence[Part]]) -> list[list[str]]:
    """``encoder``'s parameter names, grouped as the modules and parameters of ``groups`` (``None``
    parts are skipped); a parameter in no group joins the last one (as timm puts the final norm
    with the last block). Empty groups are left out."""
    group_of: dict[int, int] = {}
    for i, group in enumerate(groups):
        for part in group:
            if part is not None:
                for p in [part] if isinstance(part, nn.Parameter) else part.parameters():
                    group_of.setdefault(id(p), i)
    named: list[list[str]] = [[] for _ in groups]
    for name, p in encoder.named_parameters():
        named[group_of.get(id(p), len(groups) - 1)].append(name)
    return [g for g in named if g]


def checked_layer_groups(encoder: Encoder, where: str) -> list[list[str]]:
    """``encoder.layer_groups()``, checked to hold each of its parameters exactly once."""
    groups = encoder.layer_groups()
    names = dict(encoder.named_parameters())
    listed = Counter(n for g in groups for n in g)
    problems = []
    if any(not g for g in groups):
        problems.append("an empty group")
    for what, found in (("left out", [n for n in names if n not in listed]),
                        ("not parameters of the encoder", [n for n in listed if n not in names]),
                        ("listed twice", [n for n, c in listed.items() if c > 1])):
        if found:
            problems.append(f"{what}: {', '.join(found[:3])}{' ...' if len(found) > 3 else ''}")
    if problems:
        raise PluginError(f"{where}: {type(encoder).__name__}.layer_groups() must list each parameter of the "
                          f"encoder exactly once, in non-empty groups; found {'; '.join(problems)}")
    return groups


def lock_layers(encoder: Encoder, unlocked: int, where: str) -> None:
    """Stop the gradients of every parameter outside the encoder's last ``unlocked`` layer groups."""
    groups = checked_layer_groups(encoder, where)
    if unlocked > len(groups):
        raise PolyalignError(f"{where}.unlocked_layers: {unlocked}, but the encoder has {len(groups)} layer "
                             f"group(s); give at most {len(groups)}, or drop unlocked_layers to train all of it")
    params = dict(encoder.named_parameters())
    for group in groups[:len(groups) - unlocked]:
        for name in group:
            params[name].requires_grad_(False)
    if not any(p.requires_grad for p in params.values()):
        raise PolyalignError(f"{where}.unlocked_layers: {unlocked} leaves nothing of the encoder to train: no "
                             f"parameter of its last {unlocked} layer group(s) trains (with freeze: true none does; "
                             f"with lora only the adapters in its blocks do). Raise it, or drop it or freeze")


def layer_decay_scales(encoder: Encoder, decay: float, where: str) -> dict[str, float]:
    """``decay ** (n - i)`` for each parameter name in layer group i of the encoder's n."""
    groups = checked_layer_groups(encoder, where)
    return {name: decay ** (len(groups) - i) for i, group in enumerate(groups) for name in group}
