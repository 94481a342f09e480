"""The typed state of one experiment's graph run, and the schemas the LLM
agents answer in. Everything an agent saw is kept here, so resume and replay
rebuild the same prompts."""
from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

from pydantic import BaseModel, Field

Outcome = Literal["done", "failed", "duplicate"]


TEXT_CHARS = 800  # motivation and design each: a paragraph, about 200 tokens


class Proposal(BaseModel):
    """What the researcher answers."""

    # No descriptions: the prompt says what each field holds, and a small model copies a description as the value.
    name: str = Field(min_length=1, max_length=120)
    # maxLength in the schema only: constrained decoding stops a rambling small model there (measured: the
    # 0.5B model ran past 1,024 tokens in 3 of 10 research answers); a longer answer in prompt mode is kept.
    motivation: str = Field(min_length=1, json_schema_extra={"maxLength": TEXT_CHARS})
    design: str = Field(min_length=1, json_schema_extra={"maxLength": TEXT_CHARS})
    parent_id: int | None = None


def _genome_required(schema: dict[str, Any]) -> None:
    """In the schema (what the model sees, what decoding is constrained to): a genome, never null."""
    genome = schema["properties"]["genome"]
    schema["properties"]["genome"] = next(b for b in genome.get("anyOf", [genome]) if b.get("type") != "null")
    schema["required"] = [*schema.get("required", []), "genome"]


def proposal_schema(task: Any) -> type[Proposal]:
    """The researcher's answer for `task`: a Proposal, plus the design as data (`genome`)
    where the task has a design schema. The schema the model sees and is decoded under
    requires it, so constrained decoding makes it exact; a prompt-mode answer without
    one is still read (the design in words only)."""
    if getattr(task, "design_schema", None) is None:
        return Proposal
    from pydantic import ConfigDict, create_model

    with_genome = create_model("Proposal", __base__=Proposal, __doc__=Proposal.__doc__,
                               genome=(task.design_schema | None, None))

    class TaskProposal(with_genome):  # type: ignore[valid-type,misc]
        model_config = ConfigDict(title="Proposal", json_schema_extra=_genome_required)

    return TaskProposal


def ideas_schema(task: Any, k: int) -> type[BaseModel]:
    """Several proposals in one answer ([search] proposals_per_step): up to k, at least one."""
    from pydantic import create_model

    item = proposal_schema(task)
    return create_model("Ideas", __doc__="What the researcher answers: several ideas, the most promising first.",
                        ideas=(list[item], Field(min_length=1, max_length=k)))  # type: ignore[valid-type]


class CodeAnswer(BaseModel):
    """What the coder answers: one complete module."""

    code: str = Field(min_length=1, description="the complete Python module")
    notes: str = ""


class Rejection(TypedDict):
    layer: str        # text_hash | ast_hash | fingerprint | behaviour | embedding | judge | ideas
    neighbour: int | None  # the experiment it duplicates
    reason: str
    campaign: NotRequired[str | None]  # embedding/judge: the neighbour's campaign (the memory spans the workspace)
    similarity: NotRequired[float]


class ExperimentState(TypedDict, total=False):
    experiment: int
    origin: str                      # campaign | baseline | eval
    arm: str | None                  # "control": the random-control arm's (uniform sampling), else the strategy's
    proposal: dict[str, Any] | None  # Proposal fields + genome (offline) + parent_id
    code: str | None
    hashes: dict[str, str] | None    # text, ast
    view: list[Any]                  # ids the researcher was shown: ledger ids (offline), "<campaign>:<id>" (LLM)
    rejections: list[Rejection]      # duplicates the gate refused, newest last
    rethink: bool                    # every idea of the last research answer would be refused: research again
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
