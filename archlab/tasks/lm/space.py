"""The lm design space: a grammar of token-mixer components, rendered to real
mixer code by templates/mixer.py.j2 (so random search and evolution propose
distinct programs, not flags). Every rule is computed in the same chunked form:
exact scores inside a chunk, one carried state across chunks."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import jinja2

from archlab.tasks.base import DesignSpace

CHOICES: dict[str, tuple[Any, ...]] = {
    "feature_map": ("identity", "elu1", "relu", "softmax", "silu"),  # applied to q and k
    "rule": ("additive", "decay", "delta", "gated_delta"),          # how the state is updated
    "decay": ("fixed", "data"),          # per-head learnt constant, or per-token from the input
    "short_conv": (0, 2, 4),             # causal depthwise conv kernel on q, k, v (0 = none)
    "out_norm": ("none", "rms", "layer"),
    "out_gate": ("none", "swish", "sigmoid"),
    "heads": ("half", "same", "double"),  # relative to the harness's n_heads
    "chunk": (16, 32, 64),
}
DECAYED = ("decay", "gated_delta")
DELTA = ("delta", "gated_delta")
HEADS_EXPR = {"half": "max(1, n_heads // 2)", "same": "n_heads", "double": "n_heads * 2"}
ABBREV = {"elu1": "elu+1", "additive": "linear", "gated_delta": "gated-delta"}


class LMSpace(DesignSpace):
    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
            keep_trailing_newline=True, autoescape=False)

    def components(self, genome: dict[str, Any]) -> list[str]:
        """The components that matter for this genome (decay only for decayed rules)."""
        return [key for key in CHOICES if key != "decay" or genome.get("rule") in DECAYED]

    def canonical(self, genome: dict[str, Any]) -> dict[str, Any]:
        """Checked copy with irrelevant components cleared, so equal programs have equal genomes."""
        for key, options in CHOICES.items():
            if key == "decay" and genome.get("rule") not in DECAYED:
                continue
            if genome.get(key) not in options:
                raise ValueError(f"lm genome: {key} must be one of {list(options)}, got {genome.get(key)!r}")
        return {key: (genome[key] if key in self.components(genome) else None) for key in CHOICES}

    def sample(self, rng: random.Random) -> dict[str, Any]:
        genome = {key: rng.choice(options) for key, options in CHOICES.items()}
        return self.canonical(genome)

    def mutate(self, genome: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        """Change exactly one relevant component to a different value."""
        child = self.canonical(genome)
        key = rng.choice(self.components(child))
        child[key] = rng.choice([v for v in CHOICES[key] if v != child[key]])
        if child["rule"] in DECAYED and child["decay"] is None:
            child["decay"] = rng.choice(CHOICES["decay"])
        return self.canonical(child)

    def neighbours(self, genome: dict[str, Any]) -> list[dict[str, Any]]:
        """What `mutate` can reach; a rule that gains a decay gets each decay in turn."""
        parent, out = self.canonical(genome), []
        for key in self.components(parent):
            for value in CHOICES[key]:
                if value == parent[key]:
                    continue
                child = {**parent, key: value}
                decays = CHOICES["decay"] if child["rule"] in DECAYED and child["decay"] is None else (child["decay"],)
                out += [self.canonical({**child, "decay": d}) for d in decays]
        return out

    def describe(self, genome: dict[str, Any]) -> str:
        g = self.canonical(genome)
        rule = ABBREV.get(g["rule"], g["rule"]) + (f"[{g['decay']}]" if g["decay"] else "")
        parts = [rule, ABBREV.get(g["feature_map"], g["feature_map"])]
        if g["short_conv"]:
            parts.append(f"conv{g['short_conv']}")
        if g["out_norm"] != "none" or g["out_gate"] != "none":
            parts.append("+".join(p for p in (g["out_norm"], g["out_gate"]) if p != "none"))
        if g["heads"] != "same":
            parts.append(f"{g['heads']}-heads")
        parts.append(f"C{g['chunk']}")
        return " ".join(parts)

    def descriptors(self, genome: dict[str, Any]) -> dict[str, Any]:
        """The state-update rule × the feature map: 4 × 5 families of mixer."""
        g = self.canonical(genome)
        return {"rule": g["rule"], "feature_map": g["feature_map"]}

    def render(self, genome: dict[str, Any]) -> str:
        g = self.canonical(genome)
        return self.env.get_template("mixer.py.j2").render(
            **g, title=f"Token mixer: {self.describe(g)}.", heads_expr=HEADS_EXPR[g["heads"]],
            delta=g["rule"] in DELTA, decayed=g["rule"] in DECAYED)
