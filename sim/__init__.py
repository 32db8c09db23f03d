"""The simulator: plans executed in SimPy virtual time, durations from the latency model.

- `sim.costs`: all the cost arithmetic (what an op holds, for how long; bandwidth traces
  integrated exactly), and plans compiled once into flat tuples.
- `sim.engine`: the event loop: devices and per-device senders serving their queues in plan
  order, links as first-come-first-served resources, requests submitted or served by a policy;
  `simulate` is the fast path for sweeps and learning (latencies only).
- `sim.backend`: the simulator as a `halp.backends.Backend` (`BACKEND.run(scenario, policy,
  writer) -> Trace`), and `simulate_trace` for plans on a cluster without a scenario.
- `sim.env`: the gymnasium environment that split policies learn in (`learning/`).
"""
