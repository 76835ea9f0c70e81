"""The figures of a compile, read from its JSON reports, and their text: shared by the console, the page and the pictures."""

from __future__ import annotations


def count_text(n: int) -> str:
    """1.23M, 4.56k: a count in a few digits."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def energy_text(picojoules: float) -> str:
    for divisor, unit in ((1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ")):
        if picojoules >= divisor:
            return f"{picojoules / divisor:.4g} {unit}"
    return f"{picojoules:.4g} pJ"


def time_text(nanoseconds: float) -> str:
    for divisor, unit in ((1e6, "ms"), (1e3, "µs")):
        if nanoseconds >= divisor:
            return f"{nanoseconds / divisor:.3g} {unit}"
    return f"{nanoseconds:.3g} ns"


def mapping_mix(options) -> str:
    """'3 analog, 1 int8' from the options of a mapping's layers."""
    counts: dict[str, int] = {}
    for option in options:
        counts[option] = counts.get(option, 0) + 1
    return ", ".join(f"{count} {option}" for option, count in sorted(counts.items()))


def chosen_attempt(assign: dict) -> dict | None:
    """The measured solver attempt whose mapping shipped (None when the mapping was given)."""
    chosen = assign["mapping"]["layers"]
    return next((a for a in [*assign.get("attempts", []), *assign.get("pareto", [])] if a["mapping"] == chosen), None)


def unique_attempts(attempts: list[dict]) -> list[dict]:
    """The attempts with distinct mappings, first of each kept (a sweep repeats a mapping over budgets)."""
    seen, unique = set(), []
    for attempt in attempts:
        key = tuple(sorted(attempt["mapping"].items()))
        if key not in seen:
            seen.add(key)
            unique.append(attempt)
    return unique


def summary(reports: dict[str, dict]) -> dict:
    """The headline figures of a compile, from its reports; a figure whose report is missing is None.

    accuracy: metric, full_precision and mapped (fractions), drop_points (of
    the chosen mapping at `drift`: verified on held-out data when there was
    data), max_drop_points, verdict and evidence (the drop's text); None when
    the mapping was given (no measurement at compile).
    """
    emit, schedule = reports.get("emit"), reports.get("schedule")
    assign, sensitivity = reports.get("assign"), reports.get("sensitivity")
    facts: dict = {
        "target": (emit or schedule or reports.get("partition") or {}).get("target"),
        "analog_weight_share": emit["analog_weight_share"] if emit else None,
        "analog_mac_share": emit["analog_mac_share"] if emit else None,
        "mapping": mapping_mix(emit["layers"].values()) if emit else None,
        "tiles_used": (emit or schedule or {}).get("tiles_used"),
        "tile_count": (emit or schedule or {}).get("tile_count"),
        "energy": None,
        "accuracy": None,
    }
    if schedule is not None:
        baseline = schedule["digital_baseline_energy_pj"]
        facts["energy"] = {
            "energy_pj": schedule["total_energy_pj"],
            "baseline_option": schedule["digital_baseline_option"],
            "baseline_energy_pj": baseline,
            "ratio": schedule["total_energy_pj"] / baseline if baseline else None,
            "makespan_ns": schedule["makespan_ns"],
            "baseline_latency_ns": schedule["digital_baseline_latency_ns"],
            "throughput_per_s": schedule["throughput_per_s"],
            "breakdown_pj": schedule["energy_breakdown_pj"],
            "baseline_breakdown_pj": schedule["digital_baseline_energy_breakdown_pj"],
        }
    chosen = chosen_attempt(assign) if assign else None
    if chosen is not None and sensitivity is not None:
        verified = assign.get("verification")
        # the verification data's own figures where it has them (a --verify file may hold other samples, no labels)
        full = (verified or {}).get("full_precision")
        full = sensitivity["full_precision"] if full is None else full
        drop = verified["drop_points"] if verified else chosen["measured_drop_points"]
        within = chosen["measured_drop_points"] <= assign["max_drop_points"]
        facts["accuracy"] = {
            "metric": (verified or {}).get("metric") or sensitivity["metric"],
            "full_precision": full,
            "mapped": full - drop / 100,
            "drop_points": drop,
            "drift": assign["drift"],
            "max_drop_points": assign["max_drop_points"],
            "verdict": verified["verdict"] if verified else ("within" if within else "over"),
            "evidence": _evidence(verified, chosen, sensitivity["seeds"]) + _refined(reports.get("refine")),
        }
    return facts


def _evidence(verified: dict | None, chosen: dict, seeds: int) -> str:
    """'drop +0.31 points, 95 % interval 0.05 to 0.48, verified on 500 held-out samples (3 seeds)'."""
    if verified is None:
        return f"drop {chosen['measured_drop_points']:+.2f} ± {chosen['measured_std_points']:.2f} points, {seeds} seeds"
    interval = (
        f", {verified['confidence']:.0%} interval {verified['low_points']:+.2f} to {verified['high_points']:+.2f}"
        if verified["confidence"] > 0
        else ""
    )
    where = "held-out samples" if verified["held_out"] else "samples (not held out of the decisions)"
    return (
        f"drop {verified['drop_points']:+.2f} points{interval}, verified on {verified['samples']} {where} "
        f"({verified['seeds']} seeds)"
    )


def _refined(refine: dict | None) -> str:
    """When refine shipped new weights, their verification: the one above is of the weights before it."""
    if not refine or refine["shipped"] != "refined":
        return ""
    where = "held-out samples" if refine.get("held_out") else "samples"
    return (
        f"; then refined and verified again on the same {where}: {refine['drop_after_points']:+.2f} points "
        f"(was {refine['drop_before_points']:+.2f}), interval top {refine['high_after_points']:+.2f}"
    )


VERDICT_TEXT = {
    "within": "within the {budget:g}-point budget",
    "over": "over the {budget:g}-point budget",
    "inconclusive": "the data cannot tell whether within the {budget:g}-point budget",
}


def verdict_text(accuracy: dict) -> str:
    return VERDICT_TEXT[accuracy["verdict"]].format(budget=accuracy["max_drop_points"])


def drop_text(option: dict | None, spread: str = "±") -> str:
    """'+0.31±0.12' from a sensitivity option's drop, '≥+2.34' where measuring stopped over every budget."""
    if option is None:
        return ""
    at_least = "≥" if option.get("at_least") else ""
    return f"{at_least}{option['drop_points']:+.2f}" + (
        f"{spread}{option['std_points']:.2f}" if option["std_points"] else ""
    )


def mean_spread(score: dict) -> str:
    return f"{score['mean']:.2f}" + (f" ± {score['std']:.2f}" if round(score["std"], 2) else "")


def finetune_tables(reports: dict[str, dict]) -> tuple[list[list[str]], list[list[str]]]:
    """Rows of the fine-tuning views: [mapping, before, after, change] per scored mapping, and
    [layer, analog drop before, after] from the two sensitivity reports (when the solver ran)."""
    report = reports["finetune"]
    after = {score["mapping"]: score for score in report["after"]}
    scores = []
    for score in report["before"]:
        new = after[score["mapping"]]
        label = score["mapping"] + (f" at {score['drift']}" if score["drift"] else "")
        scores.append([label, mean_spread(score), mean_spread(new), f"{new['mean'] - score['mean']:+.2f}"])
    layers = []
    before, again = reports.get("sensitivity_before"), reports.get("sensitivity")
    if before is not None and again is not None:
        for name, drops in before["layers"].items():
            layers.append([name, drop_text(drops.get("analog")), drop_text(again["layers"][name].get("analog"))])
    return scores, layers


def breakdown_text(breakdown_pj: dict[str, float]) -> str:
    """'compute 1.2 nJ, conversions 3 nJ, ...' with the zero terms left out."""
    parts = [f"{ENERGY_TERM_LABELS[term]} {energy_text(value)}" for term, value in breakdown_pj.items() if value]
    return ", ".join(parts) or "0 pJ"


ENERGY_TERM_LABELS = {
    "compute": "compute",
    "conversions": "conversions",
    "weight_movement": "weights",
    "activation_movement": "activations",
    "periphery": "periphery",
}


def verified_text(attempt: dict) -> str:
    """'+0.37 [-0.27, +1.01]': an attempt's drop on the held-out data with its interval ('' when not verified)."""
    if attempt.get("verified_drop_points") is None:
        return ""
    low, high = attempt["verified_low_points"], attempt["verified_high_points"]
    interval = f" [{low:+.2f}, {high:+.2f}]" if high > low else ""
    return f"{attempt['verified_drop_points']:+.2f}{interval}"


def weights_clause(assign: dict) -> str:
    """Which weights the mapping ships on after a fine-tune, in a clause ('' without one)."""
    if assign.get("weights") == "before fine-tuning":
        return "the weights from before fine-tuning ship (the fine-tuned ones mapped worse)"
    if assign.get("weights") == "fine-tuned" and not assign.get("weights_compared"):
        return (
            "the fine-tuned weights ship (the fine-tune lost accuracy at neither end: the old ones were not decided on)"
        )
    return ""


def assign_outcome(assign: dict) -> str:
    """What the verification decided, in a clause."""
    verification = assign.get("verification")
    if verification is None:
        return "within budget" if assign["within_budget"] else "no attempt within budget: the least drop ships"
    return {
        "within": "a mapping verified within the budget on held-out data ships",
        "over": "every verified mapping is over the budget: the one with the lowest upper bound ships",
        "inconclusive": "the verification data cannot settle the budget: the mapping with the lowest upper bound ships",
    }[verification["verdict"]]
