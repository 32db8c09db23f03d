"""Training split policies in the simulator, and what they are measured against.

- `learning.train`: evolutionary reinforcement learning (a population, a gradient learner, one
  shared replay buffer), episodes played in worker processes or on Ray; `halp train` runs it.
- `learning.ga`: the genetic operators (tournament, crossover, mutation, elites).
- `learning.td3`: the gradient learner (TD3 or DDPG) and the replay buffer.
- `learning.baselines`: the splits a learned policy is compared with (equal, by speed, HALP, an
  exhaustive optimum).

The environment itself, `sim.env`, is the simulator's: this package imports `halp` and `sim`,
never the other way round. Nothing imports it but the CLI command `halp train` (lazily, so the
core never pays for it), the figures, the benchmarks and the tests.
"""
