"""The policy: a two-layer fully connected network from a fixed one-hot state encoding to 4 action logits.

The encoding is one-hot over all grid cells (holes and goal included) and is not learned. With a one-hot
input the first linear layer is exactly an embedding table (column s = the embedding of state s), so IFT's
mix of encodings ``(1-λ)·onehot(s) + λ·onehot(s̃)`` is, after that layer, the mix of the two states'
embeddings, as in the language model.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class PolicyNet(nn.Module):
    """state encoding [.., S] -> hidden (activation) -> action logits [.., A]."""

    def __init__(self, num_states: int, num_actions: int, hidden_size: int, activation: str = "tanh") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation={activation!r}; allowed values: {list(ACTIVATIONS)}")
        self.num_states = num_states
        self.layers = nn.Sequential(
            nn.Linear(num_states, hidden_size), ACTIVATIONS[activation](), nn.Linear(hidden_size, num_actions)
        )

    def forward(self, encodings: torch.Tensor) -> torch.Tensor:
        return self.layers(encodings)


def init_policy(seed: int, num_states: int, num_actions: int, hidden_size: int, activation: str) -> PolicyNet:
    """A freshly initialised policy; the same seed gives the same weights, and the global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PolicyNet(num_states, num_actions, hidden_size, activation)


def encode_states(states: torch.Tensor, num_states: int) -> torch.Tensor:
    """One-hot encodings ``[..., S]`` (float32) of integer states."""
    return F.one_hot(states, num_states).to(torch.float32)


def action_logps(logits: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log π(a_t | input_t) per step ``[B, T]``, 0 off the mask: a trajectory's "token log-probs"."""
    logps = torch.log_softmax(logits, dim=-1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    return logps.masked_fill(~mask, 0.0)


@torch.no_grad()
def policy_matrix(policy: PolicyNet) -> np.ndarray:
    """π(a|s) ``[S, A]`` for every state, evaluated on the plain (unmixed) encodings."""
    states = torch.arange(policy.num_states)
    return torch.softmax(policy(encode_states(states, policy.num_states)), dim=-1).double().numpy()


def parameter_vector(policy: PolicyNet) -> np.ndarray:
    """All parameters flattened in module order (float64), for the parameter MSE."""
    return torch.nn.utils.parameters_to_vector(policy.parameters()).detach().double().numpy()
