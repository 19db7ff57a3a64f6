"""The ONNX backends of the embedder: a local export of the real model, its
int8 quantization, and their agreement with the torch pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spanwatch.config import load_settings
from spanwatch.embed import SentenceTransformerEmbedder, _bundled_model_path
from spanwatch.errors import ConfigError, EmbeddingError

TEXTS = [
    "How do I bake sourdough bread at home?",
    "Explain the Rust borrow checker to a Python programmer.",
    "What is the capital of Australia?",
    "Write a haiku about autumn leaves.",
    "Translate 'good morning' into Spanish and French.",
    "Set an alarm for 7 am tomorrow.",
    "Give me three ideas for a birthday party for a ten year old.",
    "Why is the sky blue?",
    "List the steps to reset a forgotten email password.",
    "Compare TCP and UDP in a short table.",
    "ok",
    "Summarize the causes of the First World War in three bullet points. " * 30,  # truncated
]


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return SentenceTransformerEmbedder(backend="torch").embed(TEXTS)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.mark.model
@pytest.mark.parametrize(
    ("backend", "mean", "worst"), [("onnx", 0.9999, 0.9999), ("onnx-int8", 0.99, 0.95)]
)
def test_onnx_backends_agree_with_torch(
    backend: str, mean: float, worst: float, torch_vectors: np.ndarray, onnx_dir: Path
) -> None:
    """int8 is furthest from torch on very short prompts ("ok": about 0.957)."""
    emb = SentenceTransformerEmbedder(backend=backend, onnx_dir=onnx_dir)
    out = emb.embed(TEXTS)
    assert out.shape == (len(TEXTS), 384)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    cos = np.einsum("ij,ij->i", out, torch_vectors)
    assert cos.mean() >= mean, cos
    assert cos.min() >= worst, cos
    # an embedding depends on its text only, not on the rest of the call
    np.testing.assert_array_equal(emb.embed(TEXTS[::-1]), out[::-1])
    np.testing.assert_array_equal(emb.embed([TEXTS[2]])[0], out[2])


@pytest.mark.model
def test_each_backend_has_its_own_model_id(onnx_dir: Path) -> None:
    ids = {
        b: SentenceTransformerEmbedder(backend=b, onnx_dir=onnx_dir).model_id
        for b in ["torch", "onnx", "onnx-int8"]
    }
    assert len(set(ids.values())) == 3
    assert ids["onnx"] == ids["torch"] + "+onnx"
    assert ids["onnx-int8"].startswith(ids["torch"] + "+int8-")


@pytest.mark.model
def test_the_export_is_made_once_and_leaves_no_temporary_files(onnx_dir: Path) -> None:
    SentenceTransformerEmbedder(backend="onnx-int8", onnx_dir=onnx_dir)
    files = sorted(onnx_dir.rglob("*"))
    names = [f.name for f in files if f.is_file()]
    assert "model.onnx" in names
    assert any(n.startswith("model_qint8_") for n in names)
    assert not [n for n in names if n.endswith(".tmp")]
    stamps = {f: f.stat().st_mtime_ns for f in files}
    SentenceTransformerEmbedder(backend="onnx-int8", onnx_dir=onnx_dir)
    assert {f: f.stat().st_mtime_ns for f in files} == stamps


@pytest.mark.model
def test_a_corrupt_export_is_refused_with_a_way_out(tmp_path: Path) -> None:
    SentenceTransformerEmbedder(backend="onnx", onnx_dir=tmp_path)
    (export,) = tmp_path.rglob("model.onnx")
    export.write_bytes(b"not an onnx file")
    with pytest.raises(EmbeddingError, match="delete it to export again"):
        SentenceTransformerEmbedder(backend="onnx", onnx_dir=tmp_path)


@pytest.mark.model
def test_a_model_that_does_not_mean_pool_needs_torch(tmp_path: Path) -> None:
    """A copy of the bundled model (weights linked, not copied) set to CLS pooling."""
    src = _bundled_model_path()
    model = tmp_path / "cls-model"
    for f in src.rglob("*"):
        if f.is_file():
            dest = model / f.relative_to(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(f)
    pooling = model / "1_Pooling" / "config.json"
    conf = json.loads(pooling.read_text())
    conf.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.unlink()
    pooling.write_text(json.dumps(conf))
    with pytest.raises(EmbeddingError, match=r"embed\.backend = 'torch'"):
        SentenceTransformerEmbedder(model, backend="onnx-int8", onnx_dir=tmp_path / "onnx")
    assert SentenceTransformerEmbedder(model, backend="torch").embed(["hello"]).shape == (1, 384)


def test_an_unknown_backend_is_refused_before_loading_anything() -> None:
    with pytest.raises(EmbeddingError, match="unknown embedding backend 'tensorrt'"):
        SentenceTransformerEmbedder("/nonexistent", backend="tensorrt")


def test_the_config_names_the_allowed_backends() -> None:
    assert load_settings().embed.backend == "onnx"
    with pytest.raises(ConfigError, match=r"embed\.backend"):
        load_settings(embed={"backend": "tensorrt"})
