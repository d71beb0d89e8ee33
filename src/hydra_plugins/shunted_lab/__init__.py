"""shunted-lab's Hydra plugins: the Ray launcher (ray_launcher.py)."""
