"""The local engine's models: pinned pieces are joined once into the GGUF file, checked against its sha256, and
a join that does not match is refused, never served. (tests/realmodel/ serves the smallest model for real.)"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gateway.local_model import DEFAULT_MODEL, DEMO_MODEL, MODELS, LocalModel, LocalModelError, Part, Progress, _joined


def pieces(tmp_path: Path, *contents: bytes) -> list[Path]:
    paths = []
    for i, content in enumerate(contents, 1):
        path = tmp_path / f"part{i:02d}.bin"
        path.write_bytes(content)
        paths.append(path)
    return paths


def model(sha256: str) -> LocalModel:
    part = Part("p", "1", "0" * 64, "p", "data/part01.bin")
    return LocalModel("joined-model", (part, part), sha256, 1, "Apache-2.0", "a test", "a test")


def test_pieces_are_joined_in_order_once_and_then_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIC_GATEWAY_MODELS", str(tmp_path / "models"))
    parts = pieces(tmp_path, b"GGUF-first-", b"second")
    pinned = model(hashlib.sha256(b"GGUF-first-second").hexdigest())
    joined = _joined(pinned, parts, Progress())
    assert joined.read_bytes() == b"GGUF-first-second"
    first_write = joined.stat().st_mtime_ns
    assert _joined(pinned, parts, Progress()) == joined and joined.stat().st_mtime_ns == first_write


def test_a_join_that_does_not_match_its_pin_is_refused_and_left_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIC_GATEWAY_MODELS", str(tmp_path / "models"))
    parts = pieces(tmp_path, b"GGUF-first-", b"tampered")
    with pytest.raises(LocalModelError, match="do not match its pinned sha256"):
        _joined(model(hashlib.sha256(b"GGUF-first-second").hexdigest()), parts, Progress())
    assert list((tmp_path / "models").iterdir()) == []


def test_every_model_is_pinned_wheel_by_wheel_and_the_uses_are_named() -> None:
    for m in MODELS.values():
        assert len(m.file_sha256) == 64 and m.use and m.licence
        assert all(len(p.wheel_sha256) == 64 and "--hash=sha256:" in p.requirement for p in m.parts)
    assert len(MODELS[DEFAULT_MODEL].parts) == 1  # the tests' model: one small wheel
    demo = MODELS[DEMO_MODEL]
    assert [p.file for p in demo.parts] == [f"data/part{i:02d}.bin" for i in range(1, len(demo.parts) + 1)]
