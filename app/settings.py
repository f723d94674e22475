"""Service settings: one pydantic-settings class read from ``ATTNZOO_*`` environment variables.

There is no module-level instance: :func:`get_settings` builds (and caches) one on first use;
``create_app(settings)`` takes another, which its routes read from ``app.state.settings``
(``app.server.dependencies.SettingsDep``).
``ATTNZOO_METAFILE`` and ``ATTNZOO_WEIGHTS_DIR`` are the same variables the registry reads.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "ATTNZOO_"
LogLevel = Literal["critical", "error", "warning", "info", "debug"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
CORS_ORIGIN_PATTERN = re.compile(r"^(\*|https?://[^/\s]+)$")  # what a browser sends as Origin


class Settings(BaseSettings):
    """Everything the service can be configured with (env var = ``ATTNZOO_`` + upper-case name)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="interface to bind (0.0.0.0 in the container)")
    port: int = Field(8000, description="TCP port, 1..65535")
    grpc_port: int = Field(
        8001, description="TCP port of the Open Inference Protocol over gRPC (Triton's 8001); 0 turns gRPC off"
    )
    log_level: LogLevel = Field("info", description="uvicorn's log level")
    variants: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="variants to load (short or full names, comma-separated in the env var); default: every registry entry",
    )
    device: str = Field("auto", description="auto: CUDA when present, else CPU; cpu, cuda or cuda:N")
    max_batch: int = Field(4, ge=1, le=256, description="most requests one model call takes")
    max_wait_ms: float = Field(10.0, ge=0, le=10_000, description="how long a request waits for companions")
    queue_size: int = Field(64, ge=1, description="requests waiting for the model per variant; beyond → 429")
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="deadline of a request: its head and its body must arrive within it (else 408), its answer "
        "too (else 504; refused at once with 429 when the queue ahead predicts it missed); also bounds a graceful shutdown",
    )
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1, description="request body limit in bytes; beyond → 413")
    max_pixels: int = Field(40_000_000, ge=1, description="image width × height limit, checked before decoding")
    metafile: Path | None = Field(None, description="registry metafile (default: the bundled one)")
    weights_dir: Path | None = Field(None, description="checkpoint directory (default: weights/ at the repo root)")
    results_dir: Path = Field(Path("results"), description="where the eval job writes table.json")
    verify_hash: bool = Field(True, description="refuse weights whose sha256 does not match their file name")
    demo: bool = Field(
        False,
        description="where a variant's official weights are missing, serve a synthetic stand-in (made once, cached "
        "in <weights dir>/demo/): everything runs, the detections mean nothing; /models and answers say weights_source",
    )
    cpu_kernels: Literal["fast", "portable"] = Field(
        "fast",
        description="on CPU: fast (oneDNN and sparse rewrites) or portable (exactly the kernels CUDA runs); "
        "both match mmdet (parity tests)",
    )
    warmup: bool = Field(True, description="run one forward per variant before reporting ready")
    docs: bool = Field(True, description="serve the OpenAPI docs at /docs and /redoc")
    strict_readiness: bool = Field(
        True,
        description="/readyz is 200 when every requested variant is loaded; false: when at least one is "
        "(Triton's --strict-readiness)",
    )
    cors_origins: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="browser origins allowed to call the API from other pages (comma-separated in the env var, "
        "e.g. https://app.example.com,http://localhost:3000; * for any); default: none (CORS off)",
    )
    default_budget_ms: float = Field(
        1000.0, gt=0, description="variant=auto: the latency budget when a request names none (budget_ms)"
    )
    latency_window: int = Field(
        100, ge=1, description="variant=auto: how many recent requests per variant its p95 latency is taken over"
    )
    admin_token: SecretStr | None = Field(
        None,
        description="bearer token of POST /models/{variant}/load and /unload; unset: those answer 403",
    )
    keep_freed_memory: bool = Field(
        True,
        description="glibc malloc keeps freed memory for the next forward: about 25% faster CPU inference; "
        "the process keeps its peak footprint (model_zoo.runtime)",
    )
    malloc_arenas: int = Field(
        1,
        ge=0,
        le=1024,
        description="with keep_freed_memory: glibc malloc arenas for the whole process; 1 keeps RSS flat "
        "(freed memory is reused by every thread); 0: glibc's default, 8 per core (RSS creeps up, BENCHMARKS.md soak)",
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="request line + headers limit in bytes; beyond → 431, connection closed"
    )
    min_body_rate: float = Field(
        240.0,
        ge=0,
        description="bytes per second a request body must average once min_body_rate_grace_s have passed "
        "(time the service is not reading does not count); slower → 408, connection closed; 0: no minimum",
    )
    min_body_rate_grace_s: float = Field(
        5.0, gt=0, description="how long a request body may arrive slower than min_body_rate at first"
    )
    admission_spread_allowance: float = Field(
        2.0,
        ge=0,
        description="admission counts each queued batch as its predicted time plus this many typical deviations",
    )
    admission_min_spread: float = Field(
        0.25,
        ge=0,
        description="the relative deviation of a batch's time admission assumes at least (before batches show their own)",
    )
    release_memory_idle_s: float = Field(
        2.0,
        ge=0,
        description="after this many seconds with no request in flight, give the memory malloc keeps back to the OS "
        "(once per busy spell; 0: never)",
    )

    @field_validator("admin_token")
    @classmethod
    def _no_empty_token(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is not None and not value.get_secret_value() else value

    @field_validator("port")
    @classmethod
    def _check_port(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError(f"invalid port {value}: expected 1..65535")
        return value

    @field_validator("grpc_port")
    @classmethod
    def _check_grpc_port(cls, value: int, info: ValidationInfo) -> int:
        if not 0 <= value <= 65535:
            raise ValueError(f"invalid gRPC port {value}: expected 1..65535, or 0 for no gRPC")
        if value and value == info.data.get("port"):
            raise ValueError(f"gRPC port {value} is the HTTP port too; give each its own")
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError(f"invalid device {value!r}: expected auto, cpu, cuda or cuda:N")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_cors_origins(cls, value: list[str] | None) -> list[str] | None:
        for origin in value or ():
            if not CORS_ORIGIN_PATTERN.match(origin):
                raise ValueError(
                    f"invalid CORS origin {origin!r}: expected scheme://host[:port] with no path "
                    "(e.g. https://app.example.com) or *"
                )
        return value

    @field_validator("variants", "cors_origins", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        """``"a,b c"`` (env var) → ``["a", "b", "c"]``; an empty value means the default."""
        if isinstance(value, str):
            value = [part for part in value.replace(",", " ").split() if part]
        if isinstance(value, (list, tuple)) and not value:
            return None
        return value


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()

