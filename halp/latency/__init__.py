"""Latency model: how long a compute op takes on a device, and a transfer on a link."""

from halp.latency.model import LatencyModel
from halp.latency.profile import Profile, load_profile

__all__ = ["LatencyModel", "Profile", "load_profile"]
