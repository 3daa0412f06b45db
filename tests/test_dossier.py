"""experiment=dossier as a user sees it: one HTML file and its JSON.

The HTML is read back with the standard library's parser: every section is there, every
figure is embedded (a PNG data URI), nothing points outside the file, and every number
of every table and of the verdict is the JSON's number shown through ``dossier.fmt``. A
failing part is reported in its section while the rest is written; the numbers do not
depend on the number of workers. The slow tests render the page in headless Chromium
and run the shipped configuration end to end.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from estimators.panel import DidlabError, OptionError
from experiments.dossier import SECTIONS, fmt
from experiments.run import compose, run

#: a small dossier: one estimator of each capability the sections read, few draws
BASE = [
    "data=example", "experiment=dossier", "experiment.outcomes=[lnce]",
    "experiment.n_reps=4", "experiment.chunk_size=2", "experiment.placebo.n_perm=49",
    "experiment.placebo.shifts=[1,2]", "experiment.sensitivity.m_grid=[0.0,0.01]",
    "experiment.sensitivity.mbar_grid=[0.0,0.5,1.0]",
    "experiment.dossier.inference.wild.wild_draws=99",
    "experiment.dossier.inference.conley_taber=null",
    "backend=loky", "backend.n_jobs=2", "experiment.progress=false",
]
FAST = [*BASE, "estimator=[twfe,twfe_controls,event_study_unbinned,bacon,psm_did,mediation]",
        "estimator.event_study_unbinned.leads=3", "estimator.event_study_unbinned.lags=3",
        "estimator.mediation.n_boot=49"]
#: one estimator, one part: the tests of what happens around the parts
TINY = [*BASE, "estimator=[twfe]", "experiment.dossier.sensitivity_estimators=[]"]

class Page(HTMLParser):
    """What a browser would load and show: ids, references, images and tables."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: list[str] = []
        self.refs: list[tuple[str, str, str]] = []      # (tag, attribute, value)
        self.images: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.spans: dict[str, str] = {}
        self.tags: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._span: str | None = None
        self._span_text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.append(a["id"])
        for key in ("href", "src", "data", "action", "poster"):
            if key in a:
                self.refs.append((tag, key, a[key]))
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "table" and "data-table" in a:
            self._table = a["data-table"]
            assert self._table not in self.tables, f"table {self._table} shown twice"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "span" and "data-key" in a:
            self._span, self._span_text = a["data-key"], []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "span" and self._span is not None:
            self.spans[self._span] = "".join(self._span_text).strip()
            self._span = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._span is not None:
            self._span_text.append(data)


def read(out: Path) -> tuple[Page, dict]:
    page = Page()
    page.feed((out / "dossier.html").read_text(encoding="utf-8"))
    return page, json.loads((out / "dossier.json").read_text())


def lookup(d: dict, key: str):
    for part in key.split("."):
        d = d[int(part)] if isinstance(d, list) else d[part]
    return d


@pytest.fixture(scope="module")
def dossier(tmp_path_factory):
    out = tmp_path_factory.mktemp("dossier")
    cfg = compose([*FAST, f"experiment.store={out / 'store'}"])
    result = run(cfg, out / "run")
    return out / "run", result


def test_every_section_figure_and_part(dossier):
    out, result = dossier
    page, d = read(out)
    assert (out / "report.md").exists()  # written last: the run is complete
    for anchor, *_ in SECTIONS:
        assert anchor in page.ids, anchor
    assert {"verdict", "config"} <= set(page.ids)
    # every part ran on the example, and says so
    assert {p["status"] for p in d["parts"].values()} == {"ok"}
    assert set(d["parts"]) == {"placebo", "spec_curve", "sensitivity", "calibrate",
                               "montecarlo: no effect", "montecarlo: estimated effect"}
    for key in ("panel", "cohorts", "missing", "pre_balance", "headline", "inference",
                "other_estimands", "bacon_summary", "placebo_timing", "placebo_ri",
                "placebo_loo", "spec_summary", "spec_by_choice", "sensitivity_breakdown",
                "pretrend_power", "honest_sets", "calibration_params", "bdm", "montecarlo"):
        assert key in d["tables"], key
    # every figure is embedded, as a PNG, and nothing else is an image
    assert len(page.images) == len(d["figures"]) >= 6
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # the headline's estimators come from the config: every ATT fit is in the table
    head = d["tables"]["headline"]
    names = [r[head["columns"].index("estimator")] for r in head["data"]]
    assert names == ["twfe", "twfe_controls", "event_study_unbinned", "bacon", "psm_did",
                     "mediation"]


def test_self_contained(dossier):
    out, _ = dossier
    page, _ = read(out)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    for tag, attr, value in page.refs:
        if value.startswith("#"):
            assert value[1:] in page.ids, f"<{tag} {attr}={value}> points nowhere"
        else:
            assert value.startswith("data:"), f"<{tag} {attr}={value[:60]}> leaves the file"
    html = (out / "dossier.html").read_text()
    assert "http://" not in html and "https://" not in html and "file:" not in html


def test_html_numbers_equal_the_json(dossier):
    out, _ = dossier
    page, d = read(out)
    assert set(page.tables) == set(d["tables"])
    for key, t in d["tables"].items():
        rows = page.tables[key]
        assert rows[0] == t["columns"], key
        assert len(rows) - 1 == len(t["data"]), key
        for shown, row in zip(rows[1:], t["data"]):
            assert shown == [fmt(v) for v in row], key
    assert len(page.spans) >= 2 * len(d["verdict"])
    for key, text in page.spans.items():
        assert text == fmt(lookup(d, key)), key
    # every number a verdict line names is shown
    for i, v in enumerate(d["verdict"]):
        for name in v["numbers"]:
            assert f"verdict.{i}.numbers.{name}" in page.spans


def test_verdict_is_written_from_the_tables(dossier):
    out, _ = dossier
    _, d = read(out)
    lines = {v["topic"]: v for v in d["verdict"] if v["outcome"] in ("lnce", None)}
    t = {k: dict(columns=v["columns"], rows=[dict(zip(v["columns"], r)) for r in v["data"]])
         for k, v in d["tables"].items()}
    att = [r for r in t["headline"]["rows"] if r["att"]]
    est = lines["Estimators"]["numbers"]
    assert est["n"] == len(att) == 4           # twfe, twfe_controls, event_study, psm_did
    assert est["low"] == min(r["estimate"] for r in att)
    assert est["sig"] == sum(r["p_value"] < 0.05 and r["estimate"] < 0 for r in att)
    ri = lines["Choice of pilots: fake pilots"]["numbers"]
    assert ri["p"] == max(r["ri_p_value"] for r in t["placebo_ri"]["rows"])
    assert ri["n"] == 49
    inf = lines["Inference for few treated clusters"]["numbers"]
    others = [r for r in t["inference"]["rows"] if r["method"] != "as configured"]
    assert inf["p"] == max(r["p_value"] for r in others)
    # CR2 and the wild bootstrap are offered by the regressions that accept them, and
    # only by those (their check() decides)
    assert {(r["estimator"], r["method"]) for r in others} == {
        (e, m) for e in ("twfe", "twfe_controls", "event_study_unbinned")
        for m in ("cr2", "wild")}
    mc = t["montecarlo"]["rows"]
    size = lines["Design: size in the simulator"]["numbers"]
    null = [r for r in mc if r["cell"] == "no effect"]
    assert size["worst"] == max(r["rejection"] for r in null)
    assert size["k"] == sum(r["rejection"] > r["size_band_high"] for r in null)
    assert all(r["n_draws"] + r["n_failed"] == 4 for r in mc)
    # the Monte Carlo has every estimator that fitted the panel (but Bacon, which repeats
    # TWFE) and every inference variant
    assert {r["estimator"] for r in null} == {
        "twfe", "twfe_controls", "event_study_unbinned", "psm_did", "mediation",
        "twfe[cr2]", "twfe[wild]", "twfe_controls[cr2]", "twfe_controls[wild]",
        "event_study_unbinned[cr2]", "event_study_unbinned[wild]"}
    statuses = {v["status"] for v in d["verdict"]}
    assert statuses <= {"survives", "caution", "fails", "not run", "info"}
    assert not any(v["status"] == "not run" for v in d["verdict"])


def test_a_failing_part_is_reported_and_the_rest_written(tmp_path):
    cfg = compose([*TINY, f"experiment.store={tmp_path / 'store'}",
                   "experiment.dossier.parts=[placebo,spec_curve]", "experiment.placebo.base=[twfe]",
                   "+experiment.spec.controls.bad=[no_such_column]"])
    out = tmp_path / "run"
    run(cfg, out)
    page, d = read(out)
    assert d["parts"]["spec_curve"]["status"] == "failed"
    assert "no_such_column" in d["parts"]["spec_curve"]["reason"]
    assert d["parts"]["placebo"]["status"] == "ok" and "placebo_ri" in d["tables"]
    assert d["parts"]["montecarlo"]["status"] == "skipped"
    html = (out / "dossier.html").read_text()
    spec = html[html.index('id="spec_curve"'):html.index('id="sensitivity"')]
    assert "This part failed" in spec and "no_such_column" in spec
    assert any(v["status"] == "not run" and v["topic"] == "Specification curve"
               for v in d["verdict"])
    assert (out / "report.md").exists() and (out / "spec_curve" / "log.txt").exists()


def test_nothing_useful_fails_the_run(tmp_path):
    cfg = compose([*TINY, f"experiment.store={tmp_path / 'store'}",
                   "estimator.twfe.controls=[no_such_column]",
                   "experiment.dossier.parts=[sensitivity]",
                   "experiment.dossier.inference.cr2=null",
                   "experiment.dossier.inference.wild=null"])
    with pytest.raises(DidlabError, match="nothing to show"):
        run(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "FAILED").exists()
    assert not (tmp_path / "run" / "report.md").exists()
    # the page that says why is still there
    assert "This part failed" in (tmp_path / "run" / "dossier.html").read_text()


@pytest.mark.parametrize("override, message", [
    ("experiment.dossier.parts=[placebo,montecarlo,bogus]", "experiment.dossier.parts"),
    ("experiment.dossier.sensitivity_estimators=[event_study]", "event_study"),
    ("+experiment.dossier.inference.ct={dist:conley_taberr}", "conley_taberr"),
    ("experiment.dossier.alpha=1.5", "experiment.dossier.alpha"),
    ("experiment.dossier.date_shifts=[0,1]", "date_shifts"),
    ("experiment.placebo.base=[nope]", "nope"),
])
def test_bad_options_stop_before_the_run_folder(tmp_path, override, message):
    cfg = compose(["data=example", "experiment=dossier", override])
    with pytest.raises(OptionError, match=message):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_numbers_do_not_depend_on_the_workers(tmp_path):
    small = [*TINY, "experiment.dossier.parts=[placebo,montecarlo]",
             "experiment.placebo.base=[twfe]", "experiment.dossier.inference.wild=null"]
    got = []
    for i, backend in enumerate((["backend=sequential"], ["backend=loky", "backend.n_jobs=2"])):
        cfg = compose([*small, *backend, f"experiment.store={tmp_path / f'store{i}'}"])
        run(cfg, tmp_path / f"run{i}")
        d = json.loads((tmp_path / f"run{i}" / "dossier.json").read_text())
        got.append((d["tables"]["montecarlo"], d["tables"]["placebo_ri"], d["verdict"]))
    assert got[0] == got[1]


CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(b)), None)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (Debian: "
                    "apt-get install -y chromium); the page is checked by the parser tests")
def test_renders_in_headless_chromium(dossier, tmp_path):
    from PIL import Image

    out, _ = dossier
    page, d = read(out)
    url = (out / "dossier.html").resolve().as_uri()
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "dossier.png"
    proc = subprocess.run([*common, "--window-size=1400,2400", f"--screenshot={shot}", url],
                          capture_output=True, text=True, timeout=180)
    assert shot.exists(), proc.stderr[-2000:]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=180)
    # the page loads without a console error, a missing resource or a blocked load
    for text in (proc.stderr, dom.stderr):
        for bad in ("Uncaught", "Failed to load resource", "ERR_FILE_NOT_FOUND",
                    "Not allowed to load local resource", "CONSOLE(", ":ERROR:CONSOLE"):
            assert bad not in text, [line for line in text.splitlines() if bad in line][:3]
    # the browser built the whole document: every section, table and image
    for anchor, *_ in SECTIONS:
        assert f'id="{anchor}"' in dom.stdout
    assert dom.stdout.count("<img ") == len(d["figures"])
    assert dom.stdout.count("data-table=") == len(d["tables"])
    # and painted it: the screenshot is not blank
    image = Image.open(shot).convert("L")
    assert image.size == (1400, 2400)
    low, high = image.getextrema()
    assert high - low > 100


@pytest.mark.slow
def test_shipped_example_end_to_end(tmp_path):
    """The command of the README: every part runs on the example, in the configured
    backend, and the run takes well under the 5 minutes asked on two cores."""
    t0 = time.perf_counter()
    cfg = compose(["data=example", "experiment=dossier", f"experiment.store={tmp_path / 'store'}"])
    run(cfg, tmp_path / "run")
    seconds = time.perf_counter() - t0
    page, d = read(tmp_path / "run")
    assert {p["status"] for p in d["parts"].values()} == {"ok"}
    assert seconds < 300, seconds
    topics = {v["topic"] for v in d["verdict"]}
    for topic in ("Estimators", "Inference for few treated clusters",
                  "Treatment date: fake earlier dates", "Treatment date: later dates",
                  "Choice of pilots: fake pilots", "Choice of pilots: leave one out",
                  "Specification curve", "Parallel trends: relative magnitudes",
                  "Design: size in the simulator", "Design: placebo on the real outcomes"):
        assert topic in topics, topic
