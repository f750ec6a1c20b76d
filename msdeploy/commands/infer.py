"""`msdeploy infer`: masks and overlays for images and folders, with a summary table."""

from __future__ import annotations

from msdeploy.output import console, err_console, print_table, progress_bar

MAX_LISTED = 20


def run_infer_command(options) -> int:
    """Run the job, print the summary; the exit code is 1 when no image could be read."""
    from runtime.inference_job import SUMMARY_FILE, run_inference

    with progress_bar("inferring", 1) as update:
        summary = run_inference(options, progress=lambda done, total, name: update(done, name, total=total))
    net, total = summary.latency("network_ms"), summary.latency("total_ms")
    noted = [r for r in summary.results if r.notes]
    rows = [
        ("model", summary.model),
        ("backend", summary.backend),
        ("network input", f"{summary.input_size[0]}x{summary.input_size[1]} (masks resized back to each image)"),
        ("images written", f"{len(summary.results)} (mask{' and overlay' if options.overlay else ''} each)"),
        ("failed (unreadable)", str(len(summary.failed))),
        ("skipped (not images)", str(len(summary.skipped))),
        ("with notes (upsampled, reduced)", str(len(noted))),
    ]
    if net:
        rows += [
            ("network latency", f"mean {net['mean']:.1f} ms, median {net['median']:.1f} ms, max {net['max']:.1f} ms"),
            ("per image", f"mean {total['mean']:.1f} ms (read, preprocess, network, resize back)"),
        ]
    print_table(f"msdeploy infer -> {summary.output}", ["", ""], rows)
    problems = [(path, reason) for path, reason in summary.failed] + [(r.input, "; ".join(r.notes)) for r in noted]
    if problems:
        print_table(
            "Failed or noted files" + (f" (first {MAX_LISTED})" if len(problems) > MAX_LISTED else ""),
            ["file", "what happened"],
            problems[:MAX_LISTED],
        )
    if summary.skipped:
        err_console.print(f"skipped {len(summary.skipped)} non-image files (listed in {SUMMARY_FILE})")
    count = len(summary.results)
    console.print(f"[green]wrote[/] {count} mask{'' if count == 1 else 's'} to {summary.output} and {SUMMARY_FILE}")
    return 0 if summary.results else 1
