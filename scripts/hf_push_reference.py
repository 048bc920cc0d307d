"""The reference `adapters` 1.3.0 library (its own environment, scripts/reference_venv.sh) publishes
to this hub with `push_adapter_to_hub` and loads the adapter back with `load_adapter(repo_id)`.

Run with the reference environment's Python against a running hub (web process and worker, or a
web process with in-process validation) whose HUB_BASE_MODELS names the tiny BERT "tiny-bert":

    HF_ENDPOINT=http://127.0.0.1:8000/hf HF_TOKEN=ahub_... \
        var/ref-venv/bin/python scripts/hf_push_reference.py lab/ref-push --task sentiment \
        --subtask demo-reviews

Exit status 0 and "identical outputs" when the loaded adapter gives the pushed model's logits.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

TINY_BERT = Path(__file__).resolve().parents[2] / "shared/interop/adapters-1.3.0/models/tiny-bert"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repo_id", help="org/name to push to (the token's organisation)")
    parser.add_argument("--task", required=True, help="catalogue task, written as tag task:<task>")
    parser.add_argument("--subtask", required=True, help="catalogue subtask (tag subtask:<x>)")
    parser.add_argument("--base", default=str(TINY_BERT), help="base model folder (tiny BERT)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random adapter weights")
    args = parser.parse_args()
    if not os.environ.get("HF_ENDPOINT") or not os.environ.get("HF_TOKEN"):
        parser.error("set HF_ENDPOINT (http://host/hf) and HF_TOKEN (an API token, write scope)")

    import adapters
    import huggingface_hub
    import torch
    from adapters import AutoAdapterModel

    torch.manual_seed(args.seed)
    model = AutoAdapterModel.from_pretrained(args.base)
    model.config._name_or_path = "tiny-bert"
    model.add_adapter("a", config="seq_bn")
    model.add_classification_head("a", num_labels=2)
    # Random, non-zero adapter and head weights: the loaded copy must reproduce them exactly.
    noisy = {
        key: value + 0.1 * torch.randn_like(value)
        for key, value in model.state_dict().items()
        if ".adapters." in key or key.startswith("heads.")
    }
    model.load_state_dict(noisy, strict=False)
    model.eval()
    model.set_active_adapters("a")
    ids = torch.tensor([[2, 45, 99, 300, 7, 12]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    print(f"adapters {adapters.__version__}, huggingface_hub {huggingface_hub.__version__}")
    url = model.push_adapter_to_hub(
        args.repo_id,
        "a",
        adapter_card_kwargs={"tags": [f"task:{args.task}", f"subtask:{args.subtask}"]},
    )
    print(f"pushed: {url}")

    fresh = AutoAdapterModel.from_pretrained(args.base)
    fresh.eval()
    name = fresh.load_adapter(args.repo_id, set_active=True)
    with torch.no_grad():
        got = fresh(input_ids=ids).logits
    if not torch.allclose(got, expected, atol=1e-6):
        print(f"DIFFERENT outputs: pushed {expected.tolist()}, loaded {got.tolist()}")
        return 1
    print(f"loaded {args.repo_id} as {name!r}: identical outputs {got.tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
