"""Model strings and what litellm knows about a model (window, structured output,
tool calling). litellm is imported lazily (about 2 s) so the CLI stays fast."""
from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any

from archlab.errors import ConfigError

# Common litellm providers, so validating a config never needs the 2 s import.
KNOWN_PROVIDERS = (
    "openai", "anthropic", "ollama", "ollama_chat", "hosted_vllm", "vllm", "azure", "azure_ai",
    "gemini", "vertex_ai", "bedrock", "mistral", "groq", "together_ai", "openrouter", "deepseek",
    "fireworks_ai", "deepinfra", "cohere", "cohere_chat", "huggingface", "xai", "perplexity",
    "cerebras", "sambanova", "nvidia_nim", "databricks", "watsonx", "lm_studio", "llamafile",
    "openai_like", "custom_openai", "litellm_proxy", "dashscope", "moonshot", "scripted",
)
MODEL_FORM = ("provider/model, e.g. openai/gpt-4.1, ollama/qwen2.5-coder, "
              "hosted_vllm/meta-llama/Llama-3.1-8B-Instruct, anthropic/claude-sonnet-4-5 "
              "(offline: scripted/path/to/script.json)")
SCRIPTED_LITELLM_MODEL = "openai/scripted"  # scripted answers still travel through litellm
# Servers that take a JSON schema and constrain decoding to it (vLLM, Ollama, llama.cpp, LM Studio).
LOCAL_PROVIDERS = ("ollama", "ollama_chat", "hosted_vllm", "vllm", "lm_studio", "llamafile", "openai_like")
DEFAULT_WINDOW = 8192          # a model litellm does not know, with no [llm] context_tokens
OLLAMA_DEFAULT_WINDOW = 4096   # Ollama's own default num_ctx: longer prompts are cut silently

_litellm = None
_import_lock = threading.Lock()


def import_litellm() -> Any:
    global _litellm
    with _import_lock:
        if _litellm is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the cost map
            import litellm

            litellm.suppress_debug_info = True  # no "Provider List: ..." banners on errors
            litellm.set_verbose = False
            for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
            _litellm = litellm
    return _litellm


def provider(model: str) -> str:
    return model.partition("/")[0]


def validate_model_string(model: str) -> None:
    """ConfigError unless `model` is provider/model with a provider litellm knows."""
    prov, sep, name = model.partition("/")
    if not sep or not prov or not name.strip("/"):
        raise ConfigError(f"model {model!r} is not of the form {MODEL_FORM}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.\-]*", prov):
        raise ConfigError(f"model {model!r}: provider {prov!r} must be a lowercase name "
                          f"without spaces; the form is {MODEL_FORM}")
    if prov != "scripted" and re.search(r"\s", name):  # a script path may hold spaces
        raise ConfigError(f"model {model!r}: the model name may not contain spaces; "
                          f"the form is {MODEL_FORM}")
    if prov in KNOWN_PROVIDERS:
        return
    known = sorted(str(getattr(p, "value", p)) for p in import_litellm().provider_list)
    if prov not in known:
        import difflib

        close = difflib.get_close_matches(prov, known + list(KNOWN_PROVIDERS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"model {model!r}: unknown provider {prov!r}.{hint} The form is "
                          f"{MODEL_FORM}; providers: https://docs.litellm.ai/docs/providers")


def _info(model: str) -> dict[str, Any]:
    if provider(model) == "scripted":
        return {}
    try:
        return dict(import_litellm().get_model_info(model) or {})
    except Exception:  # noqa: BLE001 - a model missing from litellm's map (local servers) is normal
        return {}


def structured_mode(model: str, api_base: str | None, wanted: str) -> str:
    """The structured-output mode `auto` resolves to: a JSON schema as `response_format`
    where litellm says the model takes one (OpenAI, Anthropic via its tool mapping,
    Gemini) and for OpenAI-compatible servers (api_base, vLLM, Ollama, llama.cpp);
    prompt-only JSON otherwise. A server that refuses the schema is downgraded at run time."""
    if wanted != "auto":
        return wanted
    prov = provider(model)
    if prov == "scripted":
        return "prompt"
    if api_base or prov in LOCAL_PROVIDERS:
        return "json_schema"
    try:
        return "json_schema" if import_litellm().supports_response_schema(model) else "prompt"
    except Exception:  # noqa: BLE001
        return "prompt"


def native_tools(model: str, wanted: str) -> bool:
    """Whether chat sends tools natively; otherwise a JSON-action protocol is used."""
    if wanted != "auto":
        return wanted == "native"
    if provider(model) == "scripted":
        return True
    try:
        return bool(import_litellm().supports_function_calling(model))
    except Exception:  # noqa: BLE001
        return False


def input_window(model: str, configured: int | None) -> int:
    """Tokens a prompt may take: [llm] context_tokens, else litellm's model info, else a
    cautious default (Ollama's own default window for ollama models)."""
    if configured:
        return configured
    info = _info(model)
    for key in ("max_input_tokens", "max_tokens"):
        if info.get(key):
            return int(info[key])
    return OLLAMA_DEFAULT_WINDOW if provider(model) in ("ollama", "ollama_chat") else DEFAULT_WINDOW


def supports_reasoning(model: str) -> bool:
    try:
        return bool(import_litellm().supports_reasoning(model))
    except Exception:  # noqa: BLE001
        return False
