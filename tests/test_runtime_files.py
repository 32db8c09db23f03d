"""Model files reach a worker by digest: its own store first, the host's path only when it
holds the very same bytes, and a missing or different file is refused in one line."""

from __future__ import annotations

import shutil

import pytest

from halp.errors import BackendError
from halp.model.zoo import ModelSpec, build_model, model_digest
from halp.runtime.device import spec_from_dict, spec_to_dict
from halp.runtime.files import digests_of, file_digest, localise, stored_as

from support import users_model

NET = """\
from torch import nn

def build():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
"""


@pytest.fixture
def host(tmp_path):
    """A custom model as the host has it: its factory file and a weights file of its own."""
    spec = users_model(tmp_path / "host", NET, 8)
    return spec, model_digest(build_model(spec))


def on_the_wire(spec: ModelSpec) -> ModelSpec:
    return spec_from_dict(spec_to_dict(spec))


def test_a_worker_builds_from_its_store_what_the_host_built(host, tmp_path):
    spec, digest = host
    store = tmp_path / "store"
    for path in (tmp_path / "host" / "net.py", tmp_path / "host" / "trained.pt"):
        stored = stored_as(store, file_digest(path), path.name)
        stored.parent.mkdir(parents=True)
        shutil.copy(path, stored)
    received = on_the_wire(spec)
    shutil.rmtree(tmp_path / "host")  # the worker's machine has no host folder

    local = localise(received, store)

    assert local.weights.startswith(str(store)) and local.factory.startswith(str(store))
    assert local.factory.endswith(":build")
    assert model_digest(build_model(local)) == digest


def test_a_worker_on_the_hosts_disk_uses_the_hosts_files(host, tmp_path):
    spec, digest = host
    local = localise(on_the_wire(spec), tmp_path / "empty-store")

    assert local.weights == spec.weights and local.factory == spec.factory
    assert model_digest(build_model(local)) == digest


def test_a_file_that_differs_from_the_hosts_is_refused_in_one_line(host, tmp_path):
    spec, _ = host
    received = on_the_wire(spec)
    (tmp_path / "host" / "trained.pt").write_bytes(b"other weights")  # changed since the host hashed it

    with pytest.raises(BackendError, match=r"trained\.pt \(sha256 [0-9a-f]{12}\) is not on") as err:
        localise(received, tmp_path / "store")
    assert "\n" not in str(err.value)


def test_digests_travel_with_the_spec_and_bad_ones_are_refused(host):
    spec, _ = host
    sent = spec_to_dict(spec)

    assert set(sent["digests"]) == {"weights", "factory"}
    assert dict(spec_from_dict(sent).digests) == digests_of(spec)
    for bad in ({"weights": "abc"}, {"weights": 3}, {"code": "0" * 64}, ["0" * 64]):
        with pytest.raises(BackendError, match="bad model spec: digests"):
            spec_from_dict({**sent, "digests": bad})
