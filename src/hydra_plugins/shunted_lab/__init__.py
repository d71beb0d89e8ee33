"""shunted-lab's Hydra plugins: the Ray launcher (ray_launcher.py) and the resumable Optuna sweeper
(optuna_sweeper.py)."""
