"""Every fine-tuning method of the grid, declared once; the rest of the project reads it from here.

One :class:`Method` entry says what a method is made of:

* ``trainer``: the function that builds its TRL trainer (``"module:function"``, imported only when a run builds it,
  so that this module stays light enough for the data and report layers to read);
* ``data``: what it trains on: ``"answers"`` (prompt -> one target answer) or ``"pairs"`` (prompt, chosen,
  rejected), and ``tokenised_as``: which TRL trainer's tokenisation cuts its rows (ift.data.fit predicts the
  rows that trainer would drop);
* ``check``: the checks of its ``conf/method/<name>.yaml`` node, run before any model loads;
* ``logged``: the per-step values of its log history that train_metrics.json lists on their own;
* ``title``: its row title in the paper's tables;
* ``halves``: for a method that is a sequence of other methods' runs (SFT+DPO), their names in order, each
  configured by the method node's key of that name.

Adding a method: write its loss (ift.losses), its trainer builder (ift.train.trainers) and one entry in METHODS.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any


class ConfigError(ValueError):
    """An impossible or unknown config value; the message names the key."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class Method:
    name: str
    title: str  # the row title in the paper's Tables 2 and 3
    data: str  # "answers" (prompt -> target answer) | "pairs" (prompt, chosen, rejected)
    tokenised_as: str  # the TRL trainer whose tokenisation cuts its rows: "sft" | "dpo" | "orpo" | "cpo"
    trainer: str | None  # "module:function" building its trainer; None for a sequence of other methods (halves)
    check: Callable[[Any, str], None]  # check(method node, where) raises ConfigError naming the key
    logged: Mapping[str, str] = field(default_factory=dict)  # train_metrics.json key -> log history key
    halves: tuple[str, ...] = ()  # a sequence of other methods' runs, each configured by method.<half>

    def build_trainer(self, method: Mapping, **kwargs):
        """The TRL trainer for one run of this method (``kwargs``: see ift.train.trainers)."""
        if self.trainer is None:
            raise ValueError(f"method {self.name} is a sequence of runs ({', '.join(self.halves)}), not one trainer")
        module, function = self.trainer.split(":")
        return getattr(import_module(module), function)(method, **kwargs)


# ------------------------------------------------------------------------------------------------------------
# Config checks (conf/method/*.yaml); each names the key it refuses
# ------------------------------------------------------------------------------------------------------------

def sft_reduction(node) -> str:
    """An SFT method node's `reduction`; a node without one gets TRL's own (plain SFTTrainer)."""
    return node.get("reduction", "token_mean")


def lean_head(node, where: str = "method") -> tuple[bool, int]:
    """An SFT, DPO, ORPO or SimPO node's (or a start-point recipe's, ``where="trainer.pretrain"``)
    ``memory_efficient`` and ``chunk_size`` (ift.train.lean_head), checked; absent keys get the defaults of every
    conf/method and conf/trainer file that has them (true, 1024)."""
    from ift.logprobs import DEFAULT_CHUNK_SIZE

    memory_efficient = node.get("memory_efficient", True)
    require(isinstance(memory_efficient, bool),
            f"{where}.memory_efficient must be true or false, got {memory_efficient!r}")
    chunk_size = node.get("chunk_size", DEFAULT_CHUNK_SIZE)
    require(isinstance(chunk_size, int) and not isinstance(chunk_size, bool) and chunk_size >= 1,
            f"{where}.chunk_size must be a whole number >= 1 (positions per LM-head chunk), got {chunk_size!r}")
    return memory_efficient, chunk_size


def _check_sft(node, where: str) -> None:
    from ift.losses import REDUCTIONS  # the authors' per-sequence mean | TRL's token mean

    reduction = sft_reduction(node)
    require(reduction in REDUCTIONS, f"{where}.reduction={reduction!r} is unknown; choose one of {', '.join(REDUCTIONS)}")
    lean_head(node, where)


def _check_beta(node, where: str) -> None:
    beta = float(node.beta)
    require(beta > 0, f"{where}.beta must be > 0, got {beta}")


def _check_preference(node, where: str) -> None:
    _check_beta(node, where)
    lean_head(node, where)


def _check_ift(node, where: str) -> None:
    from ift.losses import ift_options

    try:
        ift_options(node).validate()
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where} (ift): {err}") from err


def _check_sft_dpo(node, where: str) -> None:
    _check_sft(node.sft, f"{where}.sft")
    _check_preference(node.dpo, f"{where}.dpo")


def _number(node, key: str, where: str, minimum: float) -> float:
    """``node[key]`` as a number >= ``minimum``; a missing, non-numeric or smaller value is a ConfigError naming it."""
    value = node.get(key)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    require(isinstance(value, int | float | str) and not isinstance(value, bool) and number >= minimum,
            f"{where}.{key} must be a number >= {minimum}, got {value!r}")
    return number


def _check_known_keys(node, where: str, keys: tuple[str, ...]) -> None:
    """A misspelt key (``bata: 2``) would silently leave the paper's value in place: refuse it."""
    unknown = sorted(set(node) - {"name", "peft", *keys})  # peft: ift.train.lora
    require(not unknown, f"unknown key(s) {', '.join(f'{where}.{key}' for key in unknown)}; "
                         f"{where} takes {', '.join(keys)}")


def _check_simpo(node, where: str) -> None:
    _check_known_keys(node, where, ("beta", "gamma_beta_ratio", "memory_efficient", "chunk_size"))
    require(_number(node, "beta", where, 0.0) > 0, f"{where}.beta must be > 0, got {node.get('beta')!r}")
    _number(node, "gamma_beta_ratio", where, 0.0)
    lean_head(node, where)


def _check_tdpo(node, where: str) -> None:
    from ift.losses import TDPO_VARIANTS

    # Its sequential KL is over the whole vocabulary at every answer position, for the policy and the reference: the
    # lean head keeps label log-probs only, so TDPO runs on full logits and has no such switch.
    for key in ("memory_efficient", "chunk_size"):
        require(key not in node, f"{where}.{key}: TDPO has no memory-efficient path (its KL needs the full "
                                 "next-token distributions of the policy and the reference); remove the key")
    _check_known_keys(node, where, ("beta", "variant", "alpha"))
    require(_number(node, "beta", where, 0.0) > 0, f"{where}.beta must be > 0, got {node.get('beta')!r}")
    variant = node.get("variant")
    require(variant in TDPO_VARIANTS, f"{where}.variant={variant!r} is unknown; choose one of {', '.join(TDPO_VARIANTS)}")
    _number(node, "alpha", where, 0.0)


METHODS: dict[str, Method] = {
    method.name: method
    for method in (  # in the paper's row order (Tables 2 and 3)
        Method("sft", "+ SFT", "answers", "sft", "ift.train.trainers:sft_trainer", _check_sft),
        Method("dpo", "+ DPO", "pairs", "dpo", "ift.train.trainers:dpo_trainer", _check_preference,
               logged={"reward_margins": "rewards/margins", "reward_accuracies": "rewards/accuracies"}),
        Method("sft_dpo", "+ SFT + DPO", "pairs", "dpo", None, _check_sft_dpo, halves=("sft", "dpo")),
        Method("tdpo", "+ TDPO", "pairs", "dpo", "ift.train.trainers:tdpo_trainer", _check_tdpo,
               logged={"reward_margins": "rewards/margins", "reward_accuracies": "rewards/accuracies",
                       "seq_kl_chosen": "tdpo/seq_kl_chosen", "seq_kl_rejected": "tdpo/seq_kl_rejected"}),
        Method("orpo", "+ ORPO", "pairs", "orpo", "ift.train.trainers:orpo_trainer", _check_preference),
        Method("simpo", "+ SimPO", "pairs", "cpo", "ift.train.trainers:simpo_trainer", _check_simpo,
               logged={"reward_margins": "rewards/margins", "reward_accuracies": "rewards/accuracies"}),
        Method("ift", "+ IFT", "answers", "sft", "ift.train.trainers:ift_trainer", _check_ift,
               logged={"lambda": "ift/lambda", "pass1_sft_loss": "ift/pass1_sft_loss", "pass2_loss": "ift/pass2_loss"}),
    )
}


def get(name: str) -> Method:
    """The method called ``name``; a ConfigError listing the known ones otherwise."""
    require(name in METHODS, f"method={name!r} is unknown; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def check_method(node, where: str = "method") -> Method:
    """Check a ``method`` config node (its name and its own keys); returns its Method."""
    method = get(node.get("name"))
    method.check(node, where)
    return method
