"""Service settings: ATTNZOO_* environment, validation at start-up, the cached dependency."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.main import create_app
from app.settings import Settings, get_settings
from model_zoo import MetafileError, UnknownVariantError
from model_zoo.registry import BUNDLED_METAFILE


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("ATTNZOO_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults():
    settings = Settings()
    assert (settings.host, settings.port, settings.device) == ("127.0.0.1", 8000, "auto")
    assert settings.variants is None  # every registry entry
    assert settings.max_body_bytes == 20 * 1024 * 1024
    assert settings.max_pixels == 40_000_000
    assert settings.metafile is None and settings.weights_dir is None
    assert settings.results_dir == Path("results")
    assert settings.docs is True
    assert settings.keep_freed_memory is True


def test_environment_with_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNZOO_HOST", "0.0.0.0")
    monkeypatch.setenv("ATTNZOO_PORT", "9001")
    monkeypatch.setenv("ATTNZOO_VARIANTS", "attn1111, attn0010-dcn")
    monkeypatch.setenv("ATTNZOO_DEVICE", "cuda:1")
    monkeypatch.setenv("ATTNZOO_MAX_BATCH", "8")
    monkeypatch.setenv("ATTNZOO_MAX_WAIT_MS", "2.5")
    monkeypatch.setenv("ATTNZOO_QUEUE_SIZE", "3")
    monkeypatch.setenv("ATTNZOO_REQUEST_TIMEOUT_S", "1.5")
    monkeypatch.setenv("ATTNZOO_MAX_BODY_BYTES", "1000")
    monkeypatch.setenv("ATTNZOO_MAX_PIXELS", "2000")
    monkeypatch.setenv("ATTNZOO_METAFILE", str(tmp_path / "m.yml"))
    monkeypatch.setenv("ATTNZOO_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("ATTNZOO_RESULTS_DIR", str(tmp_path / "r"))
    monkeypatch.setenv("ATTNZOO_KEEP_FREED_MEMORY", "false")
    s = Settings()
    assert (s.host, s.port, s.device) == ("0.0.0.0", 9001, "cuda:1")
    assert s.variants == ["attn1111", "attn0010-dcn"]
    assert (s.max_batch, s.max_wait_ms, s.queue_size, s.request_timeout_s) == (8, 2.5, 3, 1.5)
    assert (s.max_body_bytes, s.max_pixels) == (1000, 2000)
    assert (s.metafile, s.weights_dir, s.results_dir) == (tmp_path / "m.yml", tmp_path / "w", tmp_path / "r")
    assert s.keep_freed_memory is False


@pytest.mark.parametrize("value", ["", " , "])
def test_empty_variants_means_all(monkeypatch, value):
    monkeypatch.setenv("ATTNZOO_VARIANTS", value)
    assert Settings().variants is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ATTNZOO_PORT", "0"),
        ("ATTNZOO_PORT", "http"),
        ("ATTNZOO_DEVICE", "tpu"),
        ("ATTNZOO_MAX_BATCH", "0"),
        ("ATTNZOO_QUEUE_SIZE", "-1"),
        ("ATTNZOO_MAX_WAIT_MS", "-5"),
        ("ATTNZOO_REQUEST_TIMEOUT_S", "0"),
        ("ATTNZOO_MAX_BODY_BYTES", "lots"),
    ],
)
def test_invalid_values_are_refused_naming_the_field(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert name.removeprefix("ATTNZOO_").lower() in str(refused.value)


def test_get_settings_is_cached_and_reads_the_environment_once(monkeypatch):
    monkeypatch.setenv("ATTNZOO_PORT", "9100")
    first = get_settings()
    monkeypatch.setenv("ATTNZOO_PORT", "9200")
    assert get_settings() is first and first.port == 9100
    get_settings.cache_clear()
    assert get_settings().port == 9200


def test_create_app_uses_the_environment_when_given_no_settings(monkeypatch):
    monkeypatch.setenv("ATTNZOO_METAFILE", str(BUNDLED_METAFILE))
    monkeypatch.setenv("ATTNZOO_VARIANTS", "attn0010")
    monkeypatch.setenv("ATTNZOO_DOCS", "false")
    app = create_app()
    assert app.state.settings.variants == ["attn0010"]
    assert app.state.registry.source == BUNDLED_METAFILE
    assert app.docs_url is None and app.openapi_url is None
    # routes read app.state.settings; any dependency override would make FastAPI re-analyse every
    # dependency on every request (issue 12: 3.5 ms of server CPU per refused request)
    assert app.dependency_overrides == {}


def test_create_app_refuses_unknown_variants():
    with pytest.raises(UnknownVariantError, match="valid variants: attn1111, attn0010, attn1111-dcn, attn0010-dcn"):
        create_app(Settings(variants=["attn0010", "attn9999"]))


def test_create_app_refuses_a_broken_metafile(tmp_path):
    broken = tmp_path / "metafile.yml"
    broken.write_text("Models: [", encoding="utf-8")
    with pytest.raises(MetafileError, match="not valid YAML"):
        create_app(Settings(metafile=broken))
