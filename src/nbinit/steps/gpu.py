"""Step `gpu`: report GPU visibility; fail fast when a GPU is required and absent.

Policy `gpu.require`: true -> no usable GPU is FATAL in start mode, so the spawn fails at
once with the evidence instead of a server without a GPU; auto -> report only; false ->
skip. The count reaches the server as NBINIT_GPU_COUNT.
"""

from __future__ import annotations

from nbinit import gpu
from nbinit.context import MUST_RUN_FLOOR, Context, StepResult, failed, ok, skipped
from nbinit.errors import NbinitError

FIX_REQUIRED = (
    "request a GPU for this server (nvidia.com/gpu in the profile's extra_resource_limits) "
    "on a node with the NVIDIA device plugin, or set gpu.require: auto"
)


def run(ctx: Context) -> StepResult:
    settings = ctx.section("gpu")
    require = settings["require"]
    if require is False:
        return skipped("gpu", "gpu.require is false")
    # A required GPU is checked even past the deadline, with at least MUST_RUN_FLOOR.
    floor = MUST_RUN_FLOOR if require is True else 0.0
    timeout = ctx.deadline.cap(float(settings["timeout"]), floor=floor)
    report = gpu.gather(
        ctx.env,
        identity=ctx.user,
        timeout=timeout,
        frameworks=tuple(settings["frameworks"]),
        frameworks_timeout=ctx.deadline.cap(float(settings["frameworks_timeout"])),
    )
    details = report.as_dict()
    if require is True and report.count == 0:
        # FATAL in start mode (the step table makes a required GPU critical); an ERROR in
        # postStart, which runs beside the server and must exit 0.
        result = failed("gpu", "required GPU is absent", **details)
        problem = f"gpu.require is true but no usable GPU: {report.evidence()}"
        result.fatal = NbinitError(problem, FIX_REQUIRED)
        return result
    ctx.server_env["NBINIT_GPU_COUNT"] = str(report.count)
    ctx.log.info(f"gpu: {gpu.summary(report)}; NBINIT_GPU_COUNT={report.count}")
    for note in report.notes:
        ctx.log.info(f"gpu: {note}")
    for warning in report.warnings:
        ctx.log.warning(f"gpu: {warning}")
    return ok("gpu", gpu.summary(report), **details)
