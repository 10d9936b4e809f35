"""Settings shared by every service, read with pydantic-settings.

Sources, highest priority first: keyword arguments, environment variables
(`HEADRACE_*`), then `headrace.toml` (path in `HEADRACE_CONFIG`, default
`./headrace.toml`): top-level keys apply to every service, a `[<service>]`
table to that service only.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from headrace.services.runtime.tls import CertPaths


def config_file() -> Path:
    """The headrace.toml this process reads (it may not exist)."""
    return Path(os.environ.get("HEADRACE_CONFIG", "headrace.toml"))


class TomlSectionSource(PydanticBaseSettingsSource):
    """Reads top-level keys and the `[section]` table of headrace.toml."""

    def __init__(self, settings_cls: type[BaseSettings], section: str) -> None:
        super().__init__(settings_cls)
        self._values: dict[str, Any] = {}
        path = config_file()
        if path.is_file():
            data = tomllib.loads(path.read_text())
            self._values = {k: v for k, v in data.items() if not isinstance(v, dict)}
            table = data.get(section)
            if isinstance(table, dict):
                self._values.update(table)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._values.items() if k in self.settings_cls.model_fields}


class HeadraceSettings(BaseSettings):
    """Knobs every Headrace process has."""

    model_config = SettingsConfigDict(env_prefix="HEADRACE_", extra="ignore")
    section: ClassVar[str] = ""

    home: Path = Path(".headrace")
    """Where keys, models, audit logs and rendered config live."""
    tls: bool = False
    """TLS on Envoy's public listener and mTLS on every internal hop (Envoy ↔ services),
    with the certificates `headrace certs` writes to certs_dir (docs/security.md)."""
    certs_dir: Path | None = None
    """Where the CA and certificates live; default <home>/certs."""

    @property
    def cert_paths(self) -> CertPaths:
        return CertPaths(self.certs_dir or self.home / "certs")

    log_level: str = "INFO"
    log_json: bool = True

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlSectionSource(settings_cls, cls.section))


class ServiceSettings(HeadraceSettings):
    """Knobs of one gRPC service process. The launcher sets port and metrics_port."""

    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 9460
    internal_target: str = "127.0.0.1:8081"
    """Envoy's internal listener, through which services call each other."""
    grace_seconds: float = 10.0
    """On SIGTERM, in-flight streams get this long to finish before they are cancelled."""
    max_concurrent_rpcs: int | None = None
    tracing_enabled: bool = False
    """OpenTelemetry spans for every RPC, exported over OTLP/HTTP (docs/tracing.md)."""
    tracing_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    """OTLP/HTTP traces endpoint (an OpenTelemetry Collector, Jaeger, Tempo, ...)."""
    tracing_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of new traces kept; a sampled caller's trace is always continued."""
    uvloop: bool = True
    """Run the service on uvloop (libuv) instead of asyncio's default loop: less CPU per
    message, which on a small machine is CPU the model's decode threads keep."""
