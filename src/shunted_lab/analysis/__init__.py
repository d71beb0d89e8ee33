"""Look inside a trained variant: attention maps, effective receptive fields, Grad-CAM, attention distance.

`analyze(model, inputs, out_dir)` writes into out_dir:
- analysis.json: the numbers, with a flat "summary" that sweep reports turn into columns
  (`mad_px_s<i>[_<group>]`: mean attention distance in pixels of stage i, per head group;
  `erf<share>_s<i>`: ERF high-contribution area ratio of stage i at 20/50/99% of the mass);
- attention_<k>.png per drawn image, erf.png, gradcam.png (classifiers only), attention_distance.png; erf.npz.
`python run.py task=analyze ckpt_path=...` runs it on checkpoints, `analysis.enabled=true` after training.
"""

from .suite import analyze, analyze_configured

__all__ = ["analyze", "analyze_configured"]
