"""Scenarios: the validated YAML that every backend runs.

Loading is the only place that parses units and the only place that raises on bad input. A bad
file gets one line: the file, the field path, the reason.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from halp import units
from halp.accuracy import known_variants
from halp.channel import gauss_markov, gilbert_elliott, step_count
from halp.cluster import Cluster, Device
from halp.errors import HalpError, ScenarioError, shown
from halp.keyhints import missing_near, unknown_key
from halp.latency.profile import find_profile, load_profile
from halp.model.zoo import (
    MAX_FACTORY_FILE_BYTES,
    MOBILENET_RESOLUTIONS,
    MOBILENET_WIDTHS,
    TORCHVISION_MODELS,
    TORCHVISION_RESOLUTIONS,
    ModelSpec,
)
from halp.names import SAFE_NAME, SAFE_NAME_RULE
from halp.network import MAX_TRACE_BYTES, MAX_TRACE_ROWS, BandwidthTrace, read_trace
from halp.tensorfile import MAX_TENSOR_FILE_BYTES
from halp.units import MAX_BANDWIDTH_BPS, MAX_MEMORY_BYTES, MIN_BANDWIDTH_BPS, MIN_MEMORY_BYTES
from halp.userfiles import checked_file
from halp.yamlfile import MAX_YAML_BYTES, YamlError, YamlSyntaxError, parse_yaml, read_yaml

# ---- limits ---------------------------------------------------------------------------------
# Every number in a scenario is finite and within these bounds, or the file is refused naming
# the field and the bound. They are far beyond any real study; they exist so that a typo or a
# hostile file fails in one line instead of overflowing, running for days or filling memory.
# README.md ("Limits") lists them. Bandwidths: MIN_BANDWIDTH_BPS..MAX_BANDWIDTH_BPS (1 bps to
# 1 Tbps, halp.units, shared with trace files); a device's memory MIN_MEMORY_BYTES..
# MAX_MEMORY_BYTES (1 kB to 1 TB).
MAX_DURATION_S = 1e6  # any time, duration or timeout: eleven and a half days
MAX_DELAY_S = 60.0  # one-way delay and jitter of a transfer: no edge network takes a minute
MIN_STEP_S = 1e-3  # a generated link's step: finer than a shaper follows, and cheap to bound
MAX_TRACE_STEPS = MAX_TRACE_ROWS  # a generated link's duration / step: as many as a trace file
MAX_SEED = 2**32 - 1  # a 32-bit seed: scaled by up to 1_000_003 it still fits torch's 64 bits
MAX_SPEED = 1000.0  # a device's speed factor against its profile (dynamics' too)
MAX_DEVICES = 64  # devices in a scenario, and so links and dynamics entries
# A run keeps and writes a record per op: about 370 bytes of memory at its peak and 340 on disk
# (2.1 million ops of MoDNN on MobileNet-V1: 0.8 GB and 0.7 GB, 52 s simulated here). The
# requests are bounded, and so are requests x ops of the plan (checked once planned).
MAX_REQUESTS = 100_000
MAX_RECORDED_OPS = 2_500_000
MAX_RATE_PER_S = 10_000.0  # poisson arrivals: a request every 0.1 ms already saturates any device
MAX_EVENTS = 10_000  # dynamics steps and background loads of one device or link
MAX_CHANNELS = 4096  # a custom input_shape's C: no CNN takes more channels in
MAX_SIDE = 4096  # a custom input_shape's H and W, and a resolution: 18x VGG-16's 224
MAX_LAYERS = 10_000  # a layer boundary (cuts, cut, fused_layers), and how many cuts
MAX_VARIANTS = 64  # model variants a select method lists (there are 16 MobileNet-V1s)
MAX_GENERATIONS = 100_000  # learning: generations, and sync_every
MAX_POPULATION = 1000  # learning: population, elites, tournament
MAX_MUTATION_SIGMA = 10.0  # learning: the mutation's standard deviation on network weights
MAX_EPISODE_STEPS = 10_000  # learning: decisions per episode
MAX_BATCH = 65_536  # learning: transitions per gradient step
MAX_HIDDEN = 4096  # learning: units per hidden layer
MAX_LEARNER_STEPS = 100_000  # learning: gradient steps per generation
MAX_JOBS = 1024  # learning: worker processes
MAX_WARMUP_REQUESTS = 1000  # untimed requests per plan before an emulated or measured run
MAX_SCENARIO_BYTES = MAX_YAML_BYTES


def _unit(parse):
    def check(value: Any, info: ValidationInfo) -> Any:
        # A scenario re-validated from its own dump holds plain numbers in base units.
        trusted = bool(info.context and info.context.get("base_units"))
        if trusted and isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise ValueError(f"{shown(value, 20)} is not a finite number") from None
        try:
            return parse(value)
        except HalpError as exc:
            raise ValueError(str(exc)) from None
    return BeforeValidator(check)


def _within(low: float, high: float, unit: Callable[[float], str], *,
            positive: bool = False) -> AfterValidator:
    """A quantity's range, said in its unit ("must be from 0s to 60s"); `positive`: above
    `low`, which is then said as "must be positive"."""
    def check(value: float) -> float:
        if positive and value <= low:
            raise ValueError("must be positive" if low == 0 else f"must be more than {unit(low)}")
        if not low <= value <= high:
            raise ValueError(f"must be from {unit(low)} to {unit(high)}, got {unit(value)}")
        return value
    return AfterValidator(check)


# In JSON/YAML dumps (the scenario as run) values carry their unit again, so they load back.
Bandwidth = Annotated[float, _unit(units.bandwidth_bps),
                      _within(MIN_BANDWIDTH_BPS, MAX_BANDWIDTH_BPS, units.format_bps),
                      PlainSerializer(lambda v: f"{v:.12g}bps", when_used="json")]
Duration = Annotated[float, _unit(units.duration_s), _within(0, MAX_DURATION_S, units.format_s),
                     PlainSerializer(lambda v: f"{v:.12g}s", when_used="json")]
# A duration for which zero means nothing: an interval, a timeout, a horizon.
PositiveDuration = Annotated[Duration, _within(0, MAX_DURATION_S, units.format_s, positive=True)]
Delay = Annotated[Duration, _within(0, MAX_DELAY_S, units.format_s)]
Step = Annotated[Duration, _within(MIN_STEP_S, MAX_DURATION_S, units.format_s)]
# A device's memory for the plan ("1GB", "512MiB"): planners respect it (halp.memory).
Memory = Annotated[float, _unit(units.memory_bytes),
                   _within(MIN_MEMORY_BYTES, MAX_MEMORY_BYTES, units.format_bytes),
                   PlainSerializer(lambda v: f"{v:.12g}B", when_used="json")]


class Strict(BaseModel):
    # allow_inf_nan: a number is finite wherever it comes from (YAML's .inf, "nan", an overflow).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        """`speed: true` is a mistake, not 1.0 (pydantic's lax mode would take it as one)."""
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if isinstance(value, bool) and field is not None and _numeric(field.annotation):
                    raise ValueError(f"{name}: a number, not {str(value).lower()}")
        return data


def _numeric(annotation: Any) -> bool:
    """Does a field take numbers (and not also booleans)?"""
    args = typing.get_args(annotation)
    kinds = set(args) if args and typing.get_origin(annotation) in (Union, UnionType) \
        else {annotation}
    return bool(kinds & {int, float}) and bool not in kinds


class ModelConfig(Strict):
    name: Literal["vgg16", "mobilenet_v1", "resnet18", "resnet34", "resnet50", "mobilenet_v2",
                  "googlenet", "custom"]
    width: float = Field(1.0, gt=0, le=1.0)  # MobileNet-V1's multipliers are at most 1
    resolution: int | None = Field(None, ge=1, le=MAX_SIDE)
    weights: str | None = None  # a state_dict file, relative to the scenario
    # custom: "file.py:function" (relative to the scenario) or "package.module:function" (a
    # module beside the scenario, else on the Python path) returning any nn.Module that
    # torch.fx can trace (halp.model.trace)
    factory: str | None = None
    input_shape: tuple[Annotated[int, Field(ge=1, le=MAX_CHANNELS)],
                       Annotated[int, Field(ge=1, le=MAX_SIDE)],
                       Annotated[int, Field(ge=1, le=MAX_SIDE)]] | None = None  # (C, H, W), custom

    @model_validator(mode="after")
    def _family(self) -> ModelConfig:
        if self.name == "mobilenet_v1":
            if self.width not in MOBILENET_WIDTHS:
                raise ValueError(f"width {self.width} is not in the MobileNet-V1 family {MOBILENET_WIDTHS}")
            if self.resolution is not None and self.resolution not in MOBILENET_RESOLUTIONS:
                raise ValueError(f"resolution {self.resolution} is not in the MobileNet-V1 family "
                                 f"{MOBILENET_RESOLUTIONS}")
        elif self.name == "vgg16":
            if self.width != 1.0:
                raise ValueError("VGG-16 has no width multiplier")
            if self.resolution not in (None, 224):
                raise ValueError("VGG-16 takes 224x224 inputs")
        elif self.name in TORCHVISION_MODELS:
            title = TORCHVISION_MODELS[self.name][0]
            if self.width != 1.0:
                raise ValueError(f"{title} has no width multiplier")
            if self.resolution is not None and self.resolution not in TORCHVISION_RESOLUTIONS:
                raise ValueError(f"{title} takes resolutions from {TORCHVISION_RESOLUTIONS.start} "
                                 f"to {TORCHVISION_RESOLUTIONS.stop - 1}, got {self.resolution}")
        elif not self.factory or not self.input_shape:
            raise ValueError("a custom model needs factory: 'module:function' and input_shape: [C, H, W]")
        return self


class DeviceConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,14}$")
    role: Literal["host", "secondary"] = "secondary"
    profile: str
    speed: float = Field(1.0, gt=0, le=MAX_SPEED)
    # The emulator's device: absent, it is as fast as the profile and `speed` say (emu.devices);
    # written, it is this share of one of the machine's cores.
    cpu_share: float | None = Field(None, gt=0, le=64)
    threads: int = Field(1, ge=1, le=64)
    # What a plan may hold on the device (its weights and activations, halp.memory); a plan
    # that needs more is never chosen. Absent: no limit.
    memory: Memory | None = None
    # Hardware backend: where the device is and how to reach it.
    address: str | None = None
    port: int = Field(5555, ge=1, le=65535)
    ssh_user: str | None = None
    ssh_key: str | None = None
    ssh_port: int = Field(22, ge=1, le=65535)
    python: str = "python3"


class TraceLink(Strict):
    trace: str  # CSV time_s,bandwidth_bps, relative to the scenario file


class GilbertElliottConfig(Strict):
    good: Bandwidth
    bad: Bandwidth
    p_good_bad: float = Field(ge=0, le=1)  # per step
    p_bad_good: float = Field(ge=0, le=1)
    step: Step = 1.0
    duration: PositiveDuration = 3600.0

    @model_validator(mode="after")
    def _steps(self) -> GilbertElliottConfig:
        _check_steps(self.step, self.duration)
        return self


class GaussMarkovConfig(Strict):
    mean: Bandwidth
    sigma: Bandwidth
    alpha: float = Field(0.9, ge=0, lt=1)  # memory: 0 is white noise
    step: Step = 1.0
    duration: PositiveDuration = 3600.0
    floor: Bandwidth = 1e5

    @model_validator(mode="after")
    def _steps(self) -> GaussMarkovConfig:
        _check_steps(self.step, self.duration)
        return self


def _check_steps(step_s: float, duration_s: float) -> None:
    """A generated link's steps are counted, and refused, before any is drawn."""
    try:
        step_count(step_s, duration_s)
    except HalpError as exc:
        raise ValueError(f"{exc} (duration {units.format_s(duration_s)}, step "
                         f"{units.format_s(step_s)})") from None


class GeneratedLink(Strict):
    gilbert_elliott: GilbertElliottConfig | None = None
    gauss_markov: GaussMarkovConfig | None = None

    @model_validator(mode="after")
    def _one(self) -> GeneratedLink:
        if (self.gilbert_elliott is None) == (self.gauss_markov is None):
            raise ValueError("a generated link needs exactly one of gilbert_elliott, gauss_markov")
        return self


def _link_kind(value: Any) -> str:
    if isinstance(value, TraceLink) or (isinstance(value, dict) and "trace" in value):
        return "trace"
    if isinstance(value, GeneratedLink | dict):
        return "generated"
    return "bandwidth"


# A link is a bandwidth ("40Mbps"), a trace file, or a generator.
LinkValue = Annotated[
    Annotated[Bandwidth, Tag("bandwidth")] | Annotated[TraceLink, Tag("trace")]
    | Annotated[GeneratedLink, Tag("generated")],
    Discriminator(_link_kind),
]


class NetworkConfig(Strict):
    kind: Literal["star", "shared"] = "star"
    bandwidth: Bandwidth
    links: dict[str, LinkValue] = Field(default_factory=dict, max_length=MAX_DEVICES)
    delay: Delay = 0.0  # one-way, per transfer
    jitter: Delay = 0.0
    loss: float = Field(0.0, ge=0, lt=1)


class StandaloneMethod(Strict):
    name: Literal["standalone"]


class HalpMethod(Strict):
    name: Literal["halp", "equal"]
    # segment boundaries; chosen by the planner when absent
    cuts: list[Annotated[int, Field(ge=0, le=MAX_LAYERS)]] | None = Field(
        None, max_length=MAX_LAYERS)
    max_layers_per_segment: int | None = Field(None, ge=1, le=MAX_LAYERS)
    # halp only: share the linear layers' output features among the devices where predicted
    # faster (halp.methods.classifier); false leaves them to the host, as published
    split_classifier: bool = True


class ModnnMethod(Strict):
    name: Literal["modnn"]


class DeepthingsMethod(Strict):
    name: Literal["deepthings"]
    grid: tuple[int, int] = (3, 3)
    # layers fused into tiles; chosen when absent
    fused_layers: int | None = Field(None, ge=1, le=MAX_LAYERS)

    @model_validator(mode="after")
    def _grid(self) -> DeepthingsMethod:
        if min(self.grid) < 1 or max(self.grid) > 16:
            raise ValueError("grid must be two numbers from 1 to 16, like [3, 3]")
        return self


class OffloadMethod(Strict):
    name: Literal["offload"]
    cut: int | None = Field(None, ge=0, le=MAX_LAYERS)  # boundary where the secondary takes over
    device: str | None = None


def _variant_name(value: Any) -> Any:
    if isinstance(value, int | float):
        raise ValueError(f"YAML read a variant as the number {shown(value, 20)}; quote it, "
                         "like '0.5_160'")
    return value


class SelectMethod(Strict):
    """Dynamic model selection: per request, the most accurate variant predicted to meet the
    deadline under the estimated bandwidth, run with the `base` method."""

    name: Literal["select"]
    base: Literal["halp", "standalone", "equal", "modnn", "deepthings", "offload"] = "halp"
    # e.g. ["1.0_224", "0.5_160"] (quoted: YAML reads 0.5_160 as a number); all 16 when absent
    variants: list[Annotated[str, BeforeValidator(_variant_name)]] | None = Field(
        None, max_length=MAX_VARIANTS)
    window: int = Field(8, ge=1, le=1000)  # transfers per link the bandwidth estimate averages
    # Observations older than this are forgotten, so a link that has gone quiet (the chosen
    # variant stopped using it) is assumed back at its nominal rate and gets probed again.
    horizon: PositiveDuration = 10.0
    bucket: float = Field(1.1, gt=1.0, le=4.0)  # bandwidths within this ratio share cached plans
    # Share of the deadline kept for the prediction's own error: a variant counts as meeting the
    # deadline when predicted within deadline x (1 - margin). 0, as the HALP paper selects.
    margin: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _variants(self) -> SelectMethod:
        known = known_variants()
        for v in self.variants or []:
            if v not in known:
                raise ValueError(f"variant {shown(v)} is unknown; use one of {', '.join(known)}")
        if self.variants is not None and not self.variants:
            raise ValueError("variants must not be empty")
        return self


class ErlMethod(Strict):
    """A trained split policy (`halp train`): given the cluster state, per-segment row shares."""

    name: Literal["erl"]
    policy: str  # a file written by `halp train`, relative to the scenario


MethodConfig = Annotated[
    StandaloneMethod | HalpMethod | ModnnMethod | DeepthingsMethod | OffloadMethod | SelectMethod
    | ErlMethod,
    Field(discriminator="name"),
]
METHOD_NAMES = ("standalone", "equal", "modnn", "deepthings", "offload", "halp", "select", "erl")


# ---- dynamics: how device speeds and link bandwidths change between decisions -------------
class RandomWalkSpeed(Strict):
    # standard deviation of the speed factor's change per interval
    sigma: float = Field(gt=0, le=MAX_SPEED)
    min: float = Field(0.1, gt=0, le=MAX_SPEED)
    max: float = Field(4.0, gt=0, le=MAX_SPEED)

    @model_validator(mode="after")
    def _order(self) -> RandomWalkSpeed:
        if self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self


class SpeedStep(Strict):
    at: Duration
    speed: float = Field(gt=0, le=MAX_SPEED)


class BackgroundLoad(Strict):
    at: Duration
    until: Duration | None = None  # absent: until the end
    share: float = Field(gt=0, lt=1)  # the share of the CPU the load takes

    @model_validator(mode="after")
    def _order(self) -> BackgroundLoad:
        if self.until is not None and self.until <= self.at:
            raise ValueError(f"until {units.format_s(self.until)} is not after at "
                             f"{units.format_s(self.at)}")
        return self


class DeviceDynamics(Strict):
    random_walk: RandomWalkSpeed | None = None
    steps: list[SpeedStep] = Field(default_factory=list, max_length=MAX_EVENTS)
    background_load: list[BackgroundLoad] = Field(default_factory=list, max_length=MAX_EVENTS)


class RandomWalkBandwidth(Strict):
    sigma: Bandwidth
    min: Bandwidth = 1e6
    max: Bandwidth = 1e9

    @model_validator(mode="after")
    def _order(self) -> RandomWalkBandwidth:
        if self.min > self.max:
            raise ValueError(f"min {units.format_bps(self.min)} is above max "
                             f"{units.format_bps(self.max)}")
        return self


class BandwidthStep(Strict):
    at: Duration
    bandwidth: Bandwidth


class LinkDynamics(Strict):
    random_walk: RandomWalkBandwidth | None = None
    steps: list[BandwidthStep] = Field(default_factory=list, max_length=MAX_EVENTS)


class DynamicsConfig(Strict):
    interval: PositiveDuration = 1.0  # time between two decisions
    devices: dict[str, DeviceDynamics] = Field(default_factory=dict, max_length=MAX_DEVICES)
    links: dict[str, LinkDynamics] = Field(default_factory=dict, max_length=MAX_DEVICES)


class LearningConfig(Strict):
    population: int = Field(10, ge=2, le=MAX_POPULATION)
    generations: int = Field(30, ge=1, le=MAX_GENERATIONS)
    elites: int = Field(2, ge=0, le=MAX_POPULATION)
    tournament: int = Field(3, ge=2, le=MAX_POPULATION)
    mutation_sigma: float = Field(0.1, gt=0, le=MAX_MUTATION_SIGMA)
    learner: Literal["td3", "ddpg"] = "td3"
    # generations between copying the learner into the population
    sync_every: int = Field(5, ge=1, le=MAX_GENERATIONS)
    episode_steps: int = Field(10, ge=1, le=MAX_EPISODE_STEPS)
    batch: int = Field(64, ge=1, le=MAX_BATCH)
    hidden: int = Field(64, ge=4, le=MAX_HIDDEN)
    learner_steps: int = Field(50, ge=0, le=MAX_LEARNER_STEPS)  # gradient steps per generation
    jobs: int = Field(1, ge=1, le=MAX_JOBS)  # parallel worker processes evaluating the population
    ray: str | None = None  # address of a Ray cluster to evaluate on

    @model_validator(mode="after")
    def _elites(self) -> LearningConfig:
        if self.elites >= self.population:
            raise ValueError("elites must be fewer than the population")
        return self


class WorkloadConfig(Strict):
    requests: int = Field(1, ge=1, le=MAX_REQUESTS)
    arrival: Literal["single", "periodic", "poisson"] = "single"
    interval: PositiveDuration | None = None
    rate: float | None = Field(None, gt=0, le=MAX_RATE_PER_S)  # requests per second, for poisson
    # Zero is a deadline too: none meets it, so `select` serves its fastest variant.
    deadline: Duration | None = None

    @model_validator(mode="after")
    def _arrival(self) -> WorkloadConfig:
        if self.arrival == "periodic" and not self.interval:
            raise ValueError("periodic arrivals need interval, like '2s'")
        if self.arrival == "poisson" and not self.rate:
            raise ValueError("poisson arrivals need rate (requests per second)")
        if self.arrival == "single" and self.requests != 1:
            raise ValueError("single arrival means one request; use periodic or poisson for more")
        return self


class EmuConfig(Strict):
    # How a device is held to its speed (emu.devices): compute on a core of its own, released
    # after its CPU time x the slowdown ("dilate"), or a CFS quota ("quota"); "auto" dilates
    # when every device can have a core of its own.
    cpu_model: Literal["auto", "dilate", "quota"] = "auto"
    cfs_period_us: int = Field(10_000, ge=1000, le=1_000_000)
    # True: a device's I/O threads share its CPU quota with its compute (a one-core device).
    # False: only compute is limited; I/O runs beside it (a multi-core device such as a Pi 4).
    io_in_quota: bool = False
    # True: while the network is up, idle CPUs poll instead of halting (a zero-latency PM QoS
    # request), so a device resumes from its throttled part of each period on a warm CPU.
    keep_cpus_awake: bool = True
    warmup_requests: int = Field(1, ge=0, le=MAX_WARMUP_REQUESTS)
    timeout: PositiveDuration = 120.0


class HwConfig(Strict):
    start_workers: bool = True
    # untimed requests per plan first (imports, caches)
    warmup_requests: int = Field(1, ge=0, le=MAX_WARMUP_REQUESTS)
    remote_dir: str = "~/halp"
    timeout: PositiveDuration = 120.0


class BackendsConfig(Strict):
    emu: EmuConfig = EmuConfig()
    hw: HwConfig = HwConfig()


class Scenario(Strict):
    # Part of the run folder's name (runs/<name>-<backend>-<time>): a safe name, no path.
    name: str = Field(pattern=SAFE_NAME)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    model: ModelConfig
    devices: list[DeviceConfig] = Field(min_length=1, max_length=MAX_DEVICES)
    network: NetworkConfig
    method: MethodConfig
    workload: WorkloadConfig = WorkloadConfig()
    backends: BackendsConfig = BackendsConfig()
    dynamics: DynamicsConfig | None = None
    learning: LearningConfig = LearningConfig()
    # Where the file was read from, to resolve relative paths (not a YAML key).
    base_dir: str | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _cross(self) -> Scenario:
        names = [d.name for d in self.devices]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"devices: device names must be unique; repeated: {', '.join(dupes)}")
        hosts = [d.name for d in self.devices if d.role == "host"]
        if len(hosts) != 1:
            raise ValueError(f"devices: exactly one device must have role: host, found {len(hosts)}"
                             + (f" ({', '.join(hosts)})" if hosts else ""))
        for name in self.network.links:
            if name not in names:
                raise ValueError(f"network.links: names unknown device {shown(name)}")
            if name == hosts[0]:
                raise ValueError(f"network.links: {name!r} is the host; links belong to secondaries")
        if self.dynamics is not None:
            for name in self.dynamics.devices:
                if name not in names:
                    raise ValueError(f"dynamics.devices: names unknown device {shown(name)}")
            for name in self.dynamics.links:
                if name not in names or name == hosts[0]:
                    raise ValueError(f"dynamics.links: {shown(name)} is not a secondary")
        if isinstance(self.method, SelectMethod) and self.model.name not in ("mobilenet_v1", "vgg16"):
            raise ValueError(f"method select chooses among the variants of halp/data/top1.yaml "
                             f"(MobileNet-V1 and VGG-16); model {self.model.name} has none there")
        offload = self.method
        if isinstance(offload, OffloadMethod) and offload.device is not None:
            if offload.device not in names or offload.device == hosts[0]:
                raise ValueError(f"method.device: {shown(offload.device)} is not a secondary")
        return self

    # ---- derived views --------------------------------------------------------------------
    @property
    def host(self) -> str:
        return next(d.name for d in self.devices if d.role == "host")

    @property
    def base(self) -> Path:
        return Path(self.base_dir) if self.base_dir else Path.cwd()

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base / p

    def model_spec(self) -> ModelSpec:
        m = self.model
        resolution = m.resolution or (m.input_shape[1] if m.input_shape else 224)
        return ModelSpec(name=m.name, width=m.width, resolution=resolution, seed=self.seed,
                         weights=str(self.resolve(m.weights)) if m.weights else None,
                         factory=self.factory(), input_shape=m.input_shape)

    def factory(self) -> str | None:
        """The custom model's factory with its module file made absolute when it is a file:
        `file.py:function` relative to the scenario, or `module:function` where `module.py`
        lies beside the scenario. Otherwise a module name for the Python path."""
        factory = self.model.factory
        if not factory or ":" not in factory:
            return factory
        where, _, attr = factory.rpartition(":")
        if where.endswith(".py"):
            return f"{self.resolve(where).resolve()}:{attr}"
        beside = self.base / (where.replace(".", "/") + ".py")
        return f"{beside.resolve()}:{attr}" if beside.is_file() else factory

    def link_trace(self, device: str) -> BandwidthTrace:
        value = self.network.links.get(device, self.network.bandwidth)
        if isinstance(value, GeneratedLink):
            # Each link draws from its own stream: the scenario seed and the device's position.
            seed = self.seed * 1009 + [d.name for d in self.devices].index(device)
            if value.gilbert_elliott is not None:
                g = value.gilbert_elliott
                return gilbert_elliott(g.good, g.bad, g.p_good_bad, g.p_bad_good, g.step, g.duration, seed)
            assert value.gauss_markov is not None
            m = value.gauss_markov
            return gauss_markov(m.mean, m.sigma, m.alpha, m.step, m.duration, seed, m.floor)
        if isinstance(value, TraceLink):
            try:
                return read_trace(self.resolve(value.trace))
            except HalpError as exc:
                raise HalpError(f"network.links.{device}.trace: {exc}") from None
        return BandwidthTrace.constant(value)

    def cluster(self) -> Cluster:
        """The cluster as the planners see it at time zero."""
        devices = []
        for i, d in enumerate(self.devices):
            try:
                profile = load_profile(d.profile, self.base)
            except HalpError as exc:
                raise HalpError(f"devices.{i}.profile: {exc}") from None
            devices.append(Device(d.name, profile, d.speed, d.cpu_share, d.threads, d.memory))
        traces = {d.name: self.link_trace(d.name) for d in self.devices if d.name != self.host}
        return Cluster(devices=tuple(devices), host=self.host, network=self.network.kind,
                       bandwidth_bps={k: t.rate_at(0.0) for k, t in traces.items()},
                       traces=traces, delay_s=self.network.delay)

    def with_values(self, changes: dict[str, Any]) -> Scenario:
        """A copy with dotted keys replaced (`network.bandwidth`, `method.name`), revalidated."""
        data = self.model_dump(mode="python", exclude_none=False)
        for dotted, value in changes.items():
            _set_dotted(data, dotted, value)
        return parse_scenario(data, source=f"{self.name} with {changes}", base_dir=self.base_dir,
                              base_units=True)

    def to_yaml(self) -> str:
        """The scenario as run: units written back, and every file it names (profiles, traces,
        weights, a custom model's file, policy) made absolute, so it loads the same from a run folder."""
        data = self.model_dump(mode="json", exclude={"base_dir"}, exclude_none=True)
        for device in data["devices"]:
            device["profile"] = str(find_profile(device["profile"], self.base).resolve())
        for value in data["network"].get("links", {}).values():
            if isinstance(value, dict) and "trace" in value:
                value["trace"] = str(self.resolve(value["trace"]).resolve())
        if data["model"].get("weights"):
            data["model"]["weights"] = str(self.resolve(data["model"]["weights"]).resolve())
        if data["model"].get("factory"):
            data["model"]["factory"] = self.factory()
        if data["method"].get("policy"):
            data["method"]["policy"] = str(self.resolve(data["method"]["policy"]).resolve())
        return yaml.safe_dump(data, sort_keys=False)


def parse_override(text: str) -> tuple[str, Any]:
    """`--set KEY=VALUE` as a dotted key and its value (YAML, so `[3, 3]` is a list)."""
    if "=" not in text:
        raise ScenarioError(f"--set {text!r}: write KEY=VALUE, like network.bandwidth=10Mbps")
    key, _, value = text.partition("=")
    try:
        parsed = parse_yaml(value, f"--set {key.strip()}")
    except YamlSyntaxError:
        parsed = value  # not YAML: the text itself, as a string
    except YamlError as exc:
        raise ScenarioError(str(exc)) from None
    return key.strip(), parsed


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node: Any = data
    for key in keys[:-1]:
        if isinstance(node, list):
            node = _list_item(node, key, dotted)
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            raise ScenarioError(f"--set {dotted}: no field {key!r}")
    last = keys[-1]
    if isinstance(node, list):
        index = _list_index(node, last, dotted)
        node[index] = value
    elif keys[0] == "method" and last == "name" and isinstance(node, dict):
        if node.get("name") != value:
            node.clear()  # other methods take other options; the same method keeps its own
        node["name"] = value
    else:
        node[last] = value


def _list_index(node: list[Any], key: str, dotted: str) -> int:
    for i, item in enumerate(node):
        if isinstance(item, dict) and item.get("name") == key:
            return i
    if key.isdigit() and int(key) < len(node):
        return int(key)
    raise ScenarioError(f"--set {dotted}: no item {key!r}")


def _list_item(node: list[Any], key: str, dotted: str) -> Any:
    return node[_list_index(node, key, dotted)]


def _format(error: ValidationError) -> str:
    """The one error a user should read first: an unknown key before anything else (a
    misspelled key also makes its real name look missing), else pydantic's first."""
    errors = error.errors()
    unknown = [e for e in errors if e["type"] in ("extra_forbidden", "invalid_key")]
    # A misspelling of a missing key first: it explains two errors.
    unknown.sort(key=lambda e: not missing_near(e["loc"], errors))
    first = unknown[0] if unknown else errors[0]
    loc = _where(first["loc"])
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        # A link without `trace` is taken for a generated one; it may be a misspelled trace.
        also = ("trace",) if first["loc"][-2:-1] == ("generated",) else ()
        message = unknown_key(Scenario, first["loc"], errors, also)
    elif first["type"] == "invalid_key":
        loc = _where(first["loc"][:-1])
        message = (f"key {first['input']!r} is not a name (YAML reads yes, no, on, off as "
                   "booleans and digits as numbers: quote it)")
    elif first["type"] == "missing":
        message = "required field is missing"
    elif first["type"] == "union_tag_not_found":
        message = f"needs name: one of {', '.join(METHOD_NAMES)}"
    elif first["type"] == "union_tag_invalid":
        message = f"unknown method; use one of {', '.join(METHOD_NAMES)}"
    elif first["type"] == "literal_error" and loc == "model.name":
        message = "unknown model; use vgg16, mobilenet_v1 or custom"
    elif first["type"] == "string_pattern_mismatch" and loc == "name":
        message = f"{str(first['input'])[:80]!r} is not a safe name; use {SAFE_NAME_RULE}"
    message = message.removeprefix("Value error, ")
    return f"{loc}: {message}" if loc else message


def _where(raw: tuple[int | str, ...]) -> str:
    """A pydantic location as the dotted key the user wrote (no union tags or type names)."""
    parts = [str(p) for p in raw]
    if len(parts) >= 4 and parts[:2] == ["network", "links"]:
        del parts[3:4]  # the tag of the link union
    if parts[:1] == ["method"] and len(parts) > 1 and parts[1] in METHOD_NAMES:
        parts.pop(1)  # the union's tag, not a key the user wrote
    return ".".join(p for p in parts if not p.endswith(("Method", "TraceLink", "]"))
                    and p not in ("float",))


def parse_scenario(data: Any, source: str = "<scenario>", base_dir: str | None = None,
                   base_units: bool = False) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario must be a YAML mapping")
    try:
        scenario = Scenario.model_validate({**data, "base_dir": base_dir},
                                           context={"base_units": base_units})
    except ValidationError as exc:
        raise ScenarioError(f"{source}: {_format(exc)}") from None
    try:  # things that need the file system: profiles, traces, weights, a model's file
        for field, path, max_bytes in _named_files(scenario):
            try:
                checked_file(path, max_bytes)
            except HalpError as exc:
                hint = ("; train one with `halp train`" if field == "method.policy"
                        and "no such file" in str(exc) else "")
                raise HalpError(f"{field}: {exc}{hint}") from None
        scenario.cluster()
    except ScenarioError:
        raise
    except HalpError as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    return scenario


def _named_files(scenario: Scenario) -> list[tuple[str, Path, int]]:
    """(field, file, size limit) of every file the scenario names but profiles, which
    `find_profile` checks: they must be there, and be files, before a run starts."""
    files = [(f"network.links.{name}.trace", scenario.resolve(value.trace), MAX_TRACE_BYTES)
             for name, value in scenario.network.links.items() if isinstance(value, TraceLink)]
    if scenario.model.weights:
        files.append(("model.weights", scenario.resolve(scenario.model.weights),
                      MAX_TENSOR_FILE_BYTES))
    where = (scenario.factory() or "").rpartition(":")[0]
    if where.endswith(".py"):
        files.append(("model.factory", Path(where), MAX_FACTORY_FILE_BYTES))
    if isinstance(scenario.method, ErlMethod):
        files.append(("method.policy", scenario.resolve(scenario.method.policy),
                      MAX_TENSOR_FILE_BYTES))
    return files


def read_scenario_yaml(path: str | Path) -> Any:
    """The data of a scenario file, read by the safe YAML reader (`halp.yamlfile`)."""
    try:
        return read_yaml(path, MAX_SCENARIO_BYTES)
    except HalpError as exc:
        raise ScenarioError(str(exc)) from None


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    data = read_scenario_yaml(path)
    return parse_scenario(data, source=str(path), base_dir=str(path.resolve().parent))
