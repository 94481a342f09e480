"""The chat's tool for an ensemble: which model did best, per experiment and per dollar.
Apart from chat_tools.py (a full file); it is registered there."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from archlab.analysis.chat_tools import Lab


class ModelsArg(BaseModel):
    campaign: str | None = Field(None, description="campaign id; may be omitted when there is only one")


def model_yield(lab: Lab, a: ModelsArg) -> dict[str, Any]:
    """Which model did best: for a campaign run with an ensemble ([llm] models), each model's experiments,
    valid results, improvements over the best known when it was picked, best score, USD, call seconds, cost
    and improvements per USD (the bandit's yield)."""
    out = []
    for view in lab.scope(a.campaign):
        record = view.model_yields()
        if record is None:
            llm = view.config.get("llm") or {}
            out.append({"campaign": view.id, "models": None,
                        "note": f"one model ({llm.get('model') or 'none: offline strategy'}), no ensemble"})
            continue
        ranked = sorted(record, key=lambda y: (-(y.yield_ or 0.0), -y.improvements, y.model))
        out.append({"campaign": view.id, "metric": view.metric, "higher_is_better": view.higher,
                    "models": [y.to_dict() for y in record],
                    "best_yield": ranked[0].model if ranked[0].improvements else None,
                    "definitions": "improvement: beat the campaign's best score known when the model was "
                                   "picked; cost: USD, or call seconds at [llm] local_usd_per_hour for a model "
                                   "litellm cannot price"})
    return {"campaigns": out}
