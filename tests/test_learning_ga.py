"""The genetic operators of ERL: selection, elitism, crossover, mutation."""

from __future__ import annotations

import numpy as np
import torch

from learning import ga
from learning.td3 import seeded_actor


def actors(n: int) -> list:
    return [seeded_actor(4, 6, 8, seed) for seed in range(n)]


def same(a, b) -> bool:
    return np.array_equal(ga.flat(a), ga.flat(b))


def test_tournament_picks_the_better():
    rng = np.random.default_rng(0)
    fitness = [-3.0, -1.0, -2.0, -5.0]
    assert all(ga.tournament(fitness, 4, rng) == 1 for _ in range(10))  # everyone drawn
    for _ in range(50):  # of any two drawn, the fitter
        i = ga.tournament([-1.0, -2.0], 2, rng)
        assert i == 0


def test_elites_survive_unchanged_and_first():
    population = actors(6)
    fitness = [-4.0, -1.0, -6.0, -2.0, -5.0, -3.0]
    children = ga.next_generation(population, fitness, elites=2, tournament_size=3, sigma=0.5,
                                  rng=np.random.default_rng(1))
    assert len(children) == 6
    assert same(children[0], population[1]) and same(children[1], population[3])
    assert children[0] is not population[1]  # a copy: the parents are never changed
    assert not any(same(c, p) for c in children[2:] for p in population)  # the rest mutated


def test_mutation_changes_weights_and_not_the_parent():
    parent = actors(1)[0]
    before = ga.flat(parent)
    child = ga.mutate(parent, 0.1, np.random.default_rng(0))
    changed = ga.flat(child) != before
    assert changed.any() and not changed.all()  # a fraction of the weights
    assert np.array_equal(ga.flat(parent), before)


def test_crossover_takes_each_neuron_from_one_parent():
    a, b = actors(2)
    child = ga.crossover(a, b, np.random.default_rng(3))
    for mine, pa, pb in zip(child.modules(), a.modules(), b.modules(), strict=True):
        if isinstance(mine, torch.nn.Linear):
            from_a = (mine.weight == pa.weight).all(dim=1) & (mine.bias == pa.bias)
            from_b = (mine.weight == pb.weight).all(dim=1) & (mine.bias == pb.bias)
            assert (from_a | from_b).all()
    assert not same(child, a) and not same(child, b)


def test_flat_weights_loaded_into_another_actor_make_it_identical():
    a, b = actors(2)
    ga.load_flat(b, ga.flat(a))
    assert same(a, b)
