"""The bench's comparisons and markdown tables, from the measured entries."""


def label(r: dict) -> str:
    if r["kind"] == "peer":
        return f"timm {r['model']}"
    tags = " [FFN recompute on]" if r.get("ffn_recompute") else ""
    if r.get("mode", "eager") != "eager":
        tags += f" [{r['mode']}]"
    return f"{r['model']} {r['attention']}/{r['mlp']}{tags}" + (" (reference)" if r["kind"] == "reference" else "")


def add_comparisons(results: list[dict], peak_tflops: float) -> None:
    for r in results:
        r["gmac_per_s_train"] = r["gmacs"] * r["train_images_per_s"]
        r["gmac_per_s_infer"] = r["gmacs"] * r["infer_images_per_s"]
        r["train_flop_share_of_peak"] = r["train_tflops"] / peak_tflops
        r["infer_flop_share_of_peak"] = r["infer_tflops"] / peak_tflops
    for ref in (r for r in results if r["kind"] == "reference"):
        for r in results:
            if r["kind"] == "ours" and (r["model"], r["attention"], r["mlp"]) == (
                ref["model"],
                "shunted",
                "detail_specific",
            ):
                vs = {
                    f"{key}_ratio": r[f"{key}_mb"] / ref[f"{key}_mb"] for key in ("peak_memory", "saved_for_backward")
                }
                for phase in ("train", "infer"):
                    vs[f"{phase}_speedup"] = r[f"{phase}_images_per_s"] / ref[f"{phase}_images_per_s"]
                    key = f"{phase}_images_per_s_per_round"
                    # the rounds both have: the table is also written between the entries of a round
                    vs[f"{phase}_speedup_per_round"] = [a / b for a, b in zip(r[key], ref[key], strict=False)]
                r["vs_reference"] = vs


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"Device: {meta['device_name']}; batch {meta['batch_size']}, {meta['image_size']}px, {meta['precision']}, "
        f"channels_last={meta['channels_last']}; median of {meta['rounds']} rounds x "
        f"{meta['iters']} iterations after {meta['warmup']}; peak {meta['peak_kind']} {meta['peak_tflops']:.2f} "
        "TFLOP/s.",
        "",
        "| model | mode | params (M) | GMACs | infer img/s | train img/s | train GMAC/s | train FLOP share "
        "| peak mem (MB) | saved for backward (MB) | first train step (s), compile and capture included |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {label(r)} | {r.get('mode', 'eager')} | {r['params'] / 1e6:.2f} | {r['gmacs']:.2f} "
            f"| {r['infer_images_per_s']:.1f} | {r['train_images_per_s']:.1f} | {r['gmac_per_s_train']:.1f} "
            f"| {r['train_flop_share_of_peak']:.1%} | {r['peak_memory_mb']:.0f} | {r['saved_for_backward_mb']:.0f} "
            f"| {r['first_train_s']:.1f} |"
        )
    ratios = [r for r in results if "vs_reference" in r]
    if ratios:
        lines += [
            "",
            "| vs reference | train speed-up (rounds: min-max) | inference speed-up (rounds) | peak memory ratio "
            "| saved for backward ratio | max rel diff |",
            "|---|---|---|---|---|---|",
        ]
        diffs = {r["model"]: r.get("max_rel_diff_vs_fast") for r in results if r["kind"] == "reference"}

        def speedup(v: dict, phase: str) -> str:
            per_round = v[f"{phase}_speedup_per_round"]
            return f"{v[f'{phase}_speedup']:.2f}x ({min(per_round):.2f}-{max(per_round):.2f})"

        for r in ratios:
            v = r["vs_reference"]
            lines.append(
                f"| {label(r)} | {speedup(v, 'train')} | {speedup(v, 'infer')} | {v['peak_memory_ratio']:.2f} "
                f"| {v['saved_for_backward_ratio']:.2f} | {diffs[r['model']]:.1e} |"
            )
    peers = [r for r in results if r["kind"] == "peer"]
    if peers:
        lines += ["", *peer_table(results, peers)]
    if results and "profile" in results[0]:
        lines += ["", *profile_table(results)]
    if results and "train_op_ms" in results[0]:
        lines += ["", *op_table(results)]
    return "\n".join(lines) + "\n"


def op_table(results: list[dict], top: int = 10) -> list[str]:
    """Each entry's `top` slowest ops side by side, in ms per training step."""
    ops = sorted(
        {op for r in results for op in list(r["train_op_ms"])[:top]},
        key=lambda op: -max(r["train_op_ms"].get(op, 0.0) for r in results),
    )
    lines = [
        "| ms per training step, op by op | " + " | ".join(label(r) for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    for op in ops:
        lines.append(f"| {op} | " + " | ".join(f"{r['train_op_ms'].get(op, 0.0):.1f}" for r in results) + " |")
    other = [sum(ms for op, ms in r["train_op_ms"].items() if op not in ops) for r in results]
    lines.append("| other ops | " + " | ".join(f"{ms:.1f}" for ms in other) + " |")
    lines.append("| all ops | " + " | ".join(f"{sum(r['train_op_ms'].values()):.1f}" for r in results) + " |")
    return lines


def profile_table(results: list[dict]) -> list[str]:
    def cell(r: dict, key: str, fmt: str) -> str:
        value = r["profile"].get(key)
        return "-" if value is None else format(value, fmt)

    lines = [
        "| training step, profiled | wall ms | GPU kernel ms | GPU busy | kernels | CUDA graph launches | aten ops |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {label(r)} | {cell(r, 'wall_ms_per_step', '.1f')} | {cell(r, 'kernel_ms_per_step', '.1f')} "
            f"| {cell(r, 'gpu_busy', '.0%')} | {cell(r, 'kernel_launches_per_step', '.0f')} "
            f"| {cell(r, 'graph_launches_per_step', '.0f')} | {cell(r, 'aten_ops_per_step', '.0f')} |"
        )
    return lines


def peer_table(results: list[dict], peers: list[dict]) -> list[str]:
    """Each of our entries against each peer of the run (the peers run eager), and its peak memory
    against our eager entry of the same variant."""
    eager = {(r["model"], r["attention"], r["mlp"]): r for r in results if r["kind"] == "ours" and r["mode"] == "eager"}
    lines = [
        "| vs peer | peer | train img/s | train GMAC/s | infer GMAC/s | peak memory vs our eager |",
        "|---|---|---|---|---|---|",
    ]
    for r in (r for r in results if r["kind"] == "ours"):
        own = eager.get((r["model"], r["attention"], r["mlp"]))
        memory = "-" if own is None else f"{r['peak_memory_mb'] / own['peak_memory_mb']:.2f}"
        for p in peers:
            lines.append(
                f"| {label(r)} | {p['model']} | {r['train_images_per_s'] / p['train_images_per_s']:.2f}x "
                f"| {r['gmac_per_s_train'] / p['gmac_per_s_train']:.2f}x "
                f"| {r['gmac_per_s_infer'] / p['gmac_per_s_infer']:.2f}x | {memory} |"
            )
    return lines


def loop_markdown(loop: dict) -> str:
    """`--loop-overhead`'s result as a table."""
    rounds = ", ".join(f"{v:.3f}" for v in loop["lightning_vs_bare_per_round"])
    row = [
        f"{loop['bare_steps_per_s']:.2f}",
        f"{loop['lightning_steps_per_s']:.2f}",
        f"{loop['lightning_vs_bare']:.3f} ({rounds})",
        f"{loop['loader_images_per_s']:.0f}",
        f"{loop['model_train_images_per_s']:.0f}",
        f"{loop['loader_vs_model']:.2f}",
    ]
    lines = [
        f"Lightning against a bare loop over the same step: {loop['model']}, mode {loop['mode']}.",
        "",
        "| bare steps/s | Lightning steps/s | Lightning / bare (rounds) | loader img/s | model img/s | loader/model |",
        "|---|---|---|---|---|---|",
        "| " + " | ".join(row) + " |",
    ]
    return "\n".join(lines) + "\n"
