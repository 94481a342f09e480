"""Configuration: pydantic models filled from archlab.toml, then ARCHLAB_*
environment variables, then CLI flags (each overriding the one before).
Everything is validated up front, with errors that say how to fix them."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from archlab.errors import ConfigError

CONFIG_FILE = "archlab.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskConfig(BaseModel):
    """[task]: `name`, `preset`, and any task option (table, dataset, data, steps...)."""

    model_config = ConfigDict(extra="allow")
    name: str = "lm"
    preset: str | None = None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class MaxTokens(_Section):
    """[llm.max_tokens]: the longest answer each step may write (reasoning room is added on top)."""

    research: int = Field(1024, ge=16)
    code: int = Field(4096, ge=16)
    analyse: int = Field(600, ge=16)
    judge: int = Field(400, ge=16)
    chat: int = Field(1024, ge=16)


class LLMConfig(_Section):
    model: str | None = None  # any litellm model string; None = offline strategies
    # An ensemble: the bandit (archlab/llm/ensemble.py) picks one of these per experiment by improvements per
    # dollar. `model` stays the default (the chat, doctor); unset, the first listed is.
    models: list[str] = Field(default_factory=list)
    # What an hour of a local model costs (its machine), in USD: a model litellm cannot price is billed
    # by its call seconds at this rate, so local and hosted models compare per dollar.
    local_usd_per_hour: float = Field(1.0, ge=0)
    temperature: float = Field(0.7, ge=0, le=2)
    code_temperature: float | None = Field(0.2, ge=0, le=2)  # the coder's; None: `temperature` (code wants it low)
    max_attempts: int = Field(3, ge=1, le=10)  # answer retries with feedback (what was wrong)
    api_base: str | None = None  # an OpenAI-compatible server: vLLM, Ollama, llama.cpp, LM Studio
    timeout_s: float = Field(120.0, gt=0)
    # auto: the pydantic schema as response_format where the model or server constrains decoding
    # to it, else "prompt" (the schema in the prompt only); a server that refuses is downgraded.
    structured: Literal["auto", "json_schema", "json_object", "tools", "prompt"] = "auto"
    edit: Literal["auto", "full", "diff"] = "auto"  # coder: whole modules, SEARCH/REPLACE edits, or its choice
    tools: Literal["auto", "native", "json"] = "auto"  # chat: native tool calls, or JSON actions under the schema
    # Where the task's design is data (nb201's cell), render the researcher's genome with the task's
    # template instead of asking the coder (GENIUS's protocol: the model chooses the design). A proposal
    # without a genome still goes to the coder. Off: the coder writes every module.
    code_from_design: bool = False
    max_tokens: MaxTokens = Field(default_factory=MaxTokens)
    reasoning_tokens: int | None = Field(None, ge=0)  # extra answer room; None: 4096 for reasoning models, else 0
    context_tokens: int | None = Field(None, ge=512)  # the input window; None: litellm's model info, else 8192
    retries: int = Field(5, ge=0, le=50)          # transient failures (429, 5xx, timeouts) retried per call
    backoff_s: float = Field(1.0, ge=0)           # first wait, doubling, with jitter (Retry-After wins)
    backoff_max_s: float = Field(60.0, ge=0)
    retry_after_max_s: float = Field(300.0, ge=0)  # a provider asking for a longer wait pauses the campaign

    @field_validator("model")
    @classmethod
    def _model_string(cls, v: str | None) -> str | None:
        if v in (None, "", "none", "offline"):
            return None
        from archlab.llm import validate_model_string  # cheap: no litellm import for known providers

        validate_model_string(v)
        return v

    @field_validator("models", mode="before")
    @classmethod
    def _model_strings(cls, v: Any) -> Any:
        if isinstance(v, str):  # ARCHLAB_LLM_MODELS=a,b and --models a,b
            v = [m.strip() for m in v.split(",") if m.strip()]
        if not isinstance(v, list):
            return v  # pydantic says what a list is
        from archlab.llm import validate_model_string

        for i, m in enumerate(v):
            if not isinstance(m, str) or not m:
                raise ValueError(f"entry {i} ({m!r}) is not a model string")
            try:
                validate_model_string(m)
            except ConfigError as exc:  # through `explain`: the setting, what was given, where to fix it
                raise ValueError(f"entry {i}: {exc}") from None
        twice = sorted({m for m in v if v.count(m) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed more than once")
        return v

    @property
    def ensemble(self) -> list[str]:
        """The models experiments are given to: `models`, else `model` alone, else none (offline)."""
        return list(self.models) or ([self.model] if self.model else [])

    @property
    def default_model(self) -> str | None:
        """The model for what belongs to no experiment (chat, doctor): `model`, else the first of `models`."""
        return self.model or (self.models[0] if self.models else None)


class BudgetConfig(_Section):
    # evaluated experiments, baselines not counted; None: the task's default
    experiments: int | None = Field(None, gt=0)
    hours: float | None = Field(None, gt=0)  # wall clock
    gpu_hours: float | None = Field(None, gt=0)
    tokens: int | None = Field(None, gt=0)
    usd: float | None = Field(None, gt=0)


class SandboxConfig(_Section):
    backend: Literal["process", "docker", "ray"] = "process"
    # process (and ray's inner process): bubblewrap around each job. auto: where it works; model code is
    # refused where it does not. none: run unisolated (recorded in the campaign's config; `show` says so).
    isolation: Literal["auto", "bwrap", "none"] = "auto"
    # Unset limits take the task's defaults (nb201: 30 s, 512 MB; lm: by preset).
    check_wall_s: float | None = Field(None, gt=0)
    train_wall_s: float | None = Field(None, gt=0)
    memory_mb: int | None = Field(None, ge=64)
    cpus: float | None = Field(None, gt=0)
    gpus: list[int] | None = None         # None: detect (CUDA_VISIBLE_DEVICES, nvidia-smi); [] = none
    gpus_per_job: int | None = Field(None, ge=0)  # None: 1 when the task's preset wants a GPU and one is there
    jobs_per_gpu: int = Field(1, ge=1)    # pack several small jobs on one GPU
    image: str | None = None              # docker: the runner image (default: the built archlab-runner tag)
    runtime: str | None = None            # docker: e.g. runsc (gVisor)
    user: str | None = None               # docker: the user jobs run as
    address: str | None = None            # ray: cluster address; None starts a local cluster
    inner: Literal["process", "docker"] = "process"  # ray: the backend each worker runs jobs with


class SearchConfig(_Section):
    strategy: Literal["auto", "llm", "random", "evolution", "surrogate"] = "auto"
    seed: int = 0
    parallel: int = Field(1, ge=1, le=256)
    population: int = Field(10, ge=2)
    tournament: int = Field(3, ge=1)
    max_repairs: int = Field(2, ge=0)     # code fixes after a failed check or training
    max_proposals: int = Field(8, ge=1)   # re-proposals after the gate rejects a duplicate
    baselines: bool = True                # evaluate the task's baselines first
    # A share of the experiment budget given, interleaved, to uniform random sampling of the same
    # design space (the random-control arm), so a campaign can show its strategy against random.
    control: float = Field(0.0, ge=0, lt=1)
    # A training already done in this workspace under the same code, task fidelity and seed is not
    # done again (<workspace>/results.sqlite); false: every training runs (e.g. to time a new machine).
    reuse_results: bool = True
    # The surrogate strategy's pick among the drawn candidates: the highest predicted score (greedy,
    # measured best on NB201), expected improvement, or an upper confidence bound (mean + 1 sd).
    acquisition: Literal["greedy", "ei", "ucb"] = "greedy"
    # What the surrogate ranks: the untried one-step neighbours of the best experiment that has any left
    # (a local search the model orders; measured best on NB201), or random mutants of the elites.
    candidates: Literal["neighbours", "mutants"] = "neighbours"
    # The surrogate's model also fits on the workspace's other campaigns of the same [task] settings.
    learn_from_workspace: bool = True
    # The surrogate's local search ends once it has gone this many evaluated experiments without beating
    # its own best, and a new one starts from a fresh sample (0: one local search for the whole campaign).
    restart_after: int = Field(80, ge=0)
    # How evolution, the surrogate's elites and the LLM's "build on" parent are chosen (agents/parents.py):
    # a tournament among the latest `population`, islands with migration, a MAP-Elites archive over the
    # task's descriptors, or a UCB bandit over parents by how much their children improved.
    parents: Literal["tournament", "islands", "map_elites", "ucb"] = "tournament"
    islands: int = Field(4, ge=2, le=64)          # parents = islands: how many
    migrate_every: int = Field(20, ge=1)          # islands: every N evaluated, each island takes its neighbour's best
    # The LLM researcher proposes this many ideas per experiment; the gate and the surrogate rank them and
    # only the most promising is coded and trained (1: one idea, no ranking).
    proposals_per_step: int = Field(1, ge=1, le=8)

    @field_validator("tournament")
    @classmethod
    def _tournament(cls, v: int, info: Any) -> int:
        pop = info.data.get("population", 10)
        if v > pop:
            raise ValueError(f"tournament ({v}) cannot exceed population ({pop})")
        return v


class VerifyConfig(_Section):
    """[verify]: once the exploration budget is met, the diverse top candidates and every baseline
    are trained again under several seeds at a verification fidelity, and tested against each other."""

    top: int = Field(0, ge=0, le=64)      # candidates promoted; 0: no verification stage
    seeds: int = Field(3, ge=1, le=50)    # seeds per candidate and per baseline (the same seeds for all)
    preset: str | None = None             # the verification preset; None: the task's (lm tiny -> tiny-long)
    # Successive halving: candidates kept at each later rung, e.g. [2, 1] with top = 4; every rung
    # adds `seeds` seeds to what is kept. [] = one rung.
    rungs: list[int] = Field(default_factory=list)
    alpha: float = Field(0.05, gt=0, lt=1)  # family-wise error rate of the claims (Holm over the candidates)
    data: Path | None = None              # lm: a second text the search never saw, scored beside val_bpb
    hours: float | None = Field(None, gt=0)      # the stage's own wall-clock budget (shown apart)
    gpu_hours: float | None = Field(None, gt=0)  # and GPU-hour budget

    @field_validator("rungs")
    @classmethod
    def _rungs(cls, v: list[int], info: Any) -> list[int]:
        top = info.data.get("top", 0)
        last = top
        for keep in v:
            if not 1 <= keep < last:
                raise ValueError(f"each rung keeps fewer candidates than the one before (top = {top}), got {v}")
            last = keep
        return v


class MemoryConfig(_Section):
    """[memory]: the vector memory the agents read and the gate's novelty layer."""

    enabled: bool = True
    path: Path | None = None     # embedded chromadb folder; default <workspace>/memory
    url: str | None = None       # a chromadb server (http://host:8000) shared by a team, instead of path
    embeddings: str = "minilm"   # minilm (offline) | litellm/<model> | hash | a sentence-transformers folder
    # Novelty of an LLM proposal: similarity to the nearest past experiment = min(proposal, code) cosine.
    near_duplicate: float = Field(0.95, gt=0, le=1)  # at or above: refused, back to the researcher
    judge_above: float = Field(0.85, gt=0, le=1)     # [judge_above, near_duplicate): the LLM judge decides
    avoid_failures: float = Field(0.99, gt=0, le=1)  # offline strategies redraw code this close to a failure

    @field_validator("judge_above")
    @classmethod
    def _band(cls, v: float, info: Any) -> float:
        top = info.data.get("near_duplicate", 0.95)
        if v > top:
            raise ValueError(f"judge_above ({v}) cannot exceed near_duplicate ({top})")
        return v


class Config(_Section):
    workspace: Path = Path("runs")
    task: TaskConfig = Field(default_factory=TaskConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)

    @model_validator(mode="after")
    def _room_for_ideas(self) -> Config:
        """Several ideas need a longer research answer: unless [llm.max_tokens] research is set, it
        grows with proposals_per_step (1024 per idea), so the answer is not cut off after the first."""
        k, tokens = self.search.proposals_per_step, self.llm.max_tokens
        if k > 1 and "research" not in tokens.model_fields_set:
            tokens.research = 1024 * k
        return self

    @property
    def strategy(self) -> str:
        """The strategy actually used: `auto` means llm when a model (or an ensemble) is set."""
        if self.search.strategy == "auto":
            return "llm" if self.llm.ensemble else "evolution"
        return self.search.strategy


SECTIONS = ("task", "llm", "budget", "sandbox", "search", "memory", "verify")
TOP_LEVEL = ("workspace",)


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """ARCHLAB_BUDGET_EXPERIMENTS=5 -> {"budget": {"experiments": "5"}}."""
    out: dict[str, Any] = {}
    for key, value in env.items():
        if not key.startswith("ARCHLAB_"):
            continue
        rest = key[len("ARCHLAB_"):].lower()
        if rest in TOP_LEVEL:
            out[rest] = value
            continue
        section, _, field = rest.partition("_")
        if section not in SECTIONS or not field:
            raise ConfigError(
                f"environment variable {key} is not a setting; use ARCHLAB_<SECTION>_<KEY> with a section in "
                f"{', '.join(SECTIONS)} (e.g. ARCHLAB_BUDGET_EXPERIMENTS=20) or ARCHLAB_WORKSPACE"
            )
        if section == "sandbox" and field == "gpus":
            try:
                value = [int(g) for g in value.split(",") if g.strip()]  # type: ignore[assignment]
            except ValueError:
                raise ConfigError(f"{key}={value!r}: give GPU ids separated by commas, e.g. {key}=0,1") from None
        out.setdefault(section, {})[field] = value
    return out


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, table by table; a None in `over` leaves the base value."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        elif value is not None:
            merged[key] = value
    return merged


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    for key, value in data.items():
        if key in SECTIONS and not isinstance(value, dict):
            raise ConfigError(f"{path}: `{key}` must be a table ([{key}]), not a value")
    return data


def explain(exc: ValidationError, source: str) -> ConfigError:
    """A validation error as the user fixes it: each bad setting, what was given, where to set it."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        section, _, field = where.partition(".")
        hint = (f"set [{section}] {field} in archlab.toml, ARCHLAB_{section.upper()}_{field.upper()}, "
                "or the matching flag" if field else f"check `{where}`")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
            hint = "remove it or fix its spelling (see `archlab run --help`)"
        lines.append(f"  {where}: {msg} (got {err.get('input')!r}); {hint}")
    return ConfigError(f"invalid configuration ({source}):\n" + "\n".join(lines))


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """File < environment < flags. `path` None means ./archlab.toml when present."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    sources = ["defaults"]
    if path is None and Path(CONFIG_FILE).exists():
        path = Path(CONFIG_FILE)
    if path is not None:
        if not Path(path).exists():
            raise ConfigError(f"config file {path} not found; create it or drop --config")
        data = _read_toml(Path(path))
        sources.append(str(path))
    data = merge(data, _env_overrides(env))
    data = merge(data, overrides or {})
    sources += ["environment", "flags"]
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise explain(exc, " < ".join(sources)) from None
    except ConfigError:
        raise


def validate(data: dict[str, Any], source: str) -> Config:
    """A stored config (plus overrides) validated with the same clear errors as a fresh one."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise explain(exc, source) from None
