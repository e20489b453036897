"""Step `repos`: clone and update the admin's and the user's git repos."""

from __future__ import annotations

from nbinit.context import Context, StepResult, skipped


def run(ctx: Context) -> StepResult:
    if not ctx.section("repos"):
        return skipped("repos", "no repos configured")
    return skipped("repos", "repo sync is not available in this version")
