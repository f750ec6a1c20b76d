"""`msdeploy infer`: images and folders in, a mask PNG and an overlay PNG per image out, and a
summary (`summary.json`) of what was written, what failed and how long it took.

A broken or non-image file is reported and skipped; the run goes on. Nothing is overwritten
without `force`, and every file is written atomically.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runtime.errors import UserError
from runtime.files import write_bytes_atomic, write_json_atomic
from runtime.postprocess import encode_png
from runtime.predict import Predictor
from runtime.preprocess import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, ImageReadError

SUMMARY_FILE = "summary.json"


@dataclass
class InferOptions:
    model: Path
    inputs: Sequence[Path]
    output: Path = Path("masks")
    threshold: float = 0.5
    size: tuple[int, int] | None = None
    backend: str = "auto"
    threads: int | None = None
    inference_precision: str | None = None  # openvino-cpu: auto, bf16 or f32
    soft: bool = False  # write probability maps (grey levels) instead of binary masks
    overlay: bool = True
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    force: bool = False


@dataclass
class ImageResult:
    input: str
    mask: str
    overlay: str | None
    width: int
    height: int
    foreground: float
    network_ms: float
    total_ms: float
    notes: list[str] = field(default_factory=list)


@dataclass
class InferSummary:
    model: str
    backend: str
    input_size: list[int]
    threshold: float
    output: str
    results: list[ImageResult] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # not image files, by suffix

    def latency(self, key: str) -> dict[str, float]:
        values = [getattr(r, key) for r in self.results]
        if not values:
            return {}
        return {"mean": statistics.fmean(values), "median": statistics.median(values), "max": max(values)}

    def as_dict(self) -> dict:
        data = asdict(self)
        data["latency_ms"] = {"network": self.latency("network_ms"), "total": self.latency("total_ms")}
        return data


@dataclass(frozen=True)
class Job:
    source: Path
    stem: Path  # output name without suffix, relative to the output folder


def collect_inputs(inputs: Sequence[Path], exclude: Path | None = None) -> tuple[list[Job], list[tuple[str, str]]]:
    """Image files from files and folders (folders walked recursively, in name order), each with a
    unique output name that keeps its place under the folder it came from."""
    jobs: list[Job] = []
    skipped: list[tuple[str, str]] = []
    taken: set[Path] = set()
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.is_file()):
                if exclude is not None and exclude.resolve() in path.resolve().parents:
                    continue  # our own output folder inside an input folder
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    skipped.append((str(path), f"not an image file (expected {', '.join(IMAGE_SUFFIXES)})"))
                    continue
                jobs.append(Job(path, _unique(path.relative_to(item).with_suffix(""), taken)))
        elif item.is_file():
            jobs.append(Job(item, _unique(Path(item.stem), taken)))  # read whatever its suffix: the user named it
        else:
            raise UserError(f"input {item} does not exist")
    return jobs, skipped


def _unique(stem: Path, taken: set[Path]) -> Path:
    candidate, n = stem, 2
    while candidate in taken:
        candidate = stem.with_name(f"{stem.name}-{n}")
        n += 1
    taken.add(candidate)
    return candidate


def check_output_folder(folder: Path, force: bool) -> None:
    """The output folder may not hold anything yet, unless force (then same-named files are replaced)."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output {folder} is a file; give a folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise UserError(f"output folder {folder} is not empty; pass --force to write into it, or choose another")


def run_inference(options: InferOptions, progress: Callable[[int, int, str], None] | None = None) -> InferSummary:
    """Predict every image, write `NAME_mask.png` (and `NAME_overlay.png`) per image and
    `summary.json`, and return the summary. Fails only when nothing could be done at all."""
    if not options.inputs:
        raise UserError("no inputs given; pass image files or folders")
    check_output_folder(options.output, options.force)
    jobs, skipped = collect_inputs(options.inputs, exclude=options.output)
    if not jobs:
        raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, options.inputs))}")
    predictor = Predictor(
        options.model,
        backend=options.backend,
        size=options.size,
        threshold=options.threshold,
        threads=options.threads,
        max_pixels=options.max_pixels,
        inference_precision=options.inference_precision,
    )
    summary = InferSummary(
        model=str(options.model),
        backend=predictor.runner.backend + _providers(predictor),
        input_size=list(predictor.size),
        threshold=options.threshold,
        output=str(options.output),
        skipped=skipped,
    )
    options.output.mkdir(parents=True, exist_ok=True)
    for done, job in enumerate(jobs):
        if progress:
            progress(done, len(jobs), job.source.name)
        try:
            summary.results.append(_predict_one(predictor, job, options))
        except ImageReadError as exc:
            summary.failed.append((str(job.source), str(exc)))
    if progress:
        progress(len(jobs), len(jobs), "")
    write_json_atomic(options.output / SUMMARY_FILE, summary.as_dict())
    return summary


def _providers(predictor: Predictor) -> str:
    providers = getattr(predictor.runner, "providers", None)
    precision = getattr(predictor.runner, "inference_precision", None)  # OpenVINO
    return f" ({providers[0]})" if providers else f" ({precision})" if precision else ""


def _predict_one(predictor: Predictor, job: Job, options: InferOptions) -> ImageResult:
    result = predictor.predict(job.source)
    mask_path = options.output / f"{job.stem}_mask.png"
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(mask_path, encode_png(result.soft_png() if options.soft else result.mask_png()))
    overlay_path = None
    if options.overlay:
        overlay_path = options.output / f"{job.stem}_overlay.png"
        write_bytes_atomic(overlay_path, encode_png(result.overlay()))
    height, width = result.probability.shape
    return ImageResult(
        input=str(job.source),
        mask=str(mask_path),
        overlay=str(overlay_path) if overlay_path else None,
        width=width,
        height=height,
        foreground=round(result.foreground, 6),
        network_ms=round(result.network_ms, 3),
        total_ms=round(result.total_ms, 3),
        notes=list(result.notes),
    )
