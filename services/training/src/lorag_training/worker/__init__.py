"""The training worker: one process (or one torchrun rank) per job, launched by the service's scheduler.

`python -m lorag_training.worker <job_dir>/spec.json` trains the adapter the spec describes, appends its progress
to `<job_dir>/events.jsonl`, checkpoints under `<job_dir>/checkpoints/`, tracks an MLflow run and registers the
final adapter. Modules: spec (the contract), data (rows -> masked examples), model (device/dtype/quantisation),
loop (training), checkpoints, events, tracking (MLflow).
"""
