"""The Pareto front and the budget pick on hand-made points."""

from __future__ import annotations

from toolchain.sweep.pareto import front, pick, recommend


def row(name, ms, mb, q, variant="fp32"):
    return {"point": name, "variant": variant, "p50_ms": ms, "mb": mb, "quality": q}


ROWS = [row("a", 1.0, 1.0, 3.0), row("b", 2.0, 4.0, 2.5), row("c", 2.0, 2.0, 2.8),  # c: as fast as b, worse
        row("d", 3.0, 8.0, 2.6),  # slower than b and worse: dominated
        row("e", 5.0, 16.0, 2.0), row("f", 0.5, 0.5, 3.0, "int8"),  # f: faster than a, same quality: a drops
        row("g", None, 1.0, 1.0)]  # no latency: not on the latency front, on the size front


def test_front_keeps_only_what_nothing_beats():
    assert [(r["point"], r["variant"]) for r in front(ROWS, "p50_ms")] == [("f", "int8"), ("b", "fp32"), ("e", "fp32")]
    assert [r["point"] for r in front(ROWS, "mb")] == ["f", "g"]
    for r in ROWS:  # brute force: a row is on the front iff no other row is as cheap and strictly better
        if r["p50_ms"] is None:
            continue
        beaten = any(o["p50_ms"] is not None and o["p50_ms"] <= r["p50_ms"] and o["quality"] < r["quality"]
                     for o in ROWS if o is not r)
        tied_better = any(o["p50_ms"] is not None and o["p50_ms"] < r["p50_ms"] and o["quality"] <= r["quality"]
                          for o in ROWS if o is not r)
        assert (r in front(ROWS, "p50_ms")) == (not beaten and not tied_better), r


def test_pick_and_recommend():
    assert pick(ROWS, budget_ms=2.0)["point"] == "b"
    assert pick(ROWS, budget_mb=2.0)["point"] == "g"
    assert pick(ROWS, budget_ms=2.0, budget_mb=2.0)["point"] == "c"
    assert pick(ROWS, budget_ms=0.1) is None
    line = recommend(ROWS, 2.0, 2.0, "loss")
    assert line.startswith("for ≤ 2 ms and ≤ 2 MB: ship c fp32 (loss 2.800") and "\n" not in line
    assert recommend(ROWS, 0.1, None).startswith("nothing fits ≤ 0.1 ms; the cheapest passed variant is f int8")
    assert "no budget" in recommend(ROWS, None, None)


def test_a_near_tie_goes_to_the_cheaper_variant():
    rows = [row("big", 1.6, 9.8, 4.6200), row("big", 1.4, 2.5, 4.6201, "int8"), row("big", 0.9, 2.9, 4.6270, "int4")]
    assert pick(rows, budget_ms=2.0)["variant"] == "int8"  # 0.002% worse, faster
    assert pick(rows, budget_mb=10.0)["variant"] == "int8"  # and smaller
    assert pick(rows, budget_ms=1.0)["variant"] == "int4"  # the only one that fits
    rows[1]["quality"] = 4.70  # 1.7% worse: no longer a tie
    assert pick(rows, budget_ms=2.0)["variant"] == "fp32"
