"""The engine: an adaptation run (adapt.py: set-up, the step loop, evaluation and saving), its state
and people's files (run.py), its checkpoint last.ckpt (checkpoint.py), resuming it (resume.py),
evaluation (evaluate.py), per-image predictions (predictions.py), stopping on a signal (signals.py),
the checks and command-line wrapper (checks.py), and the automatic-instance cache shared by the ranks
of a run (auto_instances.py)."""
