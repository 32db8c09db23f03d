"""The genetic algorithm of ERL: a population of actors, their fitness the mean episode reward.

One generation keeps the `elites` fittest actors unchanged and fills the rest with children:
two parents picked by tournament (the fittest of `tournament` drawn at random), a neuron-wise
crossover (each output neuron of each layer, its weights and bias, from one parent or the other)
and a Gaussian mutation (noise of standard deviation `sigma` on a random `fraction` of the
weights). Every random draw comes from the caller's generator.
"""

from __future__ import annotations

import copy
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from halp.methods.erl import Actor

MUTATED_FRACTION = 0.2  # of the weights, per mutation
A = TypeVar("A", bound=nn.Module)  # an actor network, whatever its class


def tournament(fitness: list[float], size: int, rng: np.random.Generator) -> int:
    """The index of the fittest of `size` individuals drawn without replacement."""
    picks = rng.choice(len(fitness), size=min(size, len(fitness)), replace=False)
    return int(max(picks, key=lambda i: fitness[i]))


def crossover(a: Actor, b: Actor, rng: np.random.Generator) -> Actor:
    """A child with each neuron (a row of a linear layer and its bias) from `a` or from `b`."""
    child = copy.deepcopy(a)
    with torch.no_grad():
        for mine, theirs in zip(child.modules(), b.modules(), strict=True):
            if isinstance(mine, nn.Linear):
                assert isinstance(theirs, nn.Linear)  # a and b share one architecture
                take = torch.from_numpy(rng.random(mine.out_features) < 0.5)
                mine.weight[take] = theirs.weight[take]
                mine.bias[take] = theirs.bias[take]
    return child


def mutate(actor: Actor, sigma: float, rng: np.random.Generator,
           fraction: float = MUTATED_FRACTION) -> Actor:
    """A copy with Gaussian noise on a random `fraction` of its weights."""
    child = copy.deepcopy(actor)
    with torch.no_grad():
        for p in child.parameters():
            mask = rng.random(p.shape) < fraction
            noise = sigma * rng.standard_normal(p.shape) * mask
            p.add_(torch.from_numpy(noise.astype(np.float32)))
    return child


def next_generation(population: list[Actor], fitness: list[float], *, elites: int, tournament_size: int,
                    sigma: float, rng: np.random.Generator) -> list[Actor]:
    """Elites first (unchanged, fittest first), then children of tournament winners."""
    ranked = sorted(range(len(population)), key=lambda i: fitness[i], reverse=True)
    out = [copy.deepcopy(population[i]) for i in ranked[:elites]]
    while len(out) < len(population):
        a = population[tournament(fitness, tournament_size, rng)]
        b = population[tournament(fitness, tournament_size, rng)]
        out.append(mutate(crossover(a, b, rng), sigma, rng))
    return out


def flat(actor: nn.Module) -> np.ndarray:
    """All weights as one vector (to ship an actor to a worker process)."""
    return nn.utils.parameters_to_vector(actor.parameters()).detach().numpy().copy()


def load_flat(actor: A, weights: np.ndarray) -> A:
    nn.utils.vector_to_parameters(torch.from_numpy(np.asarray(weights, dtype=np.float32)),
                                  actor.parameters())
    return actor
