"""One command for a lent GPU: parity with mmdet on the device, speed, throughput and memory of the
CUDA path; appends one entry to ``BENCHMARKS.md``. Runs end to end on CPU too (``--quick``, for CI).

Phases, each with its share of ``--budget-s`` (a phase stops early, and says so, when its time is
up; the whole run fits 8 minutes on an H100-class GPU), progress printed as it goes:

1. **parity**: the synthetic checkpoints the committed mmdet fixtures were made with
   (``tests/fixtures/parity``), run on the device in fp32 (TF32 off) and compared stage by stage
   with ``tools/parity.py``, at both fixture scales (``--quick``: the small one, two images);
2. **fps**: batch 1, fp32, by mmdet's benchmark protocol: images prepared beforehand, 5 warm-up
   calls, then ``Detector.infer`` timed with the device synchronised, fps = calls / seconds; with
   the peak device memory and the published V100 figure (target: ≥ 5× it);
3. **batched**: ``--batch-size`` distinct scenes of one padded shape per call (one batched
   forward on CUDA), images/s in fp32 and bf16, and the share of the fp32 detections bf16 keeps
   (same label, IoU ≥ 0.99, |Δscore| ≤ 2e-3; target: bf16 ≥ 300 images/s);
4. **compiled** (CUDA only): backbone and neck under ``torch.compile`` (``default``) and with CUDA
   graphs (``reduce-overhead``), batch-1 fps on one image shape against eager on the same
   image, and the share of eager detections kept; skipped when the phase's time is short.

On CPU the detectors use ``cpu_kernels="portable"``: the kernels and formulation CUDA runs.

Usage: python benchmarks/gpu_check.py                         # on the GPU machine
       python benchmarks/gpu_check.py --device cpu --quick    # every phase on CPU, small scale
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402

common.add_repo_to_path()

from tools import parity  # noqa: E402

VARIANTS = ("attn1111", "attn0010", "attn1111-dcn", "attn0010-dcn")
PHASE_SHARES = {"setup": 0.10, "parity": 0.30, "fps": 0.20, "batched": 0.20, "compiled": 0.20}  # of --budget-s
TARGET_FPS_VS_V100 = 5.0
TARGET_BF16_IMAGES_PER_S = 300.0
COMPILE_MODES = ("default", "reduce-overhead")


@dataclass
class Clock:
    """The run's time budget: phase i ends at the sum of the shares up to i (unused time rolls over)."""

    budget_s: float
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def deadline(self, phase: str) -> float:
        names = list(PHASE_SHARES)
        share = sum(PHASE_SHARES[name] for name in names[: names.index(phase) + 1])
        return self.started + share * self.budget_s

    def log(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {message}", flush=True)


@dataclass
class Settings:
    """What ``--quick`` changes: scales, image counts and iteration caps."""

    parity_scales: tuple[str, ...]
    parity_images: int | None
    speed_scale: tuple[int, int]
    warmup: int
    max_calls: int
    batch_size: int
    batch_calls: int


def settings_for(args: argparse.Namespace) -> Settings:
    if args.quick:
        return Settings(("small",), 2, parity.SCALES["small"], 1, 3, args.batch_size or 2, 2)
    return Settings(tuple(parity.SCALES), None, parity.SCALES["full"], 5, 200, args.batch_size or 16, 20)


def strict_fp32(device: torch.device) -> None:
    """fp32 means fp32: no TF32 in cuDNN convolutions or cuBLAS matmuls (parity with mmdet's fixtures)."""
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def timed_calls(fn: Callable[[], Any], *, warmup: int, max_calls: int, deadline: float, sync) -> list[float]:
    """Seconds of each call after ``warmup`` untimed ones, until ``max_calls`` or ``deadline`` (≥ 1 call)."""
    times = common.time_call(fn, repeats=1, warmup=warmup, sync=sync)
    while len(times) < max_calls and time.monotonic() < deadline:
        times += common.time_call(fn, repeats=1, warmup=0, sync=sync)
    return times


def peak_memory_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / common.MIB if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def share_kept(reference: Sequence, candidate: Sequence) -> tuple[int, int]:
    """(reference detections matched by the parity criterion, reference detections)."""
    matched = total = 0
    for ref, ours in zip(reference, candidate):
        match = parity.match_detections(
            [d.bbox for d in ref.detections], [d.score for d in ref.detections], [d.label for d in ref.detections],
            [d.bbox for d in ours.detections], [d.score for d in ours.detections], [d.label for d in ours.detections],
        )  # fmt: skip
        matched, total = matched + match.matched, total + match.reference
    return matched, total


# --- the phases -----------------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    settings: Settings
    clock: Clock
    device: torch.device
    checkpoints: dict[str, Path]  # variant → synthetic checkpoint of its parity fixtures' seed

    def detector(self, variant: str, scale: Sequence[int], precision: str = "fp32"):
        """The detector CUDA runs; on CPU the same kernels (``cpu_kernels="portable"``)."""
        return parity.our_detector(variant, self.checkpoints[variant], tuple(scale), device=self.device, precision=precision,
                                   cpu_kernels="portable")  # fmt: skip


def run_parity(ctx: Context) -> list[dict[str, Any]]:
    """Stage-by-stage comparison with the committed mmdet fixtures, per variant and scale."""
    rows = []
    deadline = ctx.clock.deadline("parity")
    for variant in ctx.args.variants:
        for scale_name in ctx.settings.parity_scales:
            fixture = json.loads(parity.fixture_path(variant, scale_name).read_text())
            names = sorted(fixture["images"])[: ctx.settings.parity_images]
            row = {"variant": variant, "scale": scale_name, "images": 0, "of": len(names), "matched": 0, "reference": 0, "problems": []}
            rows.append(row)
            if time.monotonic() > deadline:
                row["problems"].append("not run: the parity phase's time was up")
                continue
            detector = ctx.detector(variant, fixture["scale"])
            for name in names:
                if time.monotonic() > deadline:
                    row["problems"].append(f"stopped after {row['images']} images: the parity phase's time was up")
                    break
                result, captured = parity.run_ours(detector, parity.IMAGES / name)
                report = parity.compare_image(variant, scale_name, name, fixture["images"][name], result, captured)
                row["images"] += 1
                row["matched"] += report.detections.matched
                row["reference"] += report.detections.reference
                row["problems"] += report.problems
            ctx.clock.log(f"parity {variant} {scale_name}: {row['matched']}/{row['reference']} mmdet detections matched "
                          f"on {row['images']} images, {len(row['problems'])} problems")  # fmt: skip
    return rows


def speed_images(ctx: Context, count: int) -> list:
    """``count`` prepared-to-be scenes: distinct synthetic scenes of one size (one padded shape)."""
    from model_zoo.synth import calibration_image

    return [calibration_image(200 + index) for index in range(count)]


def run_fps(ctx: Context) -> list[dict[str, Any]]:
    """Batch 1, fp32, mmdet's protocol, per variant over the fixture photos (varied shapes, as COCO)."""
    from model_zoo.registry import load_registry

    registry, rows, sync = load_registry(), [], common.cuda_sync(ctx.device)
    variants = list(ctx.args.variants)
    for index, variant in enumerate(variants):
        deadline = time.monotonic() + (ctx.clock.deadline("fps") - time.monotonic()) / (len(variants) - index)
        detector = ctx.detector(variant, ctx.settings.speed_scale)
        prepared = [detector.prepare(path) for path in parity.list_images()]
        calls = iter(range(10**9))
        reset_peak(ctx.device)
        times = timed_calls(lambda: detector.infer([prepared[next(calls) % len(prepared)]]), warmup=ctx.settings.warmup,
                            max_calls=ctx.settings.max_calls, deadline=deadline, sync=sync)  # fmt: skip
        published = registry.resolve(variant).published.fps
        fps = len(times) / sum(times)
        rows.append({"variant": variant, "calls": len(times), "fps": fps, "published_v100_fps": published,
                     "vs_v100": fps / published if published else None, "peak_mib": peak_memory_mib(ctx.device)})  # fmt: skip
        ctx.clock.log(f"fps {variant}: {fps:.2f} images/s at batch 1 fp32 over {len(times)} calls")
    return rows


def run_batched(ctx: Context) -> list[dict[str, Any]]:
    """Images/s of ``--batch-size`` images per call, fp32 and bf16, and bf16's share of fp32's detections."""
    rows, sync = [], common.cuda_sync(ctx.device)
    scenes = speed_images(ctx, ctx.settings.batch_size)
    variants = list(ctx.args.variants)
    for index, variant in enumerate(variants):
        answers: dict[str, list] = {}
        for precision in ("fp32", "bf16"):
            left = (ctx.clock.deadline("batched") - time.monotonic()) / (2 * (len(variants) - index) - (precision == "bf16"))
            detector = ctx.detector(variant, ctx.settings.speed_scale, precision)
            prepared = [detector.prepare(scene) for scene in scenes]
            reset_peak(ctx.device)
            def call(detector: Any = detector, prepared: list[Any] = prepared, precision: str = precision) -> None:
                answers[precision] = detector.infer(prepared)

            times = timed_calls(call, warmup=1, max_calls=ctx.settings.batch_calls, deadline=time.monotonic() + left, sync=sync)
            row = {"variant": variant, "precision": precision, "batch": len(prepared), "calls": len(times),
                   "images_per_s": len(prepared) * len(times) / sum(times), "peak_mib": peak_memory_mib(ctx.device)}  # fmt: skip
            if precision == "bf16":
                row["fp32_kept"] = share_kept(answers["fp32"], answers["bf16"])
            rows.append(row)
            ctx.clock.log(f"batched {variant} {precision}: {row['images_per_s']:.1f} images/s (batch {len(prepared)})")
            del detector
    return rows


def run_compiled(ctx: Context) -> list[dict[str, Any]]:
    """torch.compile of backbone and neck (and CUDA graphs), batch 1 on one image shape, vs eager."""
    if ctx.device.type != "cuda" or ctx.args.compile == "none":
        return []
    modes = COMPILE_MODES if ctx.args.compile == "all" else (ctx.args.compile,)
    rows, sync = [], common.cuda_sync(ctx.device)
    scene = speed_images(ctx, 1)
    deadline = ctx.clock.deadline("compiled")
    for variant in ctx.args.variants:
        eager = ctx.detector(variant, ctx.settings.speed_scale)
        prepared = [eager.prepare(scene[0])]
        reference = eager.infer(prepared)
        eager_fps = _fps(eager, prepared, ctx, deadline, sync, calls=20)
        for mode in modes:
            row = {"variant": variant, "mode": mode, "eager_fps": eager_fps}
            rows.append(row)
            if time.monotonic() + 60 > deadline:  # a compile takes about a minute: do not start one late
                row["error"] = "not run: the phase's time was up"
                continue
            try:
                detector = ctx.detector(variant, ctx.settings.speed_scale)
                started = time.monotonic()
                detector.model.backbone.compile(mode=mode, dynamic=False)
                detector.model.neck.compile(mode=mode, dynamic=False)
                answer = detector.infer(prepared)  # compiles
                row["compile_s"] = time.monotonic() - started
                row["fps"] = _fps(detector, prepared, ctx, deadline, sync, calls=50)
                row["eager_kept"] = share_kept(reference, answer)
            except Exception as error:  # noqa: BLE001 - reported in the entry; the eager path is the product
                row["error"] = f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:160] if str(error).strip() else ''}"
            ctx.clock.log(f"compiled {variant} {mode}: " + (row.get("error") or f"{row['fps']:.2f} images/s (eager {eager_fps:.2f})"))
    return rows


def _fps(detector, prepared: list, ctx: Context, deadline: float, sync, *, calls: int) -> float:
    times = timed_calls(lambda: detector.infer(prepared), warmup=ctx.settings.warmup, max_calls=calls,
                        deadline=min(deadline, time.monotonic() + 10), sync=sync)  # fmt: skip
    return len(times) / sum(times)


# --- the entry ------------------------------------------------------------------------------------


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _met(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "NOT met")


def tables(results: dict[str, Any]) -> str:
    parts = ["**Parity with the committed mmdet fixtures (fp32, on the device)**\n\n"]
    parts.append(common.markdown_table(
        ["variant", "scale", "images", "mmdet detections matched", "stage problems", "first problem"],
        [[r["variant"], r["scale"], f"{r['images']}/{r['of']}", f"{r['matched']}/{r['reference']}", len(r["problems"]),
          (r["problems"][0][:140] if r["problems"] else "–").replace("|", "/")] for r in results["parity"]],
    ))  # fmt: skip
    parts.append(f"\n**Batch 1, fp32 (mmdet protocol)**; target ≥ {TARGET_FPS_VS_V100:g}× the published V100 fps\n\n")
    parts.append(common.markdown_table(
        ["variant", "images/s", "ms/image", "calls", "published V100 images/s", "× V100", "target", "peak device MiB"],
        [[r["variant"], f"{r['fps']:.2f}", f"{1000 / r['fps']:.1f}", r["calls"], common.fmt(r["published_v100_fps"], 1),
          "–" if r["vs_v100"] is None else f"{r['vs_v100']:.2f}×",
          _met(None if r["vs_v100"] is None else r["vs_v100"] >= TARGET_FPS_VS_V100), _mib(r["peak_mib"])] for r in results["fps"]],
    ))  # fmt: skip
    parts.append(f"\n**Batched** (one padded shape); target: bf16 ≥ {TARGET_BF16_IMAGES_PER_S:g} images/s\n\n")
    parts.append(common.markdown_table(
        ["variant", "precision", "batch", "calls", "images/s", "fp32 detections kept", "target", "peak device MiB"],
        [[r["variant"], r["precision"], r["batch"], r["calls"], f"{r['images_per_s']:.1f}",
          f"{r['fp32_kept'][0]}/{r['fp32_kept'][1]}" if "fp32_kept" in r else "–",
          _met(r["images_per_s"] >= TARGET_BF16_IMAGES_PER_S) if r["precision"] == "bf16" else "–", _mib(r["peak_mib"])]
         for r in results["batched"]],
    ))  # fmt: skip
    if results["compiled"]:
        parts.append("\n**Compiled** (backbone and neck; batch 1, fp32, one image shape)\n\n")
        parts.append(common.markdown_table(
            ["variant", "mode", "compile s", "images/s", "eager images/s", "× eager", "eager detections kept"],
            [[r["variant"], r["mode"], common.fmt(r.get("compile_s"), 0), common.fmt(r.get("fps"), 2), f"{r['eager_fps']:.2f}",
              f"{r['fps'] / r['eager_fps']:.2f}×" if "fps" in r else r.get("error", "–").replace("|", "/"),
              f"{r['eager_kept'][0]}/{r['eager_kept'][1]}" if "eager_kept" in r else "–"] for r in results["compiled"]],
        ))  # fmt: skip
    else:
        parts.append("\nCompiled: not run (" + ("no CUDA device" if results["device"] != "cuda" else "--compile none") + ")\n")
    return "".join(parts)


def entry_text(args: argparse.Namespace, argv: Sequence[str], results: dict[str, Any], machine: dict[str, Any]) -> str:
    head = common.entry_header("GPU check (benchmarks/gpu_check.py)", common.command_line("benchmarks/gpu_check.py", argv),
                               machine, common.software_versions(), args.threads)  # fmt: skip
    return head + (
        f"- Setting: device {results['device']}{' (--quick)' if args.quick else ''}, fp32 with TF32 off; speed at "
        f"{results['speed_scale'][0]}×{results['speed_scale'][1]}; synthetic weights of the parity fixtures' seeds; "
        f"finished in {results['seconds']:.0f} s of a {args.budget_s:.0f} s budget\n"
        + common.load_note(machine) + "\n" + tables(results)
    )


# --- command line ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="small scale, two parity images, few calls (CI on CPU)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated aliases (default: all four)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per batched call (default: 16; --quick: 2)")
    parser.add_argument("--compile", choices=("all", "none", *COMPILE_MODES), default="all", help="torch.compile modes to try on CUDA")
    parser.add_argument("--budget-s", type=float, default=420.0, help="time for the whole run (default: %(default)s s)")
    parser.add_argument("--threads", type=int, default=common.default_threads(), help="torch CPU threads (default: all cores, %(default)s)")
    common.add_output_arguments(parser)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not args.variants or any(v not in VARIANTS for v in args.variants):
        parser.error(f"--variants must name some of {list(VARIANTS)}")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU here (use --device cpu --quick to check the script on CPU)")
    if args.batch_size is not None and args.batch_size < 1 or args.budget_s <= 0 or args.threads < 1:
        parser.error("--batch-size, --budget-s and --threads must be positive")
    return args


def run(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    from model_zoo.registry import load_registry
    from model_zoo.synth import write_synthetic_checkpoint

    clock, device = Clock(args.budget_s), torch.device(args.device)
    strict_fp32(device)
    registry = load_registry()
    checkpoints = {}
    for variant in args.variants:
        seed = json.loads(parity.fixture_path(variant, "small").read_text())["seed"]
        checkpoints[variant] = write_synthetic_checkpoint(registry.resolve(variant), work_dir / f"{variant}.pth", seed=seed)
        clock.log(f"setup: synthetic checkpoint {variant} (seed {seed})")
    settings = settings_for(args)
    ctx = Context(args, settings, clock, device, checkpoints)
    results: dict[str, Any] = {"device": device.type, "speed_scale": list(settings.speed_scale)}
    with torch.inference_mode():
        for phase, runner in (("parity", run_parity), ("fps", run_fps), ("batched", run_batched), ("compiled", run_compiled)):
            clock.log(f"{phase}: start (phase ends at {clock.deadline(phase) - clock.started:.0f} s)")
            results[phase] = runner(ctx)
    results["seconds"] = clock.elapsed()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = common.machine_info()
    with tempfile.TemporaryDirectory(prefix="attnzoo-gpu-check-") as tmp:
        results = run(args, Path(tmp))
    text = entry_text(args, argv, results, machine)
    common.publish(text, args, {"machine": machine, **results})
    parity_ok = all(not row["problems"] and row["images"] == row["of"] for row in results["parity"])
    return 0 if parity_ok else 1


if __name__ == "__main__":
    sys.exit(main())
