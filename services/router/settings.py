"""Router settings (`HEADRACE_*`, `[router]` in headrace.toml)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from headrace.services.router.catalog import ModelGroup
from headrace.services.router.experiments import Experiment
from headrace.services.router.tasks import DEFAULT_RULES, DEFAULT_TASKS, TaskPreset, TaskRule
from headrace.services.runtime.settings import ServiceSettings


class DefaultParams(BaseModel):
    """Sampling defaults for fields a request leaves unset (llama.cpp's own defaults)."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.0
    max_tokens: int = 256


class RouterSettings(ServiceSettings):
    """Orchestration knobs."""

    section: ClassVar[str] = "router"

    defaults: DefaultParams = DefaultParams()
    max_tokens_limit: int = Field(default=4096, ge=1)
    max_conversation_bytes: int = Field(default=32 * 1024, ge=1)
    """Largest conversation (all turns' text, UTF-8) the router accepts; the sanitizer's
    per-tier limits then apply too. A prompt's size is the sanitizer's to judge."""
    models_refresh_seconds: float = 30.0
    """How long the list of served models is cached."""
    audit_retention_days: int = Field(default=30, ge=1)
    """Audit and feedback files older than this are deleted."""
    experiments: dict[str, Experiment] = {}
    """A/B experiments by name (HEADRACE_EXPERIMENTS as JSON, or [router.experiments.NAME])."""
    feedback_window: int = Field(default=100_000, ge=1)
    """How many recent requests can still receive Feedback."""
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    """Durable queue for batch jobs; an in-process queue serves when it does not answer."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Where batch results are kept; in-process when Redis does not answer."""
    batch_queue: str = "headrace.batch"
    batch_prefetch: int = Field(default=2, ge=1)
    """Batch items one router works on at once (RabbitMQ prefetch)."""
    batch_max_items: int = Field(default=1000, ge=1)
    batch_ttl_seconds: int = 7 * 24 * 3600
    """How long batch results are kept."""
    audit_queue_size: int = 10_000
    """Audit lines waiting to be written; beyond that they are dropped and counted."""
    output_policy_stale_seconds: float = Field(default=5.0, gt=0.0)
    """The router filters output in process under the policy the sanitizer publishes
    (WatchOutputPolicy, a heartbeat every second); once it has heard nothing current
    for this long it refuses requests with UNAVAILABLE (fail closed) until the watch
    is back. Before the first policy, a request waits up to this long for it."""
    upstream_timeout_seconds: float = 10.0
    """Deadline for auth, sanitizer and cache calls."""
    cache_store_interval_ms: float = Field(default=50.0, ge=0.0)
    """How long the router gathers response text before sending it to the cache as one
    message (identical requests following this one receive it at that pace); 0 sends
    every piece as it comes."""
    usage_settle_delay_ms: float = Field(default=200.0, ge=0.0)
    """How long a finished request's token settlement waits to go with the next
    Authorize (one auth call fewer per request while requests keep coming) before it
    is sent alone; usage reports lag by at most this much. 0 sends each at once."""
    tasks: dict[str, TaskPreset] = DEFAULT_TASKS
    """Task presets by name (HEADRACE_TASKS as JSON, or [router.tasks.NAME] tables)."""
    task_rules: list[TaskRule] = DEFAULT_RULES
    """Ordered rules that detect a task when a request names none."""
    default_task: str = ""
    """Task applied when no rule matches ("" = none: router defaults, default model)."""
    fallback_models: list[str] = []
    """Models tried after a task's own, when those are unavailable or overloaded."""
    model_groups: dict[str, ModelGroup] = {}
    """Names that stand for several models tried in a strategy's order (local_first,
    free_first, ordered); a request or a task preset's `models` may name a group
    (HEADRACE_MODEL_GROUPS as JSON, or [router.model_groups.NAME] tables)."""
    hosted_tiers: list[str] = []
    """Tiers whose prompts may leave this machine for hosted models (opt-in; the
    sanitizer's redaction applies first). Others are never sent to one."""
    hosted_subjects: list[str] = []
    """Subjects that opt in to hosted models whatever their tier."""
    speculate: bool = True
    """Admission hidden behind prefill: for a credential admitted recently, start a
    local model's prefill while auth and the sanitizer check the request; nothing is
    decoded for the client before both said yes (services/router/speculation.py)."""
    check_beside_authorize: bool = True
    """For a credential admitted within `speculate_window_seconds` and not refused
    since, run sanitizer.CheckPrompt under the tier auth gave it last time at the same
    time as auth.Authorize, instead of after it; when auth answers with another tier
    the check is run again under that one. Auth's verdict is still awaited first."""
    speculate_window_seconds: float = Field(default=300.0, ge=0.0)
    """How recently a credential must have been admitted to speculate; a credential
    refused (auth, quota, sanitizer) within this long does not."""
