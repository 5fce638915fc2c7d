"""The engine: a run's state and checkpoint (run.py), evaluation (evaluate.py), per-image predictions
(predictions.py), stopping on a signal (signals.py), the checks and command-line wrapper (checks.py),
and the automatic-instance cache shared by the ranks of a run (auto_instances.py)."""
