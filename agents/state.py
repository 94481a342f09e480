"""The typed state of one experiment's graph run, and the schemas the LLM
agents answer in. Everything an agent saw is kept here, so resume and replay
rebuild the same prompts."""
from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

from pydantic import BaseModel, Field

Outcome = Literal["done", "failed", "duplicate"]


class Proposal(BaseModel):
    """What the researcher answers."""

    name: str = Field(min_length=1, max_length=120)
    motivation: str = Field(min_length=1)
    design: str = Field(min_length=1, description="what to build, concretely enough for the coder")
    parent_id: int | None = Field(None, description="id of the experiment this builds on, if any")


class CodeAnswer(BaseModel):
    """What the coder answers: one complete module."""

    code: str = Field(min_length=1, description="the complete Python module")
    notes: str = ""


class Rejection(TypedDict):
    layer: str        # text_hash | ast_hash | fingerprint | embedding | judge
    neighbour: int    # the experiment it duplicates
    reason: str
    campaign: NotRequired[str | None]  # embedding/judge: the neighbour's campaign (the memory spans the workspace)
    similarity: NotRequired[float]


class ExperimentState(TypedDict, total=False):
    experiment: int
    origin: str                      # campaign | baseline | eval
    proposal: dict[str, Any] | None  # Proposal fields + genome (offline) + parent_id
    code: str | None
    hashes: dict[str, str] | None    # text, ast
    view: list[Any]                  # ids the researcher was shown: ledger ids (offline), memory ids "<campaign>:<id>" (LLM)
    rejections: list[Rejection]      # duplicates the gate refused, newest last
    error: str | None                # last code error, for the repair
    proposals: int                   # research calls made
    code_calls: int                  # coder calls made (first + repairs)
    repairs: int
    check: dict[str, Any] | None
    metrics: dict[str, Any] | None
    outcome: Outcome | None
    reason: str | None
    duplicate_of: int | None
    analysis: str | None
