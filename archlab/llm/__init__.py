"""The LLM client: one seam (`LLMClient.complete`) over litellm for every agent and
the chat; structured output by the model's capability; code as code; transport
that waits out outages and pauses the campaign when they last; prompts fitted to
the model's window; every call a line of the campaign's llm.jsonl.

    models.py     model strings, what litellm knows of a model, the structured mode
    transport.py  what a provider's error means, retries with backoff and Retry-After
    answers.py    reading answers: reasoning stripped, JSON objects, code
    edits.py      SEARCH/REPLACE edits against the parent's code
    window.py     token counting and trimming a prompt to the window
    record.py     llm.jsonl lines, secrets scrubbed
    scripted.py   the scripted stand-in for a hosted model (tests, offline demos)
    client.py     LLMClient
"""
from archlab.llm.client import Completion, ContextOverflow, LLMClient, Usage
from archlab.llm.models import (
                                KNOWN_PROVIDERS,
                                MODEL_FORM,
                                SCRIPTED_LITELLM_MODEL,
                                import_litellm,
                                validate_model_string,
)
from archlab.llm.record import request_hash, scrub

__all__ = ["Completion", "ContextOverflow", "KNOWN_PROVIDERS", "LLMClient", "MODEL_FORM", "SCRIPTED_LITELLM_MODEL",
           "Usage", "import_litellm", "request_hash", "scrub", "validate_model_string"]
