"""The hardware backend: the same plans on real devices (Raspberry Pis), driven over SSH.

The machine that runs `halp` is the controller; the scenario's host device runs the executor
(`halp host`) and its secondaries run `halp worker`. Modules, each with one job:

- `inventory`: the scenario's devices as SSH targets, and the scenario as the host will load it;
- `ssh`: connections (asyncssh), commands, copies, and guarded remote processes;
- `guard`, `probe`: small stdlib-only programs copied to the devices;
- `install` (`halp hw setup`), `check` (`halp hw check`), `profile` (`halp hw profile`);
- `backend`: `run(scenario, policy, writer) -> Trace` (`halp run --backend hw`).

See hw/README.md for wiring three Pis and running on them.
"""
