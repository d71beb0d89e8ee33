"""One mixer minus each other, per FFN and metric, with the seed spread of the difference: how the
studies (experiments/) tell a gap from the noise between seeds.

For each metric: the difference of the means over seeds, its standard error
sqrt(s_a^2/n_a + s_b^2/n_b), and a `*` when it is more than two standard errors from 0 (a rough 95%
check; with 3 seeds a t-test would ask for about 4.3 standard errors).
"""

import statistics

from .jobs import Job

MIXERS = ("vit", "pvt", "swin")
FFNS = ("plain", "detail_specific")
FOOTNOTE = "*: the difference is more than two standard errors from 0."


def seed_values(jobs: list[Job], attention: str, mlp: str, key: str) -> list[float]:
    """`key` x 100 of every completed job of the cell `attention=... mlp=...` that has it."""
    cell = f"attention={attention} mlp={mlp}"
    return [100 * j.metrics[key] for j in jobs if j.cell == cell and j.status == "completed" and key in j.metrics]


def difference(a: list[float], b: list[float]) -> str:
    """'diff +- se' of mean(a) - mean(b), starred beyond two standard errors; '-' with under 2 seeds each."""
    if len(a) < 2 or len(b) < 2:
        return "-"
    diff = statistics.fmean(a) - statistics.fmean(b)
    se = (statistics.variance(a) / len(a) + statistics.variance(b) / len(b)) ** 0.5
    return f"{diff:+.1f} +- {se:.1f}" + (" *" if abs(diff) > 2 * se else "")


def differences_table(jobs: list[Job], keys: list[str], headers: list[str], reference: str = "shunted") -> list[str]:
    """Markdown rows: for each FFN and each other mixer, `reference` minus it on every key."""
    lines = ["| FFN | vs | " + " | ".join(f"{h} (diff +- se)" for h in headers) + " |"]
    lines.append("|---|---|" + "---|" * len(headers))
    for mlp in FFNS:
        for other in MIXERS:
            cells = [
                difference(seed_values(jobs, reference, mlp, key), seed_values(jobs, other, mlp, key)) for key in keys
            ]
            lines.append(f"| {mlp} | {other} | " + " | ".join(cells) + " |")
    return lines
