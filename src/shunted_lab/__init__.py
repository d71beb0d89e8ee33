"""shunted-lab: compare token mixers and FFNs in one pyramid vision transformer.

Importing the package loads nothing heavy, so that `python run.py --help` and a config error answer
at once. `import shunted_lab.models` registers shunted_t / shunted_s / shunted_b / shunted_nano with
timm, after which `timm.create_model("shunted_s")` works.
"""

__version__ = "0.1.0"
