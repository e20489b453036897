"""The pipeline's steps: one module each, one entry function `run(ctx) -> StepResult`."""
