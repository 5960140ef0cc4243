"""Comparing solutions of one base model (docs/METHODS.md §6): why training prefers the general one.

Modules, one concept each:

- `bench`         — named steering vectors and LoRA adapters loaded onto ONE base model,
                    rescaled, perturbed and restored in place (never reloaded); random controls.
- `loss`          — the loss every metric uses: mean assistant-token cross-entropy over N
                    seeded rows, with the finetuning masking.
- `perturbation`  — norm-preserving orthogonal noise x′ = √(1−ε²)·x + ε·y.
- `efficiency`    — loss against relative scale and against equal absolute norms.
- `stability`     — relative loss increase under orthogonal noise, over ε × seeds.
- `texts`         — pre-training-style text: a file, a `datasets` dataset, or the base model's own samples.
- `pretraining_kl`— KL(P_base ‖ P_steered) per token across a norm grid.
- `runs_table`    — judged results side by side (EM%, coherent%, in-domain vs the rest).
- `session`       — one comparison run: the solutions on one loaded base model, the loss rows,
                    the report every metric writes (`MetricRun`).
- `metric_runs`   — one call per `em compare efficiency | stability | kl`: grids, measurement,
                    timing, report.
- `report`        — writing a metric's JSON, plot and manifest.
- `plots`         — matplotlib figures (Agg backend, imported only when plotting).
"""
