"""The peer comparison harness of ``make bench`` (experiments/bench.py): its panels have
the design the rows name, and a row reports a peer's agreement, failure or skip instead of
hiding it. No timing is asserted (speed targets are checked in the bench, not here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import bench


def test_staggered_panel_design() -> None:
    p = bench.staggered_panel(400, 14, seed=1)
    assert len(p) == 400 * 14
    cohorts = p.groupby("unit")["cohort"].first()
    # never treated and three cohorts adopting at T//3+1, T//2+1, 2T//3+1 (periods 1..T)
    assert sorted(cohorts.unique()) == [0, 5, 8, 10]
    assert 0.3 < (cohorts == 0).mean() < 0.5
    # d switches on at the cohort's date and stays on
    treated = p[p["cohort"] > 0]
    assert ((treated["time"] >= treated["cohort"]) == (treated["d"] == 1)).all()
    assert (p.loc[p["cohort"] == 0, "d"] == 0).all()
    # the stacked window -3..+2 fits every cohort, so no sub-experiment is trimmed
    assert all(g - 3 >= 1 and g + 2 <= 14 for g in (5, 8, 10))


def test_single_treated_panel() -> None:
    p = bench.single_treated_panel(30, 19)
    ever = p.groupby("unit")["d"].max()
    assert ever.sum() == 1 and ever.loc[0] == 1
    assert p.loc[(p["unit"] == 0) & (p["d"] == 1), "time"].min() == 19 // 2


def test_compare_reports_agreement_failure_and_skip() -> None:
    def broken() -> float:
        raise ValueError("no such option\nsecond line")

    def skipped() -> float:
        raise bench._Skip("skipped: projected 900 s")

    rows = bench._compare("x", "30x19", (0.01, 1.0, 5),
                          [("same", lambda: 1.0 + 1e-12, 1e-8, ""),
                           ("different", lambda: 1.5, 1e-8, "defaults differ"),
                           ("broken", broken, 1e-8, ""),
                           ("skipped", skipped, 1e-8, ""),
                           ("absent", "not installed (absent)", 1e-8, "")], repeat=1)
    by = {r["peer"]: r for r in rows}
    assert by["same"]["agree"] is True and by["same"]["abs_diff"] < 1e-10
    assert by["different"]["agree"] is False and by["different"]["abs_diff"] == pytest.approx(0.5)
    assert "defaults differ" in by["different"]["note"]
    assert by["broken"]["note"] == "fails: ValueError: no such option"
    assert "peer_s" not in by["broken"]
    assert by["skipped"]["note"] == "skipped: projected 900 s"
    assert by["absent"]["note"] == "not installed (absent)"
    assert all(r["didlab_s"] == 0.01 for r in rows)


def test_only_runs_named_groups(tmp_path) -> None:
    """``--only stacked --quick`` runs that group alone and writes its rows; the stacked
    estimate is the same with and without the peer (it is didlab's own)."""
    bench.main(["--quick", "--only", "stacked", "--out", str(tmp_path)])
    out = json.loads((tmp_path / "bench.json").read_text())
    assert set(out) == {"machine", "stacked"}
    rows = out["stacked"]["rows"]
    assert [r["panel"] for r in rows] == ["30x19", "282x14", "2,000x14 (quick)"]
    assert all(np.isfinite(r["didlab_estimate"]) and r["didlab_s"] > 0 for r in rows)
    for r in rows:  # diff-diff is a bench extra: agreement when installed, a note when not
        assert r.get("agree", True) is True, r
        assert "agree" in r or r["note"].startswith("not installed")


def test_only_rejects_unknown_group(tmp_path) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--only", "stacked,nope", "--out", str(tmp_path)])


def test_run_isolated_reports_the_child_measurement_or_its_failure() -> None:
    ok = bench.run_isolated("import numpy as np\nx = np.ones(1000)\nbase_mb = _rss_mb()\n"
                            "t0 = time.perf_counter(); estimate = x.sum(); "
                            "seconds = time.perf_counter() - t0\n")
    assert ok["estimate"] == 1000.0 and ok["peak_mb"] >= ok["base_mb"] > 0
    assert bench.run_isolated("raise ValueError('no data')")["error"] == "ValueError: no data"


def test_catalog_group_covers_every_kind_with_a_config_and_real_peers() -> None:
    from estimators import catalog
    from experiments import bench_catalog as bc
    from experiments.run import CONF_DIR

    bench.load_group_modules()
    assert "catalog" in bench.NEW_GROUPS
    for kind in catalog.kinds():
        conf = bc.CONF_OF.get(kind, kind)
        assert (CONF_DIR / "estimator" / f"{conf}.yaml").is_file(), kind
    assert set(bc.PEERS) <= set(catalog.kinds())


def test_catalog_row_times_didlab_and_its_peer_on_the_same_draw(monkeypatch) -> None:
    pytest.importorskip("pyfixest")
    from experiments import bench_catalog as bc

    monkeypatch.setattr(bc, "BUDGET_S", 0.05)
    row = bc._row("twfe", "province 30x19", [], "lnce")
    assert row["peer"] == "pyfixest feols" and row["agree"] is True, row
    assert row["didlab_s"] > 0 and row["peer_s"] > 0 and row["didlab_peak_mb"] > 0
