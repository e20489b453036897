"""Step `gpu`: report GPU visibility; fail fast when a GPU is required and absent."""

from __future__ import annotations

from nbinit.context import Context, StepResult, skipped


def run(ctx: Context) -> StepResult:
    return skipped("gpu", "GPU report is not available in this version")
