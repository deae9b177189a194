"""Schedule exploration: model programs, scenarios, strategies, replay (where model, workloads and checker meet)."""
