"""Training and sampling throughput of genlab's presets, against a reference loop measured in the same run.

    python benchmarks/throughput.py [--seconds 20] [--presets vae:seed,vae:mlp,...]
    python benchmarks/throughput.py --dataset folder:/tmp/emoji32 --presets vae:conv,gan:dcgan,ddpm:ddpm
    python benchmarks/throughput.py --dataset folder:PATH --image-size 64 --presets vae:conv,gan:dcgan,ddpm:ddpm

Prints, for each preset, training images/s and sampling images/s. For the
``mlp`` VAE it also runs pytorch/examples' canonical VAE loop (a per-item
Dataset returning float tensors -> DataLoader -> 784-400-20 model, BCE on
sigmoid outputs, Adam) at batch 128 and 512, and prints genlab/reference, for
that loop's data pipeline as written (torchvision's MNIST + ToTensor) and for a
leaner in-memory per-item Dataset; and
genlab's achieved training GFLOP/s against the fp32 matmul peak measured here
(a 2048x2048 torch matmul). Figures are printed, never asserted.

``--dataset`` is Fashion-MNIST by default; ``folder:PATH`` (with ``--image-size N`` to resize)
trains on a folder of images instead, each preset fitted to it as ``genlab train --dataset
folder:PATH`` fits it (:func:`genlab.api.run_config`: ``image_shape`` and, for class sub-folders,
``num_classes`` from the images). The pytorch/examples comparison is MNIST-specific (a 784-input
MLP on 28x28 grayscale), so it is skipped for a folder, with a line saying so. A preset that
cannot take the images prints its error on its own line and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

import genlab
from genlab.api import run_config
from genlab.config import RunConfig
from genlab.data import load_dataset
from genlab.device import resolve_precision
from genlab.folders import is_folder_dataset
from genlab.models import build_model, get_preset
from genlab.sample import generate
from genlab.training import train
from reference_vae import ExamplesVAE, PerItemDataset, TorchvisionMNIST, examples_loss

DEFAULT_PRESETS = "vae:seed,vae:mlp,vae:conv,gan:seed,gan:dcgan,ddpm:ddpm"
WARM_UP_STEPS = 20  # genlab's first log line comes after these; the rate is measured from there


# -- the reference: pytorch/examples vae/main.py (benchmarks/reference_vae.py) ---------------------
REFERENCE_DATASETS = {
    "torchvision": TorchvisionMNIST,  # pytorch/examples as written: datasets.MNIST + ToTensor
    "lean": PerItemDataset,  # a stricter reference: the same loop over an in-memory per-item Dataset
}


def reference_images_per_second(
    images: torch.Tensor, batch_size: int, seconds: float, dataset: str = "torchvision"
) -> float:
    torch.manual_seed(0)
    model = ExamplesVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(REFERENCE_DATASETS[dataset](images), batch_size=batch_size, shuffle=True)
    model.train()
    done, t0, warm = 0, None, WARM_UP_STEPS
    while True:
        for data, _ in loader:
            opt.zero_grad()
            recon, mu, logvar = model(data)
            loss = examples_loss(recon, data, mu, logvar)
            loss.backward()
            opt.step()
            if warm:
                warm -= 1
                if not warm:
                    t0 = time.perf_counter()
                continue
            done += data.shape[0]
            if time.perf_counter() - t0 > seconds:
                return done / (time.perf_counter() - t0)


# -- genlab -------------------------------------------------------------------------------------------
def preset_run(
    family: str, preset: str, dataset: str = "fashion-mnist", image_size: int | None = None, **train_overrides
) -> RunConfig:
    """The run ``genlab train FAMILY --preset PRESET --dataset DATASET [--image-size N]`` would make, with
    these training settings: for a folder, the model's ``image_shape`` (and ``num_classes`` when it has
    class sub-folders) come from its images, as in genlab train (:func:`genlab.api.run_config`)."""
    return run_config(
        family, preset=preset, dataset=dataset, split="train", image_size=image_size, train=train_overrides
    )


def genlab_train_images_per_second(
    family: str,
    preset: str,
    data,
    batch_size: int | None,
    seconds: float,
    dataset: str = "fashion-mnist",
    image_size: int | None = None,
    **train_overrides,
) -> tuple[float, int, str]:
    """Images/s between the first log line at or after step WARM_UP_STEPS and the last: like the reference,
    warm-up steps don't count. ``data`` must be ``dataset``'s train split (loaded with ``image_size``)."""
    train_cfg = {
        "epochs": 1000,
        "log_every": WARM_UP_STEPS,
        "checkpoint_every": 10**9,
        "max_minutes": seconds / 60,
        **train_overrides,
    }
    if batch_size:
        train_cfg["batch_size"] = batch_size
    run = preset_run(family, preset, dataset, image_size, **train_cfg)
    with tempfile.TemporaryDirectory() as tmp:
        train(run, Path(tmp) / "run", quiet=True, data=data, heldout=data)
        lines = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        precision = json.loads((Path(tmp) / "run" / "summary.json").read_text())["precision"]
    # A small folder's epochs end every few steps and log a line each: those before the warm-up don't count.
    timed = [x for x in lines if "seconds" in x and x["step"] >= WARM_UP_STEPS]
    if len(timed) < 2:
        done = max((x["step"] for x in lines), default=0)
        raise RuntimeError(
            f"{done} training steps in {seconds:g} s, too few to time past the {WARM_UP_STEPS} warm-up steps: "
            "raise --seconds"
        )
    first, last = timed[0], timed[-1]
    images = (last["step"] - first["step"]) * run.train.batch_size
    return images / (last["seconds"] - first["seconds"]), run.train.batch_size, precision


def sampling_images_per_second(
    family: str,
    preset: str,
    n: int = 10_000,
    device: str = "cpu",
    seconds: float = 20.0,
    model_config=None,
    batch: int = 256,
) -> float:
    """Images/s of ``generate`` with the preset's default sampler: ``n`` images, or as many batches of ``batch``
    as fit in ``seconds`` for a model whose sampling is slow (a diffusion model runs its network 50 times).
    ``model_config``: the model to build (default: the preset's, for Fashion-MNIST)."""
    model = build_model(family, model_config or get_preset(family, preset).model).to(device).eval()
    g = torch.Generator(device=device).manual_seed(0)
    _sync(device)
    t0 = time.perf_counter()
    generate(model, batch, generator=g)  # warm-up, and the time of one batch
    _sync(device)
    batch_seconds = time.perf_counter() - t0
    n = min(n, max(batch, int(seconds / batch_seconds) * batch))
    t0 = time.perf_counter()
    generate(model, n, generator=g, batch_size=batch if n < 10_000 else 10_000)
    _sync(device)
    return n / (time.perf_counter() - t0)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak_gflops(size: int = 2048, repeats: int = 10, trials: int = 5) -> float:
    """The best of ``trials`` timings: a peak, so the least disturbed run counts."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 * repeats / best / 1e9


def mlp_vae_training_flops_per_image() -> float:
    """Matrix FLOPs of one training step of the 784-400-(20,20)-400-784 VAE, per image, as they run.

    Each dense layer of i inputs and o outputs costs 2io FLOPs forward, 2io for its weight
    gradient and 2io for its input gradient, except the first layer: autograd never computes
    the gradient of the images, so it pays 4io, not 6io. Counting 6io there overstated the
    figure by 19 % (3.91 against 3.28 MFLOP). :func:`counted_training_flops_per_image` checks
    this against PyTorch's own FLOP counter.
    """
    first = 784 * 400
    rest = 400 * 40 + 20 * 400 + 400 * 784
    return 2 * (2 * first + 3 * rest)


def counted_training_flops_per_image(batch: int = 128) -> float:
    """PyTorch's FlopCounterMode over one forward + backward of the ``mlp`` preset, per image."""
    from torch.utils.flop_counter import FlopCounterMode

    from genlab.models import build_model, get_preset

    model = build_model("vae", get_preset("vae", "mlp").model)
    x = torch.rand(batch, 1, 28, 28)
    eps = torch.randn(batch, model.z_dim)
    with FlopCounterMode(display=False) as counter:
        model(x, None, eps)["loss"].backward()
    return counter.get_total_flops() / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="timed seconds per measurement")
    ap.add_argument("--presets", default=DEFAULT_PRESETS)
    ap.add_argument(
        "--dataset",
        default="fashion-mnist",
        help="fashion-mnist (default) or folder:PATH, a folder of images (the reference is then skipped)",
    )
    ap.add_argument("--image-size", type=int, default=None, help="folder:PATH only: resize and centre-crop to N x N")
    ap.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (default: genlab's lookup)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument(
        "--precision",
        default="preset",
        choices=["preset", "fp32", "bf16", "auto"],
        help="each preset's own setting (default), or this for all (bf16: autocast)",
    )
    ap.add_argument("--compile", action="store_true", help="torch.compile the networks")
    ap.add_argument(
        "--rounds", type=int, default=6, help="alternating reference/genlab rounds (median of their ratios)"
    )
    ap.add_argument("--no-reference", action="store_true", help="skip the pytorch/examples comparison")
    ap.add_argument(
        "--sample-batch", type=int, default=256, help="images per sampling batch (default 256; less for a quick run)"
    )
    args = ap.parse_args()
    folder = is_folder_dataset(args.dataset)
    if args.image_size is not None and not folder:
        ap.error("--image-size applies to --dataset folder:PATH only")
    if args.sample_batch < 1:
        ap.error("--sample-batch must be >= 1")
    overrides = {"device": args.device, "compile": args.compile}
    if args.precision != "preset":
        overrides["precision"] = args.precision

    if folder:
        data = load_dataset(args.dataset, "train", image_size=args.image_size)
        c, h, w = data.images.shape[1:]
        described = f"{args.dataset} train ({data.images.shape[0]} images, {c}x{h}x{w})"
    else:
        data = load_dataset("fashion-mnist", "train", data_dir=args.data_dir)
        described = f"Fashion-MNIST train ({data.images.shape[0]} images)"
    print(
        f"genlab {genlab.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads "
        f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}), device {args.device}, "
        f"precision: {args.precision}{', compiled' if args.compile else ''}, {described}, "
        f"{args.seconds:.0f} s per measurement\n"
    )
    print(f"{'preset':<12} {'batch':>6} {'precision':>9} {'train img/s':>12} {'sample img/s':>13}")
    dataset = {"dataset": args.dataset, "image_size": args.image_size} if folder else {}
    for item in args.presets.split(","):
        family, preset = item.split(":")
        try:  # a family not installed yet, or a model that cannot take the images, is reported, not fatal
            ips, batch, precision = genlab_train_images_per_second(
                family, preset, data, None, args.seconds, **dataset, **overrides
            )
        except Exception as e:
            print(f"{item:<12} skipped: {one_line(e)}")
            continue
        try:
            model_config = preset_run(family, preset, **dataset).model
            sps = sampling_images_per_second(
                family,
                preset,
                device=args.device,
                seconds=args.seconds,
                model_config=model_config,
                batch=args.sample_batch,
            )
        except Exception as e:
            print(f"{item:<12} {batch:>6} {precision:>9} {ips:>12,.0f} {'-':>13}   sampling failed: {one_line(e)}")
            continue
        print(f"{item:<12} {batch:>6} {precision:>9} {ips:>12,.0f} {sps:>13,.0f}")
    if args.no_reference:
        return
    if folder:
        print("\nreference skipped: pytorch/examples' VAE loop is MNIST-specific (28x28 grayscale, 784 inputs)")
        return

    # the mlp preset's own precision ("auto": bf16 where the hardware has it), marked * in the table
    preset_precision = get_preset("vae", "mlp").train.get("precision", "fp32")
    mlp_precision = resolve_precision(overrides.get("precision", preset_precision), torch.device(args.device))
    peak = matmul_peak_gflops()
    print(f"\nfp32 matmul peak (2048x2048): {peak:,.1f} GFLOP/s")
    counted, formula = counted_training_flops_per_image(), mlp_vae_training_flops_per_image()
    print(
        f"mlp VAE training step: {formula / 1e6:.3f} MFLOP per image by formula, "
        f"{counted / 1e6:.3f} by torch's FlopCounterMode"
    )
    print(
        "reference: pytorch/examples' vae/main.py loop; 'torchvision' = its data pipeline as written "
        "(MNIST + ToTensor per item), 'lean' = the same loop over an in-memory per-item Dataset"
    )
    print(
        f"\n{'mlp VAE':<14} {'batch':>6} {'genlab img/s':>13} {'GFLOP/s':>8} {'% peak':>7}   "
        + "   ".join(f"{'vs ' + name:>16}" for name in REFERENCE_DATASETS)
    )
    for batch in (128, 512):
        # Rounds alternate reference and genlab, and medians are compared, so a slow spell of
        # this shared machine lands on both sides instead of on one.
        refs = {name: [] for name in REFERENCE_DATASETS}
        ours = {precision: [] for precision in dict.fromkeys([mlp_precision, "fp32", "bf16"])}  # bf16: autocast
        for _ in range(args.rounds):
            for name in refs:
                refs[name].append(reference_images_per_second(data.images, batch, args.seconds / args.rounds, name))
            for precision in ours:
                ours[precision].append(
                    genlab_train_images_per_second(
                        "vae", "mlp", data, batch, args.seconds / args.rounds, **{**overrides, "precision": precision}
                    )[0]
                )
        print(
            f"{'  reference':<14} {batch:>6} "
            + " " * 32
            + "   ".join(f"{f'{statistics.median(v):,.0f} img/s':>16}" for v in refs.values())
        )
        for precision, values in ours.items():
            ips = statistics.median(values)
            gflops = ips * mlp_vae_training_flops_per_image() / 1e9
            label = f"  genlab {precision}{'*' if precision == mlp_precision else ''}"
            print(
                f"{label:<14} {batch:>6} {ips:>13,.0f} {gflops:>8.1f} {100 * gflops / peak:>6.1f}%   "
                + "   ".join(f"{f'{paired_ratio(values, v):.2f}x':>16}" for v in refs.values())
            )
    print(
        f"\nimages/s: medians of {args.rounds} alternating rounds of {args.seconds / args.rounds:g} s each; "
        "ratios: the median of the rounds' own ratios; * = the precision the mlp preset trains in here"
    )


def one_line(e: Exception) -> str:
    """An error as one line: a GenlabError's message and hint lines joined by '; '."""
    return "; ".join(str(e).splitlines()) or type(e).__name__


def paired_ratio(ours: list[float], reference: list[float]) -> float:
    """Median over rounds of genlab/reference within the round: a slow spell of the machine
    lasts seconds to minutes, so it tends to hit both sides of one round, and this cancels it."""
    return statistics.median(a / b for a, b in zip(ours, reference))


if __name__ == "__main__":
    main()
