"""Benchmark: resnet18 training throughput at 224 px, AMP + channels_last, on CUDA.

Run from the repository root: `.venv/bin/python bench/gpu_train.py [--batch-size 256] [--compile]`.
Measures the project's own training step (`lus_core.cnn.backbones.build_model`, `prepare_batch` with the
batched on-device augmentation, AdamW, autocast bf16) on uint8 batches already on the GPU, so the
figure is the model + augmentation cost (the HDF5 loader is measured by bench/loader.py).
Goal: >= 5000 images/s on one H100. Without CUDA it prints "skipped" with a small CPU figure for
reference. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lus_core.cnn.augment import Augment  # noqa: E402
from lus_core.cnn.backbones import build_model  # noqa: E402
from lus_core.cnn.frame_dataset import prepare_batch  # noqa: E402
from lus_core.runs.bench_records import record  # noqa: E402

GOAL = 5000.0
AUGMENT = {
    "p_affine": 0.5, "rotation": 10, "translate": 0.1, "scale": [0.9, 1.1], "shear": 5,
    "p_multiply": 0.5, "multiply": [0.8, 1.2], "p_blur": 0.3, "blur_sigma": [0.1, 1.5], "p_hflip": 0.5,
}


def measure(device, batch_size, size, steps, warmup, augment, compile_model, amp, channels_last) -> float:
    torch.manual_seed(0)
    model = build_model("resnet18", 4, "none").to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    fwd = torch.compile(model) if compile_model else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    crit = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    aug = Augment(AUGMENT) if augment else None
    x8 = torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8, device=device)
    y = torch.randint(0, 4, (batch_size,), device=device)
    dtype = torch.bfloat16 if amp else None

    def step():
        x = prepare_batch(x8, device, aug, gen, channels_last=channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = fwd(x)
        loss = crit(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch_size * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--compile", action="store_true", help="also measure with torch.compile")
    args = ap.parse_args()

    if not torch.cuda.is_available():
        torch.set_num_threads(2)
        cpu = measure(torch.device("cpu"), 8, args.image_size, 2, 1, True, False, False, False)
        record({"bench": "gpu_train", "skipped": "no CUDA", "cpu_img_per_s": round(cpu, 1),
                          "cpu_batch_size": 8, "image_size": args.image_size, "goal_img_per_s": GOAL, "met": None})
        return

    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dev = torch.device("cuda")
    results = {}
    variants = {
        "amp_channels_last_aug": (True, False, True, True),
        "amp_channels_last_noaug": (False, False, True, True),
        "fp32_noaug": (False, False, False, False),
    }
    if args.compile:
        variants["amp_channels_last_aug_compile"] = (True, True, True, True)
    for name, (aug, comp, amp, cl) in variants.items():
        rate = measure(dev, args.batch_size, args.image_size, args.steps, args.warmup, aug, comp, amp, cl)
        results[name] = round(rate, 1)
        print(f"{name}: {rate:.0f} img/s", file=sys.stderr)
    best = max(v for k, v in results.items() if k.startswith("amp_channels_last_aug"))
    record({
        "bench": "gpu_train", "img_per_s": best, "goal_img_per_s": GOAL, "met": best >= GOAL,
        "variants": results, "batch_size": args.batch_size, "image_size": args.image_size,
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
    })


if __name__ == "__main__":
    main()
