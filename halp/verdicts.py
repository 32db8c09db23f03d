"""Is this plan exact? Asked once per model and plan, and remembered.

A latency for a plan that computes something else than its model is no result, so `halp run`,
`halp compare` and `halp sweep` ask before they report one, and `halp verify` asks the same
question out loud. The answer (`Verdict`) comes from executing the plan in-process on a random
input (`halp.execute.execute`, on the input `max_error` draws) against the whole model: exact
when the largest error is within `TOLERANCE` of the largest output magnitude.

Executing VGG-16 takes about a second, so verdicts are kept, one small JSON file each, under
`cache_dir()/verdicts`: `$HALP_CACHE_DIR`, else `$XDG_CACHE_HOME/halp`, else `~/.cache/halp`.
A verdict is keyed by

- the model (`model_key`): its weights (`halp.model.zoo.model_digest`), its variant and input
  shape, the source files of its own (non-torch) classes and its factory, the source of the
  code that gives a plan its meaning (`CHECKER_MODULES`) and torch's version: a user's edited
  `forward` or a rewritten slicer is another model, never an old verdict;
- the plan (`plan_digest`: sha256 of its canonical JSON);
- the seed of the input.

A file is written atomically (a temporary file, then a rename) and trusted only when it parses
and its stored keys are the ones asked for; anything else is ignored and the plan executed again.
Mismatches are cached too, and still refuse: the error is stored, exactness is decided against
today's `TOLERANCE`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from halp.errors import PlanError
from halp.execute import execute
from halp.methods import Prepared
from halp.model.zoo import model_digest
from halp.plan import Plan
from halp.policy import Observation, Policy, Served

TOLERANCE = 1e-4  # relative to the largest output magnitude (as the runtime's check)
TOLERANCE_TEXT = f"{TOLERANCE:.0e}".replace("e-0", "e-")  # 1e-4
FORMAT = "halp-verdict/1"
MAX_FILE_BYTES = 64 * 1024  # a verdict is a few hundred bytes: anything bigger is not one
CHECKER_MODULES = ("halp.execute", "halp.model.graph", "halp.model.slicing", "halp.plan")


@dataclass(frozen=True)
class Verdict:
    """How far one plan's output is from its model's, and where the answer came from."""

    method: str
    model: str  # the variant, as in the plan
    max_abs_error: float | None  # None: not finite (a NaN or an infinity in an output)
    relative_error: float | None
    ops: int
    cached: bool  # read from the cache directory, not executed now
    problem: str | None = None  # why it could not even be executed against the model

    @property
    def exact(self) -> bool:
        return (self.problem is None and self.relative_error is not None
                and self.relative_error <= TOLERANCE)

    def refusal(self) -> str:
        """The one line that refuses this plan."""
        if self.problem is not None:
            return (f"plan {self.method} for {self.model} cannot be executed against the whole "
                    f"model ({self.problem}); see halp verify")
        return (f"plan {self.method} for {self.model} computes something else (relative error "
                f"{_number(self.relative_error)} > {TOLERANCE_TEXT}); see halp verify")


class PlanMismatch(PlanError):
    """A plan computes something else than the whole model: `verdict` says how far off.
    Built from its message alone too (the simulator re-raises an exception that way)."""

    def __init__(self, message: str, verdict: Verdict | None = None):
        super().__init__(message)
        self.verdict = verdict


def _number(value: float | None) -> str:
    return "not finite" if value is None else f"{value:.3g}"


# ---- keys ---------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Where halp keeps what it can compute again: `$HALP_CACHE_DIR`, else
    `$XDG_CACHE_HOME/halp`, else `~/.cache/halp`."""
    if os.environ.get("HALP_CACHE_DIR"):
        return Path(os.environ["HALP_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "halp"
    return Path.home() / ".cache" / "halp"


def _sha256(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def plan_digest(plan: Plan) -> str:
    """sha256 of the plan's canonical JSON (sorted keys): equal digests, equal plans."""
    return _sha256(plan.to_dict())


def _file_digest(path: str | Path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


@cache
def checker_digest() -> str:
    """The source of what gives a plan its meaning (executing, slicing, the graph's
    arithmetic): when it changes, every plan is checked again."""
    return _sha256({name: _file_digest(sys.modules[name].__file__ or "")
                    for name in CHECKER_MODULES})


def code_files(model: nn.Module, factory: str | None = None) -> list[str]:
    """The source files of the model's own classes (torch's left out) and of its factory:
    a user's `forward` is part of what the model computes, and its weights do not show it."""
    files: set[str] = set()
    for module in model.modules():
        for klass in type(module).__mro__:
            top = klass.__module__.split(".")[0]
            if top in ("torch", "builtins", "typing"):
                continue
            where = getattr(sys.modules.get(klass.__module__), "__file__", None)
            files.add(where or f"<{klass.__module__}.{klass.__qualname__}>")
    where = (factory or "").rpartition(":")[0]
    if where.endswith(".py"):
        files.add(where)
    elif where and getattr(sys.modules.get(where), "__file__", None):
        files.add(sys.modules[where].__file__)  # type: ignore[arg-type]
    return sorted(files)


def model_parts(prepared: Prepared) -> dict[str, Any]:
    """What identifies the model whose output a plan must reproduce (`model_key` hashes it)."""
    code = code_files(prepared.model, prepared.spec.factory)
    return {"variant": prepared.spec.variant, "input_shape": list(prepared.graph.input_shape),
            "weights": model_digest(prepared.model),
            "code": {f: _file_digest(f) if not f.startswith("<") else f for f in code},
            "checker": checker_digest(), "torch": torch.__version__}


def model_key(prepared: Prepared) -> str:
    return _sha256(model_parts(prepared))


# ---- the cache ----------------------------------------------------------------------------
def verdict_path(model: str, plan: str, seed: int, root: Path | None = None) -> Path:
    name = hashlib.sha256(f"{model}/{plan}/{seed}".encode()).hexdigest()[:40]
    return (root or cache_dir()) / "verdicts" / f"{name}.json"


def _finite(value: Any) -> float | None:
    """A stored error: a finite number >= 0, or None (not finite). Anything else: not ours."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < 0:
        raise ValueError("not an error")
    return float(value)


def read_verdict(path: Path, model: str, plan: str, seed: int) -> Verdict | None:
    """The verdict stored at `path` for exactly these keys, or None: a missing, unreadable,
    corrupt or foreign file is no verdict."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != FORMAT \
                or (data.get("model_key"), data.get("plan_digest")) != (model, plan) \
                or type(data.get("seed")) is not int or data["seed"] != seed:
            return None
        return Verdict(method=str(data["method"]), model=str(data["model"]),
                       max_abs_error=_finite(data["max_abs_error"]),
                       relative_error=_finite(data["relative_error"]),
                       ops=int(data["ops"]), cached=True,
                       problem=None if data.get("problem") is None else str(data["problem"]))
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return None


def write_verdict(path: Path, verdict: Verdict, model: str, plan: str, seed: int,
                  parts: dict[str, Any]) -> None:
    """Store `verdict` atomically: readers see the old file or the new one, never half."""
    data = {"format": FORMAT, "model_key": model, "plan_digest": plan, "seed": seed,
            "method": verdict.method, "model": verdict.model, "ops": verdict.ops,
            "max_abs_error": verdict.max_abs_error, "relative_error": verdict.relative_error,
            "problem": verdict.problem, "exact": verdict.exact, "tolerance": TOLERANCE,
            "model_parts": parts}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".verdict-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data, indent=1, allow_nan=False) + "\n")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# ---- executing ----------------------------------------------------------------------------
def model_input(prepared: Prepared, seed: int) -> torch.Tensor:
    """The random input a plan is checked on (as `halp.execute.max_error` draws it)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((1, *prepared.graph.input_shape), generator=generator)


def reference_output(prepared: Prepared, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return prepared.model(x)


def execute_verdict(plan: Plan, prepared: Prepared, seed: int,
                    reference: torch.Tensor | None = None) -> Verdict:
    """Execute `plan` in-process against the whole model (the one place that does);
    `reference`: the whole model's output on `model_input`, when already computed."""
    x = model_input(prepared, seed)
    try:
        if reference is None:
            reference = reference_output(prepared, x)
        got = execute(plan, prepared.graph, x)
        if got.shape != reference.shape:
            raise RuntimeError(f"the plan's output has shape {tuple(got.shape)}, the model's "
                               f"{tuple(reference.shape)}")
    except RuntimeError as exc:  # torch: the plan's pieces do not even fit the model's
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        return Verdict(plan.method, plan.model, None, None, len(plan.ops), cached=False,
                       problem=f"{type(exc).__name__}: {first}")
    error = float((got - reference).abs().max())
    relative = error / max(float(reference.abs().max()), 1e-30)
    finite = math.isfinite(error) and math.isfinite(relative)
    return Verdict(plan.method, plan.model, error if finite else None,
                   relative if finite else None, len(plan.ops), cached=False)


@dataclass
class Checks:
    """The verdicts of one run (`verdicts`, the tally its report shows), each plan checked once
    and each model's key computed once (hashing VGG-16's weights takes most of a second).
    `child()` is the tally of one run inside a larger one (a method of a comparison): it shares
    what is known, and what it checks counts in its parents' tallies too. `fresh` executes every
    plan even when a verdict is cached (`halp verify`)."""

    seed: int = 0
    fresh: bool = False
    root: Path | None = None  # the cache directory (default `cache_dir()`)
    verdicts: dict[tuple[str, str], Verdict] = field(default_factory=dict)
    served_checked: int = 0  # plans first met while serving (a policy that plans per request)
    cache_problem: str | None = None
    parent: Checks | None = None
    _known: dict[tuple[str, str], Verdict] = field(default_factory=dict)
    _models: dict[int, tuple[nn.Module, str, dict[str, Any]]] = field(default_factory=dict)
    _plans: dict[tuple[int, int], tuple[Plan, nn.Module, tuple[str, str]]] = field(
        default_factory=dict)
    _references: dict[int, tuple[nn.Module, torch.Tensor]] = field(default_factory=dict)

    def child(self) -> Checks:
        return Checks(self.seed, self.fresh, self.root, parent=self, _known=self._known,
                      _models=self._models, _plans=self._plans, _references=self._references)

    def _chain(self) -> list[Checks]:
        chain: list[Checks] = []
        at: Checks | None = self
        while at is not None:
            chain.append(at)
            at = at.parent
        return chain

    def _model(self, prepared: Prepared) -> tuple[str, dict[str, Any]]:
        known = self._models.get(id(prepared.model))
        if known is None or known[0] is not prepared.model:
            parts = model_parts(prepared)
            known = self._models[id(prepared.model)] = (prepared.model, _sha256(parts), parts)
        return known[1], known[2]

    def verdict(self, served: Served) -> Verdict:
        """The verdict on one served plan: known in this session, cached, or executed now."""
        plan, module = served.plan, served.prepared.model
        seen = self._plans.get((id(plan), id(module)))
        if seen is not None and seen[0] is plan and seen[1] is module:
            key = seen[2]
            found = self._known[key]
        else:
            model, parts = self._model(served.prepared)
            key = (model, plan_digest(plan))
            found = self._known.get(key) or self._look_up(served, key, parts)
            self._known[key] = found
            self._plans[(id(plan), id(module))] = (plan, module, key)
        for tally in self._chain():
            tally.verdicts[key] = found
        return found

    def _reference(self, prepared: Prepared) -> torch.Tensor | None:
        """The whole model's output, computed once per model (half of checking a plan)."""
        known = self._references.get(id(prepared.model))
        if known is None or known[0] is not prepared.model:
            try:
                output = reference_output(prepared, model_input(prepared, self.seed))
            except RuntimeError:
                return None  # the verdict says why
            known = self._references[id(prepared.model)] = (prepared.model, output)
        return known[1]

    def _look_up(self, served: Served, key: tuple[str, str], parts: dict[str, Any]) -> Verdict:
        path = verdict_path(*key, self.seed, self.root)
        found = None if self.fresh else read_verdict(path, *key, self.seed)
        if found is not None:
            return found
        found = execute_verdict(served.plan, served.prepared, self.seed,
                                self._reference(served.prepared))
        try:
            write_verdict(path, found, *key, self.seed, parts)
        except OSError as exc:  # a cache we cannot write costs time, not correctness
            for tally in self._chain():
                tally.cache_problem = tally.cache_problem or f"{path.parent}: {exc.strerror}"
        return found

    def check_plans(self, served: Iterable[Served]) -> list[Verdict]:
        """The verdict on each served plan, exact or not."""
        return [self.verdict(s) for s in served]

    def require(self, served: Iterable[Served]) -> list[Verdict]:
        """The verdicts, refusing (`PlanMismatch`, one line) the first plan that is not exact."""
        verdicts = self.check_plans(served)
        for verdict in verdicts:
            if not verdict.exact:
                raise PlanMismatch(verdict.refusal(), verdict)
        return verdicts

    def count_served(self, count: int) -> None:
        for tally in self._chain():
            tally.served_checked += count

    def summary(self) -> dict[str, Any]:
        """For the report: how many plans were checked, how many answers came from the cache."""
        values = list(self.verdicts.values())
        errors = [v.relative_error for v in values if v.relative_error is not None]
        out: dict[str, Any] = {
            "plans": len(values), "executed": sum(not v.cached for v in values),
            "cache_hits": sum(v.cached for v in values),
            "checked_while_serving": self.served_checked, "tolerance": TOLERANCE,
            "worst_relative_error": max(errors) if errors and len(errors) == len(values) else None,
            "cache_dir": str((self.root or cache_dir()) / "verdicts")}
        if self.cache_problem:
            out["cache_problem"] = self.cache_problem
        return out


def check_plans(served: Iterable[Served], seed: int = 0, fresh: bool = False) -> list[Verdict]:
    """The verdict on each plan (see `Checks`), refusing none: what `halp verify` prints."""
    return Checks(seed=seed, fresh=fresh).check_plans(served)


class CheckedPolicy:
    """Serves what `inner` serves, checking every plan it has not checked before: a policy that
    plans while serving (model selection re-plans per bandwidth bucket) is checked as it goes.
    A plan that is not exact stops the run there, before any request runs it."""

    def __init__(self, inner: Policy, checks: Checks):
        self.inner, self.checks = inner, checks
        self.known: dict[int, Plan] = {id(s.plan): s.plan for s in inner.served()}

    def serve(self, request: int, now_s: float, observed: list[Observation]) -> Served:
        served = self.inner.serve(request, now_s, observed)
        if self.known.get(id(served.plan)) is not served.plan:
            before = len(self.checks.verdicts)
            self.checks.require([served])
            self.checks.count_served(len(self.checks.verdicts) - before)
            self.known[id(served.plan)] = served.plan
        return served

    def served(self) -> list[Served]:
        return self.inner.served()
