"""`msdeploy bench` as a library call: plan the cases, find or make the models, time, build the report.

    from bench.run import BenchOptions, run_bench
    report = run_bench(BenchOptions(backends=("torch-cpu", "onnxruntime-cpu"), sizes=(256, 352)))
    report.write("docs/results")

With PyTorch installed, missing ONNX models are exported into `work` and the PyTorch rows and
tables are filled; with the runtime install only (a board), the models come from `models` and
everything that needs PyTorch is listed as unavailable, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.cases import Case, Settings, run_cases
from bench.file_rows import ModelFile, describe_folder, file_target, pick_model
from bench.report import BenchReport, measure_matmul_gflops
from runtime.backends import BACKENDS, FAMILIES, FILE_BACKENDS, TORCH_BACKENDS, backend_unavailable, expand_backends
from runtime.cpu_features import cpu_features
from runtime.environment import provenance, stamp
from runtime.errors import UserError
from runtime.metadata import BF16_BACKENDS, FUSION_NAMES, RUN_PRECISIONS


@dataclass
class BenchOptions:
    backends: Sequence[str] = ("torch-cpu", "onnxruntime-cpu")
    precisions: Sequence[str] = ("fp32",)
    fusions: Sequence[str] = ("hierarchical", "absi")
    sizes: Sequence[int] = (256, 320, 352, 416)
    batches: Sequence[int] = (1,)
    backbone: str | None = "pvt_v2_b2"  # None: whatever the models folder holds
    weights: str | None = None
    models: str | Path | None = None  # a folder of exported models (runtime-only machines)
    work: str | Path = ".msdeploy-bench"  # where missing models are exported (needs PyTorch)
    warmup: int = 3
    iterations: int = 10
    min_time: float | None = None
    threads: int | None = None
    tables: bool = True  # parameters, GFLOPs, memory (need PyTorch; memory runs child processes)
    table_size: int | None = None  # size of the integration, memory and FLOP tables [352 if timed, else the largest]
    command: str = "msdeploy bench"

    def validate(self) -> None:
        for name, given, allowed in (
            ("--backends", expand_backends(self.backends), (*BACKENDS, *FAMILIES)),
            ("--precision", self.precisions, RUN_PRECISIONS),
            ("--fusion", self.fusions, FUSION_NAMES),
        ):
            bad = [v for v in given if v not in allowed]
            if bad or not given:
                raise UserError(f"{name}: {', '.join(bad) or 'nothing given'} is not one of {', '.join(allowed)}")
        if any(s < 32 for s in self.sizes) or any(b < 1 for b in self.batches) or not self.sizes:
            raise UserError("--sizes must be sides of at least 32 pixels and --batch at least 1")
        if self.iterations < 1 or self.warmup < 0:
            raise UserError("--iters must be at least 1 and --warmup at least 0")


def has_torch() -> bool:
    return backend_unavailable("torch-cpu") is None


def reference_case(case: Case) -> Case | None:
    """PyTorch eager FP32 on the same device, fusion, size and batch."""
    eager = "torch-cuda" if case.device == "cuda" else "torch-cpu"
    return Case(eager, "fp32", case.fusion, case.size, case.batch)


def run_bench(
    options: BenchOptions, say: Callable[[str], None] = print, progress: Callable[[int, int, str], None] | None = None
) -> BenchReport:
    options.validate()
    torch_here = has_torch()
    cases = [
        Case(b, p, f, s, n)
        for b in expand_backends(options.backends)
        for p in options.precisions
        for f in options.fusions
        for s in options.sizes
        for n in options.batches
    ]
    skipped: dict[Case, str] = {}
    for backend in dict.fromkeys(c.backend for c in cases):
        # PyTorch rows: the install here, then PyTorch's own view of the GPU (torch_unavailable below)
        why = backend_unavailable(backend) if backend not in TORCH_BACKENDS else None
        if backend in TORCH_BACKENDS and not torch_here:
            why = "PyTorch is not installed here (runtime-only install)"
        if why:
            skipped.update({c: why for c in cases if c.backend == backend})
    for c in cases:
        if c.precision != "bf16" or c in skipped:
            continue
        if c.backend not in BF16_BACKENDS:
            skipped[c] = f"bf16 runs on {', '.join(BF16_BACKENDS)} (an FP32 model computed in BF16)"
        elif not cpu_features().bf16:
            skipped[c] = "this CPU computes no BF16 natively (needs AVX-512 BF16 or AMX)"
    if torch_here:
        from bench.torch_rows import torch_unavailable

        for c in cases:
            if c.backend in TORCH_BACKENDS and c not in skipped and (why := torch_unavailable(c)):
                skipped[c] = why

    files = _model_files(options, cases, skipped, torch_here, say)
    picked: dict[Case, ModelFile] = {}
    for c in cases:
        if c.backend in FILE_BACKENDS and c not in skipped:
            model = pick_model(files, c, options.backbone)
            if model is None:
                skipped[c] = _missing_model(c, options)
            else:
                picked[c] = model

    def make_target(case: Case):
        if case.backend in TORCH_BACKENDS:
            from bench.torch_rows import torch_target

            return torch_target(case, _backbone(options, files), options.weights, options.threads)
        return file_target(case, picked[case], options.threads)

    table_size = options.table_size or (352 if 352 in options.sizes else max(options.sizes))
    settings = Settings(options.warmup, options.iterations, options.min_time, options.threads)
    results = run_cases(cases, make_target, skipped, settings, progress, reference_case)
    made = provenance(options.command)
    report = BenchReport(
        command=options.command,
        stamp=stamp(options.command, fields=made),
        provenance=made,
        backbone=_backbone(options, files),
        settings=asdict(settings),
        results=results,
        table_size=table_size,
    )
    if options.tables:
        _fill_model_tables(report, options, files, torch_here, say)
    else:
        report.memory_note = "not measured (--no-tables)"
    return report


def _backbone(options: BenchOptions, files: list[ModelFile]) -> str:
    if options.backbone:
        return options.backbone
    names = sorted({f.backbone for f in files})
    if len(names) != 1:
        raise UserError(f"the models folder holds backbones {names}; choose one with --backbone")
    return names[0]


def _model_files(options, cases, skipped, torch_here: bool, say) -> list[ModelFile]:
    if options.models:
        folder = Path(options.models)
        if not folder.is_dir():
            raise UserError(f"--models {folder} is not a folder of exported models")
        return describe_folder(folder)
    wanted = [c for c in cases if c.backend in FILE_BACKENDS and c not in skipped]
    if not wanted:
        return []
    if not torch_here:
        raise UserError(
            "no --models folder given, and PyTorch is not installed to export them: pass --models DIR "
            "with models exported on another machine (msdeploy export onnx / quantize / export engine)"
        )
    # made on demand through the variants pipeline (INT8 in the layout each backend runs fastest,
    # calibrated once on synthetic images) and kept in the work folder: a second run reuses them
    from export.variants import Int8Settings, export_fp32, make_variant

    work, backbone = Path(options.work), options.backbone or "pvt_v2_b2"
    work.mkdir(parents=True, exist_ok=True)
    ort_or_openvino = [c for c in wanted if BACKENDS[c.backend].family in ("onnxruntime", "openvino")]
    fp16 = any(c.file_precision == "fp16" for c in ort_or_openvino)
    int8_layouts = dict.fromkeys(BACKENDS[c.backend].int8_layout for c in ort_or_openvino if c.file_precision == "int8")
    for fusion in dict.fromkeys(c.fusion for c in wanted):
        fp32 = export_fp32(work / f"{backbone}_{fusion}.onnx", backbone, fusion, options.weights, say=say)
        if fp16:
            make_variant(fp32, "fp16", weights=options.weights, work=work, say=say)
        for layout in int8_layouts:
            make_variant(fp32, "int8", int8=Int8Settings(target=layout), work=work, say=say)
    return describe_folder(work)


def _missing_model(case: Case, options: BenchOptions) -> str:
    if case.backend == "tensorrt":
        return (
            f"no {case.precision} engine for {case.fusion} in {options.models or options.work} "
            "(build one with msdeploy export engine)"
        )
    return f"no {case.file_precision} ONNX model for {case.fusion} in {options.models or options.work}"


def _fill_model_tables(report: BenchReport, options: BenchOptions, files, torch_here: bool, say) -> None:
    report.matmul_rates["cpu fp32"] = measure_matmul_gflops()
    notes = ["cpu: numpy 1024x1024 products, all cores"]
    cuda_precisions = {r.case.matmul_precision for r in report.results if r.stats and r.case.device == "cuda"}
    if cuda_precisions and torch_here:
        from bench.torch_rows import cuda_matmul_rates

        rates, how = cuda_matmul_rates(sorted(cuda_precisions))
        report.matmul_rates.update(rates)
        notes.append(how)
    elif cuda_precisions:
        notes.append("cuda: not measured (needs PyTorch with CUDA)")
    report.matmul_note = "; ".join(notes)
    fusions = list(dict.fromkeys(r.case.fusion for r in report.results))
    if not torch_here:
        why = "needs the PyTorch model (PyTorch is not installed here)"
        missing = ("Parameter Count", "Computational Complexity", "Achieved compute rate", "Memory Usage per part")
        report.unavailable.update(dict.fromkeys(missing, why))
        _file_memory(report, options, files, fusions)
        return
    from bench.torch_rows import model_tables

    say("measuring parameters, GFLOPs and peak memory per part (a fresh process per part)")
    gpu = any(r.case.backend.startswith("torch-cuda") and r.stats for r in report.results)
    params, flops, memory, note = model_tables(
        _backbone(options, files), fusions, report.table_size, options.weights, "cuda" if gpu else "cpu"
    )
    report.params, report.flops, report.memory, report.memory_note = params, flops, memory, note


def _file_memory(report: BenchReport, options: BenchOptions, files, fusions) -> None:
    """Without PyTorch: peak memory of the whole network from the FP32 ONNX models (ONNX Runtime)."""
    from runtime import memory

    if not memory.supported():
        report.memory_note = "not measured: needs Linux /proc"
        return
    size = report.table_size
    report.memory = {}
    for fusion in fusions:
        model = pick_model(files, Case("onnxruntime-cpu", "fp32", fusion, size, 1), options.backbone)
        if model is not None:
            args = [str(model.path), "1", str(size), str(size), str(options.threads or 0)]
            report.memory[fusion] = {"network": memory.measure_in_child("runtime.memory", args)["peak_added_mb"]}
    report.memory_note = "ONNX Runtime CPU, FP32, peak resident memory added by one inference, fresh process"
