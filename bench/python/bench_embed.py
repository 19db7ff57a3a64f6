"""Side-by-side benchmark of embedding backends for the bundled all-MiniLM-L6-v2 model.

What is measured, in one run, on the same real prompts (short CLINC/HWU64 queries mixed with
long instruction prompts, read at run time from ../shared/data, never copied here):

1. torch: `SentenceTransformer(<shipped folder>).encode(...)`, as `SentenceTransformerEmbedder`
   runs it today. Its normalized embeddings are the reference.
2. onnx fp32: the shipped model's transformer exported locally with `torch.onnx.export` to
   `~/.cache/spanwatch/onnx/<weights digest>/model.onnx`, run by onnxruntime.
3. onnx int8: that file quantized dynamically by `onnxruntime.quantization.quantize_dynamic`
   with the settings of optimum's `AutoQuantizationConfig.avx512_vnni(is_static=False)` (or
   `avx2`/`arm64`, whichever matches this CPU): int8 symmetric per-channel weights, uint8
   activations quantized at run time.

The ONNX rows use the sentence-transformers model's own tokenizer and max_seq_length, mean
pooling over the attention mask and L2 normalization, like the torch pipeline, and the same
length-sorted batches of 64, so only the transformer forward pass differs. Nothing is fetched
from a hub (HF_HUB_OFFLINE=1). sentence-transformers' own `backend="onnx"` needs optimum-onnx,
which pins transformers < 4.58; it cannot be installed next to transformers 5, hence the
direct export.

Each row: prompts/s (one warm-up, best of 3 timed passes over all prompts), the ratio to
torch, and the mean and min cosine between its embeddings and torch's, prompt by prompt.
The recommended default is the fastest backend whose mean cosine is 0.99 or more.

Run from the repo root (needs `onnx` next to onnxruntime):

    python bench/python/bench_embed.py            # 2,000 prompts, about two minutes
    python bench/python/bench_embed.py --quick    # 300 prompts
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import numpy.typing as npt

from spanwatch.embed import _bundled_model_path, _weights_digest, default_cache_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sketch import (
    MIX,
    cpu_ticks,
    load_line,
    load_prompts,
    own_cpu,
    status,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BATCH = 64
REPS = 3
SLOW = 60.0  # seconds; a backend slower than this per pass gets one timed pass, not 3
MIN_COSINE = 0.99
OTHERS = "others' cpus"

Matrix = npt.NDArray[np.float32]
Encode = Callable[[Sequence[str]], Matrix]

csv.field_size_limit(sys.maxsize)


# ---------------------------------------------------------------- machine


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def quant_target() -> str:
    """The optimum dynamic-quantization preset that matches this CPU."""
    if platform.machine().lower() in {"arm64", "aarch64"}:
        return "arm64"
    flags = cpu_flags()
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


def machine_line() -> str:
    import onnxruntime
    import sentence_transformers
    import torch

    return (
        f"machine: {os.cpu_count()} cpus, {cpu_model()}, python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"onnxruntime {onnxruntime.__version__}, "
        f"sentence-transformers {sentence_transformers.__version__}, {platform.system()}"
    )


# ---------------------------------------------------------------- data


# ---------------------------------------------------------------- models


def load_torch(path: Path) -> Any:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def torch_encoder(model: Any) -> Encode:
    def encode(texts: Sequence[str]) -> Matrix:
        out = model.encode(
            list(texts),
            batch_size=BATCH,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)

    return encode


class _LastHidden:
    """Wraps the Hugging Face model so the export sees three positional inputs."""

    @staticmethod
    def module(hf: Any) -> Any:
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.hf = hf

            def forward(self, ids: Any, mask: Any, types: Any) -> Any:
                out = self.hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
                return out.last_hidden_state

        return Wrapper().eval()


INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def export_onnx(model: Any, out: Path) -> None:
    """Exports the transformer of a loaded sentence-transformers model to `out`."""
    import torch

    dummy = model[0].tokenizer(
        ["a short one", "a somewhat longer example sentence with padding in the batch"],
        padding=True,
        truncation=True,
        max_length=model.max_seq_length,
        return_tensors="pt",
    )
    axes = {name: {0: "batch", 1: "seq"} for name in [*INPUTS, "last_hidden_state"]}
    tmp = out.with_suffix(".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and legacy-exporter notices
        torch.onnx.export(
            _LastHidden.module(model[0].auto_model),
            tuple(dummy[name] for name in INPUTS),
            str(tmp),
            input_names=INPUTS,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    tmp.replace(out)


def quantize_onnx(src: Path, out: Path, target: str) -> None:
    """Dynamic int8 quantization with the settings of optimum's preset for `target`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = out.with_suffix(".tmp")
    quantize_dynamic(
        str(src),
        str(tmp),
        per_channel=target != "avx2",
        reduce_range=target == "avx2",
        weight_type=QuantType.QInt8,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )
    tmp.replace(out)


@dataclass
class Export:
    fp32: Path
    int8: Path
    notes: list[str]


def ensure_exports(model: Any, model_path: Path, target: str) -> Export:
    """Exports (once, cached by weights digest) the fp32 and int8 ONNX files."""
    folder = default_cache_dir() / "onnx" / _weights_digest(model_path)
    folder.mkdir(parents=True, exist_ok=True)
    fp32, int8 = folder / "model.onnx", folder / f"model_qint8_{target}.onnx"
    steps: list[tuple[Path, Callable[[], None]]] = [
        (fp32, lambda: export_onnx(model, fp32)),
        (int8, lambda: quantize_onnx(fp32, int8, target)),
    ]
    notes = []
    for path, make in steps:
        if not path.exists():
            status(f"writing {path}")
            start = time.perf_counter()
            make()
            made = f"made in {time.perf_counter() - start:.1f} s"
        else:
            made = "cached"
        notes.append(f"{path.name}: {made}, {path.stat().st_size / 2**20:.1f} MiB")
    notes.append(f"onnx folder: {folder}")
    return Export(fp32, int8, notes)


def ort_encoder(model: Any, onnx_path: Path) -> Encode:
    """Tokenize like sentence-transformers, run onnxruntime, mean-pool, normalize."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    tokenizer, max_len = model[0].tokenizer, model.max_seq_length

    def batch(texts: list[str]) -> Matrix:
        enc = tokenizer(
            texts, padding=True, truncation=True, max_length=max_len, return_tensors="np"
        )
        feed = {name: enc[name].astype(np.int64) for name in INPUTS}
        hidden = session.run(None, feed)[0]
        mask = feed["attention_mask"][:, :, None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        return normalize(pooled)

    def encode(texts: Sequence[str]) -> Matrix:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), dimension(model)), np.float32)
        for lo in range(0, len(texts), BATCH):
            idx = order[lo : lo + BATCH]
            out[idx] = batch([texts[i] for i in idx])
        return out

    return encode


def dimension(model: Any) -> int:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


def normalize(x: npt.NDArray[Any]) -> Matrix:
    x = np.asarray(x, dtype=np.float32)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


# ---------------------------------------------------------------- timing


@dataclass
class Row:
    name: str
    seconds: float
    passes: int
    others: float
    emb: Matrix


def timed(encode: Encode, prompts: list[str]) -> tuple[float, Matrix]:
    gc.collect()
    start = time.perf_counter()
    emb = encode(prompts)
    return time.perf_counter() - start, emb


def measure(name: str, encode: Encode, prompts: list[str]) -> Row:
    """One warm-up on a slice, then best of REPS passes (one if a pass exceeds SLOW)."""
    status(f"{name}: warm-up")
    encode(prompts[: 2 * BATCH])
    idle0, total0 = cpu_ticks()
    own0, wall0 = own_cpu(), time.perf_counter()
    best, emb = timed(encode, prompts)
    passes = 1
    while passes < REPS and best < SLOW:
        status(f"{name}: pass {passes + 1}")
        best = min(best, timed(encode, prompts)[0])
        passes += 1
    idle1, total1 = cpu_ticks()
    busy = (total1 - total0 - (idle1 - idle0)) / os.sysconf("SC_CLK_TCK")
    others = max(busy - (own_cpu() - own0), 0.0) / (time.perf_counter() - wall0)
    return Row(name, best, passes, others, emb)


# ---------------------------------------------------------------- report


def agreement(emb: Matrix, ref: Matrix) -> tuple[float, float]:
    cos = np.einsum("ij,ij->i", normalize(emb), normalize(ref))
    return float(cos.mean()), float(cos.min())


def table(rows: list[Row], n: int) -> list[str]:
    ref = rows[0]
    lines = [
        "| backend | passes | seconds | prompts/s | vs torch | mean cosine | min cosine "
        f"| {OTHERS} |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        mean, low = agreement(r.emb, ref.emb)
        lines.append(
            f"| {r.name} | {r.passes} | {r.seconds:.2f} | {n / r.seconds:,.0f} | "
            f"{ref.seconds / r.seconds:.2f}x | {mean:.5f} | {low:.5f} | {r.others:.1f} |"
        )
    return lines


def recommend(rows: list[Row]) -> str:
    ok = [r for r in rows if agreement(r.emb, rows[0].emb)[0] >= MIN_COSINE]
    best = min(ok, key=lambda r: r.seconds)
    return (
        f"recommended default: {best.name} (fastest with mean cosine agreement >= "
        f"{MIN_COSINE} with torch)"
    )


def prompt_notes(prompts: list[str], model: Any) -> list[str]:
    chars = [len(p) for p in prompts]
    toks = [len(ids) for ids in model[0].tokenizer(prompts, truncation=False)["input_ids"]]
    cut = sum(t > model.max_seq_length for t in toks)
    return [
        f"prompts: {len(prompts):,}; chars per prompt median {int(np.median(chars))}, "
        f"mean {np.mean(chars):.0f}, max {max(chars):,}; tokens median {int(np.median(toks))}, "
        f"mean {np.mean(toks):.0f}; {cut} prompts cut at max_seq_length {model.max_seq_length}",
        "mix: " + ", ".join(f"{share:.0%} {name}" for name, _load, share in MIX),
        f"batch size {BATCH}, one warm-up, best of {REPS} passes over all prompts "
        f"(one pass if a pass takes over {SLOW:.0f} s)",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="300 prompts instead of 2,000")
    args = parser.parse_args(argv)
    n = 300 if args.quick else 2_000
    status(f"loading {n} prompts from {DATA}")
    prompts = load_prompts(n)
    model_path = _bundled_model_path()
    model = load_torch(model_path)
    target = quant_target()
    export = ensure_exports(model, model_path, target)
    print(machine_line())
    print(load_line())
    print(f"model: {model_path} (dim {dimension(model)})")
    for note in [*prompt_notes(prompts, model), *export.notes]:
        print(note)
    rows = [
        measure("torch (sentence-transformers)", torch_encoder(model), prompts),
        measure("onnx fp32 (onnxruntime)", ort_encoder(model, export.fp32), prompts),
        measure(f"onnx int8 dynamic, {target}", ort_encoder(model, export.int8), prompts),
    ]
    print()
    print("\n".join(table(rows, len(prompts))))
    print()
    print(recommend(rows))


if __name__ == "__main__":
    main()
