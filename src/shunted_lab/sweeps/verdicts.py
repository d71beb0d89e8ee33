"""Verdicts: which value of each swept axis is better, by how much, how sure, and how many seeds it
would take. Written as verdicts.csv and the "Verdicts" section of summary.md.

What is compared. An axis is an override key that takes two or more values across the sweep's jobs,
`seed` aside (`attention=vit,pvt,swin,shunted mlp=plain,detail_specific` has two). Every pair of an
axis' values is compared with every other axis held at one value: 6 mixer pairs per FFN, and one FFN
pair per mixer. `a` is the value listed later in the sweep (by convention the newer method goes last),
so a positive difference means the later value scores higher.

Paired by seed. Jobs with the same seed see the same data order and the same initialisation draws,
so the difference of two cells is measured seed by seed: a - b over the seeds completed in both. A
seed missing or not completed on one side is named in the row (`missing`), never silently dropped.

The metrics: the headline score (val and test), its per-group scores, train images/s, and where
`task=eval` scored the jobs again (eval.json beside each), that evaluation's test score and groups.

Per row and metric (higher is better for every one of them: top-1, mIoU, images/s):
- `diff`: the mean over pairs of a - b, in the metric's unit in metrics.json (0.01 top-1 = 1 point);
  `sd`: the standard deviation of the differences (what `seeds_needed` and `--seeds-for` plan with);
- `ci_low`, `ci_high`: its 95% Student-t interval; `p`: the two-sided paired t-test (scipy.stats.ttest_rel);
- `boot_low`, `boot_high`: the 95% percentile bootstrap interval (scipy.stats.bootstrap, seeded; the
  percentile method, since BCa is undefined when the differences are equal). It cannot reach past the
  extreme differences seen, so with few pairs it is narrower than the t interval;
- `p_holm`: `p` Holm-adjusted over all rows of the same metric in the sweep (every pair is a test);
- `p_a_better`: the probability of improvement, the share of pairs where a beats b (a tie counts half);
- `verdict`: `a better` or `b better` where p_holm < 0.05 (its t interval then excludes 0), else `not
  resolved`; `too few seeds` under 3 pairs;
- `seeds_needed`: the pairs a paired t-test needs to detect the observed difference with 80% power,
  given the observed spread of the differences, at 0.05 divided by the number of the metric's
  comparisons (the level Holm asks of the smallest p, so that a count is one that would resolve);
  empty where the difference is 0.
"""

import math
import re
import warnings
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from scipy import stats

from ..config import override_key, override_value
from .aggregate import SCORE_NAMES, group_names, score_of
from .jobs import Job

ALPHA, POWER = 0.05, 0.8
MIN_PAIRS = 3  # fewer pairs give no verdict
FEW_PAIRS = 5  # below this, the section adds a caveat
BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 9999, 0
MOST_SEEDS = 100_000  # seeds_needed is not searched past this
COLUMNS = (
    "axis",
    "a",
    "b",
    "fixed",
    "metric",
    "n",
    "diff",
    "sd",
    "ci_low",
    "ci_high",
    "boot_low",
    "boot_high",
    "p",
    "p_holm",
    "p_a_better",
    "verdict",
    "seeds_needed",
    "missing",
)
THROUGHPUT = "train/images_per_sec"
EVAL = "eval:"  # task=eval's scores of a job, as jobs.extra_metrics names them
SEED = "seed"


def seeds_needed(difference: float, spread: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """The fewest pairs with which a two-sided paired t-test at `alpha` detects `difference` with
    `power`, when the differences have standard deviation `spread` (the noncentral t). None for no
    difference, or where it would take more than MOST_SEEDS."""
    if difference == 0 or not math.isfinite(difference) or not math.isfinite(spread):
        return None
    if spread == 0:
        return 2  # the smallest sample with a spread: any difference with none is resolved
    effect = abs(difference) / spread
    normal = ((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) / effect) ** 2
    n = max(2, math.floor(normal))  # the t-test never needs fewer than the normal approximation
    while n <= MOST_SEEDS:
        critical = stats.t.ppf(1 - alpha / 2, n - 1)
        noncentrality = effect * math.sqrt(n)
        achieved = stats.nct.sf(critical, n - 1, noncentrality) + stats.nct.cdf(-critical, n - 1, noncentrality)
        if achieved >= power:
            return n
        n += 1
    return None


def paired(a: list[float], b: list[float]) -> dict:
    """The statistics of one row from its paired values (a[i] and b[i] share a seed); see the module doc."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    row = dict.fromkeys(("diff", "sd", "ci_low", "ci_high", "boot_low", "boot_high", "p", "p_a_better"), math.nan)
    row["n"] = n
    if n:
        row |= dict(diff=float(d.mean()), p_a_better=float(np.mean(d > 0) + 0.5 * np.mean(d == 0)))
    if n < 2:
        return row
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # scipy's notes on nearly equal differences: handled below
        test = stats.ttest_rel(a, b)
        interval = test.confidence_interval(1 - ALPHA)
        boot = stats.bootstrap(
            (d,),
            np.mean,
            confidence_level=1 - ALPHA,
            n_resamples=BOOTSTRAP_RESAMPLES,
            method="percentile",
            rng=np.random.default_rng(BOOTSTRAP_SEED),
        ).confidence_interval
    # Every difference 0: scipy's t is 0/0; there is no evidence of a difference at all.
    p = 1.0 if not d.any() else float(test.pvalue)
    row |= dict(ci_low=float(interval.low), ci_high=float(interval.high), p=p)
    row |= dict(boot_low=float(boot.low), boot_high=float(boot.high), sd=float(d.std(ddof=1)))
    return row


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (scipy has none): the k-th smallest of m p-values times (m - k + 1),
    kept non-decreasing and at most 1. A NaN stays NaN and is not counted in m."""
    finite = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted, running = [math.nan] * len(p_values), 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(row: dict) -> str:
    if row["n"] < MIN_PAIRS:
        return "too few seeds"
    excludes_zero = row["ci_low"] > 0 or row["ci_high"] < 0
    if row["p_holm"] < ALPHA and excludes_zero:
        return "a better" if row["diff"] > 0 else "b better"
    return "not resolved"


@dataclass
class Comparison:
    """Two cells that differ on one axis only, and their jobs by seed."""

    axis: str
    a: str
    b: str
    fixed: str  # the other axes' values, `key=value ...`
    a_jobs: dict[str, Job] = field(default_factory=dict)
    b_jobs: dict[str, Job] = field(default_factory=dict)

    def pairs(self) -> tuple[list[tuple[Job, Job]], str]:
        """The (a, b) jobs of each seed completed in both, and a note naming each seed that is not."""
        pairs, missing = [], []
        for seed in sorted({*self.a_jobs, *self.b_jobs}, key=seed_order):
            sides = ((self.a, self.a_jobs.get(seed)), (self.b, self.b_jobs.get(seed)))
            absent = [value for value, job in sides if job is None or job.status != "completed"]
            if absent:
                missing += [f"seed {seed} missing in {self.axis}={value}" for value in absent]
            else:
                pairs.append((self.a_jobs[seed], self.b_jobs[seed]))
        return pairs, "; ".join(missing)


def seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), "") if re.fullmatch(r"-?\d+", seed) else (0, seed)


def settings_of(job: Job, common: list[str]) -> dict[str, str]:
    """A job's swept settings: its overrides that not every job shares, seed aside."""
    return {override_key(o): override_value(o) for o in job.overrides if o not in common and override_key(o) != SEED}


def comparisons(jobs: list[Job], common: list[str]) -> list[Comparison]:
    """Every pair of values of every swept axis, at every combination of the other axes that has both."""
    settings = [settings_of(j, common) for j in jobs]
    keys = list(dict.fromkeys(k for s in settings for k in s))
    values = {k: list(dict.fromkeys(s.get(k, "(default)") for s in settings)) for k in keys}
    axes = [k for k in keys if len(values[k]) > 1]
    found: dict[tuple, Comparison] = {}
    for job, setting in zip(jobs, settings, strict=True):
        for axis in axes:
            fixed = " ".join(f"{k}={setting.get(k, '(default)')}" for k in axes if k != axis)
            mine = setting.get(axis, "(default)")
            for later, earlier in combinations(reversed(values[axis]), 2):
                if mine in (later, earlier):
                    c = found.setdefault((axis, later, earlier, fixed), Comparison(axis, later, earlier, fixed))
                    (c.a_jobs if mine == later else c.b_jobs).setdefault(job.seed, job)
    # Axis by axis (in the order the overrides name them), each in the order the jobs met its pairs.
    return sorted((c for c in found.values() if c.a_jobs and c.b_jobs), key=lambda c: axes.index(c.axis))


def metric_keys(jobs: list[Job]) -> list[str]:
    """The sweep's headline score (val, test), then its per-group scores, then the training rate; then,
    where `task=eval` scored the jobs again (eval.json beside each, e.g. at another image size), the
    test score and its groups of that evaluation."""
    score = score_of(jobs)
    groups = group_names(jobs)
    keys = [
        *(f"{split}/{score}" for split in ("val", "test")),
        *(f"{split}/{score}_{g}" for split in ("val", "test") for g in groups),
        THROUGHPUT,
    ]
    # The evaluation's own groups (its data may have groups the training data had not), in the sweep's order.
    prefix = f"{EVAL}test/{score}_"
    found = {k.removeprefix(prefix) for j in jobs if j.metrics for k in j.metrics if k.startswith(prefix)}
    evaluated = [g for g in groups if g in found] + sorted(found - set(groups))
    headline = [f"{EVAL}test/{score}"] if any(j.metrics and has(j, f"{EVAL}test/{score}") for j in jobs) else []
    return keys + headline + [prefix + g for g in evaluated]


def verdict_rows(jobs: list[Job], common: list[str]) -> list[dict]:
    """A row per comparison and metric (COLUMNS), Holm-adjusted per metric, in the order of metric_keys."""
    rows = []
    found = comparisons(jobs, common)
    for metric in metric_keys(jobs):
        metric_rows = []
        for c in found:
            pairs, missing = c.pairs()
            values = [(a.metrics[metric], b.metrics[metric]) for a, b in pairs if has(a, metric) and has(b, metric)]
            if pairs and not values:  # a metric these jobs do not report (a group their data lacks)
                continue
            row = dict(axis=c.axis, a=c.a, b=c.b, fixed=c.fixed, metric=metric)
            row |= paired([v for v, _ in values], [v for _, v in values])
            row["missing"] = missing
            metric_rows.append(row)
        family = planning_level(metric_rows)
        for row, adjusted in zip(metric_rows, holm([r["p"] for r in metric_rows]), strict=True):
            row["p_holm"] = adjusted
            row["verdict"] = verdict(row)
            row["seeds_needed"] = seeds_needed(row["diff"], row["sd"], alpha=family)
        rows += metric_rows
    return [{k: r[k] for k in COLUMNS} for r in rows]


def planning_level(rows: list[dict]) -> float:
    """The test level seeds are planned at: ALPHA over the metric's comparisons (Holm's strictest step)."""
    return ALPHA / max(1, sum(not math.isnan(r["p"]) for r in rows))


def has(job: Job, metric: str) -> bool:
    return isinstance(job.metrics.get(metric), int | float)


# --- how a person reads them --------------------------------------------------------------------


def is_score(metric: str) -> bool:
    return metric != THROUGHPUT


def metric_name(metric: str) -> str:
    """`val/top1_small` -> `val top-1 (small)`; the training rate -> `train img/s`."""
    if not is_score(metric):
        return "train img/s"
    evaluated = metric.startswith(EVAL)
    split, name = metric.removeprefix(EVAL).split("/", 1)
    split = f"task=eval {split}" if evaluated else split
    score, _, group = name.partition("_")
    return f"{split} {SCORE_NAMES.get(score, score)}" + (f" ({group})" if group else "")


def amount(value: float, metric: str, sign: bool = True) -> str:
    """A difference in the unit a person reads: points of a score (x 100), or images/s."""
    scale, digits = (100, 1) if is_score(metric) else (1, 0)
    text = f"{value * scale:{'+' if sign else ''}.{digits}f}".replace("-", "\u2212")
    return text if math.isfinite(value) else "-"


def unit(metric: str) -> str:
    return "points" if is_score(metric) else "img/s"


def pair_label(row: dict) -> str:
    return f"{row['a']} vs {row['b']}" + (f" ({row['fixed']})" if row["fixed"] else "")


def sentence(row: dict) -> str:
    """One comparison as a result: 'shunted vs pvt (mlp=detail_specific), val top-1: +1.2 points [−3.1, +5.5],
    3 pairs, not resolved; about 14 seeds would resolve a difference this size'."""
    m = row["metric"]
    if row["n"] == 0:
        return f"{pair_label(row)}, {metric_name(m)}: no seed completed on both sides ({row['missing']})"
    text = f"{pair_label(row)}, {metric_name(m)}: {amount(row['diff'], m)} {unit(m)}"
    if math.isfinite(row["ci_low"]):
        text += f" [{amount(row['ci_low'], m)}, {amount(row['ci_high'], m)}]"
    text += f", {row['n']} pair{'s' * (row['n'] != 1)}, "
    if row["verdict"] == "too few seeds":
        text += f"too few seeds for a verdict (it takes {MIN_PAIRS} pairs)"
    elif row["verdict"] == "not resolved":
        text += "not resolved"
        needed = row["seeds_needed"]
        if row["diff"] == 0:
            text += "; the mean difference is 0"
        elif needed is None:
            text += f"; more than {MOST_SEEDS:,} seeds would be needed to resolve a difference this size"
        else:
            text += f"; about {needed} seeds would resolve a difference this size"
    else:
        better = row["a"] if row["verdict"] == "a better" else row["b"]
        text += f"**{better} better** (p = {row['p_holm']:.2g} after Holm)"
    if row["missing"]:
        text += f" ({row['missing']})"
    return text


def markdown_section(rows: list[dict]) -> list[str]:
    """The "Verdicts" section of summary.md: every comparison of the headline score as a sentence, and
    the per-group and throughput comparisons that are resolved (all of them are in verdicts.csv)."""
    if not rows:
        return []
    headline = list(dict.fromkeys(r["metric"] for r in rows))[:2]
    lines = [
        "",
        "## Verdicts",
        "",
        "Each value of a swept axis against each other, the other axes held fixed, paired by seed: the mean "
        "difference a \u2212 b with its 95% t interval; a verdict where the paired t-test, Holm-adjusted over "
        f"the metric's comparisons, is below {ALPHA}. Every row, with bootstrap intervals and p-values: "
        "`verdicts.csv`; the picture: `verdicts.png`.",
    ]
    if min(r["n"] for r in rows) < FEW_PAIRS:
        lines += [
            "",
            f"Caveat: some comparisons rest on fewer than {FEW_PAIRS} seeds; their intervals are wide and their "
            "spread itself uncertain, so the seed counts below are rough.",
        ]
    for metric in headline:
        lines += ["", f"**{metric_name(metric)}**", ""] + [f"- {sentence(r)}" for r in rows if r["metric"] == metric]
    others = [r for r in rows if r["metric"] not in headline]
    resolved = [r for r in others if r["verdict"] in ("a better", "b better")]
    if others:
        lines += ["", "**Per group and throughput**", ""]
        lines += [f"- {sentence(r)}" for r in resolved]
        lines.append(f"- {len(others) - len(resolved)} other comparisons are not resolved (`verdicts.csv`).")
    return lines


def seeds_for_lines(rows: list[dict], difference: float) -> list[str]:
    """Per comparison of the headline score: the seeds that would resolve `difference` (in the metric's
    unit in metrics.json) with the spread of the differences measured so far."""
    headline = list(dict.fromkeys(r["metric"] for r in rows))[:2]
    lines = []
    for r in (r for r in rows if r["metric"] in headline):
        level = planning_level([row for row in rows if row["metric"] == r["metric"]])
        if r["n"] < 2:
            lines.append(f"{pair_label(r)}, {metric_name(r['metric'])}: no spread yet ({r['n']} pair)")
            continue
        spread = r["sd"]
        needed = seeds_needed(difference, spread, alpha=level)
        what = f"more than {MOST_SEEDS:,}" if needed is None else f"{needed}"
        m = r["metric"]
        lines.append(
            f"{pair_label(r)}, {metric_name(m)}: {what} seeds for {amount(difference, m, sign=False)} {unit(m)} "
            f"(spread of the differences {amount(spread, m, sign=False)}, {r['n']} pairs)"
        )
    return lines
