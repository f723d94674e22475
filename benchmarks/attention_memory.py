"""Extra memory and time of one stage-3 ``1111`` GeneralizedAttention block: ours vs mmcv's.

Same block, same weights, same input: the block of ``backbone.layer3.0`` of a synthetic
``attn1111`` checkpoint (``model_zoo.synth``), fed a fixed random non-negative input (it follows a
ReLU) of the stage-3 shape at ``--scale``: (1, 256, 50, 84) at 1333×800, so queries at 50×84 and
keys/values at 25×42. mmcv's module runs in the reference venv (``--mmcv-python``, a subprocess
running this file), loading the weights and the input from a temporary file.

Memory: the peak, during one forward under ``torch.inference_mode``, of the bytes of CPU tensors
allocated by that forward and still alive (input and weights excluded, the output included),
read from ``torch.profiler(profile_memory=True)``'s allocation events: the same method on both
sides. Time: median of ``--repeats`` forwards after ``--warmup``. Outputs are compared as
max |Δ| / max |mmcv's|, of the block output and of its attention branch (output − input).

Usage: python benchmarks/attention_memory.py [--scale 1333,800] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Kineto logs a harmless "gpuGetDeviceCount failed" ERROR on machines without a GPU.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks import common  # noqa: E402

common.add_repo_to_path()

SCRIPT = Path(__file__).resolve()
VARIANT = "attn1111"
BLOCK = "backbone.layer3.0.gen_attention_block."  # the first stage-3 block
STAGE3_STRIDE = 16
TARGET_MEMORY_RATIO = 0.25  # issue 7: ours <= 0.25x mmcv's extra memory
TARGET_REL_ERROR = 1e-5


def stage3_shape(scale: tuple[int, int], channels: int) -> tuple[int, int, int, int]:
    """(1, C, h, w) at stage 3 for an image exactly ``scale`` (long × short) after padding to 32."""
    long_edge, short_edge = scale
    return 1, channels, math.ceil(short_edge / 32) * 32 // STAGE3_STRIDE, math.ceil(long_edge / 32) * 32 // STAGE3_STRIDE


def block_weights(seed: int) -> tuple[dict[str, torch.Tensor], Any]:
    """The synthetic ``attn1111`` checkpoint's first stage-3 attention block, and its AttentionSpec."""
    from model_zoo.registry import load_registry
    from model_zoo.synth import synthetic_state_dict

    arch = load_registry().resolve(VARIANT).arch
    state = synthetic_state_dict(arch, seed)
    weights = {key.removeprefix(BLOCK): value for key, value in state.items() if key.startswith(BLOCK)}
    if not weights:
        raise RuntimeError(f"no {BLOCK}* keys in the synthetic {VARIANT} state dict")
    return weights, arch.backbone.attention


def block_input(shape: Sequence[int], seed: int) -> torch.Tensor:
    """A fixed non-negative input like a post-ReLU feature map: relu(N(0, 1))."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed)).relu_()


def forward_peak_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Peak bytes allocated by one ``module(x)`` and alive at once (profiler allocation events)."""
    from torch.profiler import ProfilerActivity, profile

    with tempfile.TemporaryDirectory(prefix="attnzoo-mem-") as tmp:
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = module(x)
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = [e["args"] for e in json.loads(trace.read_text())["traceEvents"] if e.get("name") == "[memory]"]
    del out
    live = peak = 0
    for event in sorted(events, key=lambda args: args.get("Ev Idx", 0)):
        if event.get("Device Type", 0) == 0:  # CPU
            live += event["Bytes"]
            peak = max(peak, live)
    return peak


def measure(module: nn.Module, x: torch.Tensor, repeats: int, warmup: int) -> tuple[torch.Tensor, int, list[float]]:
    """(output, peak extra bytes, forward seconds) of ``module`` on ``x``."""

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return module(x)

    times = common.time_call(forward, repeats=repeats, warmup=warmup)
    return forward(), forward_peak_bytes(module, x), times


def our_block(weights: dict[str, torch.Tensor], spec, cpu_kernels: str) -> nn.Module:
    """The block as the detector runs it on CPU with ``cpu_kernels``: the model's own
    ``GeneralizedAttention`` (portable: one SDPA call) or the fast kernels' oneDNN block."""
    from model_zoo.engine.attention import GeneralizedAttention
    from model_zoo.engine.cpu_kernels.onednn import OneDNNGeneralizedAttention

    block = GeneralizedAttention(weights["proj_conv.weight"].shape[0], num_heads=spec.num_heads, attention_type=spec.type,
                                 kv_stride=spec.kv_stride, position_magnitude=spec.position_magnitude)  # fmt: skip
    block.load_state_dict(weights, strict=True)
    return (OneDNNGeneralizedAttention.from_module(block) if cpu_kernels == "fast" else block).eval()


def mmcv_worker(spec_path: Path, out_path: Path) -> int:
    """Runs inside the reference venv: mmcv's GeneralizedAttention on the saved weights and input."""
    import mmcv
    from mmcv.cnn.bricks import GeneralizedAttention

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    saved = torch.load(spec["tensors"], weights_only=True)
    cfg = spec["attention"]
    block = GeneralizedAttention(saved["weights"]["proj_conv.weight"].shape[0], num_heads=cfg["num_heads"],
                                 attention_type=cfg["type"], kv_stride=cfg["kv_stride"],
                                 position_magnitude=cfg["position_magnitude"], spatial_range=-1)  # fmt: skip
    block.load_state_dict(saved["weights"], strict=True)
    out, peak, times = measure(block.eval(), saved["input"], spec["repeats"], spec["warmup"])
    torch.save(out, spec["output"])
    Path(out_path).write_text(json.dumps({"peak_bytes": peak, "times": times, "mmcv": mmcv.__version__, "torch": torch.__version__}))
    return 0


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |ours − reference| / max |reference| (0 for two zero tensors)."""
    scale = reference.abs().max().item()
    return (ours - reference).abs().max().item() / scale if scale else float((ours - reference).abs().max().item())


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure both blocks; a dict of bytes, seconds and errors (mmcv's entries None without it)."""
    weights, spec = block_weights(args.seed)
    shape = stage3_shape(args.scale, weights["proj_conv.weight"].shape[0])
    x = block_input(shape, args.seed)
    ours, ours_peak, ours_times = measure(our_block(weights, spec, args.cpu_kernels), x, args.repeats, args.warmup)
    heads, hw, hw_kv = spec.num_heads, shape[2] * shape[3], math.ceil(shape[2] / spec.kv_stride) * math.ceil(shape[3] / spec.kv_stride)
    result: dict[str, Any] = {
        "input_shape": list(shape), "query_hw": [shape[2], shape[3]], "kv_hw": [math.ceil(shape[2] / spec.kv_stride), math.ceil(shape[3] / spec.kv_stride)],
        "energy_bytes": shape[0] * heads * hw * hw_kv * 4,  # one fp32 (n, M, hw, hw_kv) energy
        "output_bytes": x.numel() * x.element_size(),
        "ours": {"peak_bytes": ours_peak, "times": ours_times, "median_s": common.median(ours_times)},
        "mmcv": None, "ratio": None, "rel_error": None, "branch_rel_error": None, "cpu_kernels": args.cpu_kernels,
    }  # fmt: skip
    if args.mmcv_python is None:
        return result
    with tempfile.TemporaryDirectory(prefix="attnzoo-mem-") as tmp:
        tensors, output = Path(tmp) / "block.pt", Path(tmp) / "mmcv_out.pt"
        torch.save({"weights": weights, "input": x}, tensors)
        attention = {"type": spec.type, "num_heads": spec.num_heads, "kv_stride": spec.kv_stride, "position_magnitude": spec.position_magnitude}
        payload = {"tensors": str(tensors), "output": str(output), "attention": attention,
                   "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads}  # fmt: skip
        theirs = common.run_reference_worker(args.mmcv_python, SCRIPT, ["mmcv-worker"], payload)
        reference = torch.load(output, weights_only=True)
    theirs["median_s"] = common.median(theirs["times"])
    result.update(
        mmcv=theirs,
        ratio=ours_peak / theirs["peak_bytes"],
        rel_error=relative_error(ours, reference),
        branch_rel_error=relative_error(ours - x, reference - x),
    )
    return result


def results_table(result: dict[str, Any]) -> str:
    ours, mmcv = result["ours"], result["mmcv"]
    rows = [[f"ours (cpu_kernels={result['cpu_kernels']})", f"{ours['peak_bytes'] / common.MIB:.1f}", common.fmt(ours["median_s"], 4),
             common.fmt(result["ratio"]), common.fmt(mmcv and mmcv["median_s"] / ours["median_s"], 2)]]  # fmt: skip
    if mmcv:
        rows.append([f"mmcv {mmcv['mmcv']} GeneralizedAttention", f"{mmcv['peak_bytes'] / common.MIB:.1f}", common.fmt(mmcv["median_s"], 4), "1.000", "1.00"])
    headers = ["module", "extra memory MiB (peak)", "forward s (median)", "memory ÷ mmcv", "mmcv time ÷ this"]
    return common.markdown_table(headers, rows)


def verdict(result: dict[str, Any]) -> str:
    if result["mmcv"] is None:
        return "- mmcv: not measured (no reference env), so no ratio and no equality check\n"
    memory_ok = result["ratio"] <= TARGET_MEMORY_RATIO
    equal_ok = result["rel_error"] <= TARGET_REL_ERROR
    faster = result["mmcv"]["median_s"] / result["ours"]["median_s"]
    return (
        f"- Memory target (ours ≤ {TARGET_MEMORY_RATIO}× mmcv): {'met' if memory_ok else 'NOT met'} ({result['ratio']:.3f}×)\n"
        f"- Outputs equal (max |Δ| / max |mmcv| ≤ {TARGET_REL_ERROR:g}): {'yes' if equal_ok else 'NO'} "
        f"(output {result['rel_error']:.2e}, attention branch {result['branch_rel_error']:.2e})\n"
        f"- Speed: ours is {faster:.2f}× {'faster' if faster >= 1 else 'slower'} than mmcv's module\n"
    )


def entry_text(args: argparse.Namespace, argv: Sequence[str], result: dict[str, Any], machine: dict[str, Any]) -> str:
    head = common.entry_header("attention memory (benchmarks/attention_memory.py)", common.command_line("benchmarks/attention_memory.py", argv),
                               machine, common.software_versions(), args.threads)  # fmt: skip
    shape, q, kv = result["input_shape"], result["query_hw"], result["kv_hw"]
    return head + (
        f"- Setting: one stage-3 `1111` block ({BLOCK.rstrip('.')} of a synthetic {VARIANT}, seed {args.seed}) at "
        f"{args.scale[0]}×{args.scale[1]}: input {tuple(shape)}, queries {q[0]}×{q[1]}, keys {kv[0]}×{kv[1]}; "
        f"memory = peak bytes allocated by one forward (torch.profiler profile_memory, same method both sides; output "
        f"{result['output_bytes'] / common.MIB:.1f} MiB included, input excluded); one fp32 energy would be "
        f"{result['energy_bytes'] / common.MIB:.1f} MiB; time = median of {args.repeats} after {args.warmup} warm-up; "
        f"mmcv: {args.mmcv_note}\n"
        + common.load_note(machine)
        + verdict(result) + "\n" + results_table(result)
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="1333,800", help="test-time scale LONG,SHORT the block's input is sized for (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards first")
    parser.add_argument("--threads", type=int, default=common.default_threads(), help="torch threads (default: all cores, %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic weights and input seed")
    parser.add_argument("--cpu-kernels", choices=("fast", "portable"), default="fast",
                        help="our block as the detector runs it with this cpu_kernels setting (default: %(default)s)")
    parser.add_argument("--mmcv-python", default=None, help=f"reference interpreter (default: {common.DEFAULT_REFERENCE_PYTHON} if it imports mmcv)")
    parser.add_argument("--no-mmcv", dest="mmcv_python", action="store_const", const="", help="measure ours only")
    common.add_output_arguments(parser)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.scale = common.parse_scale(args.scale)
        if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
            raise ValueError("--repeats and --threads must be >= 1, --warmup >= 0")
        args.mmcv_python, args.mmcv_note = common.reference_python(args.mmcv_python, "mmcv")
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["mmcv-worker"]:
        return mmcv_worker(Path(argv[1]), Path(argv[2]))
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = common.machine_info()
    result = run(args)
    text = entry_text(args, argv, result, machine)
    common.publish(text, args, {"machine": machine, "threads": args.threads, "scale": list(args.scale), **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
