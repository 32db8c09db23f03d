"""What the runtime's commands print for the backends that start and follow them.

`halp worker` and `halp host` run on other machines or inside Mininet nodes; the backend that
started them learns their progress only from their output. These are the words it waits for.
"""

WORKER_READY = "listening on"  # `halp worker NAME listening on ADDRESS (pid N)`, once it listens
HOST_SERVING = "serving t0="  # `serving t0=SECONDS`: the run's time zero on CLOCK_MONOTONIC
