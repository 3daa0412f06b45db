"""The ``didlab`` command: a thin Hydra wrapper over :func:`experiments.run.run`.

Bad configs and bad data end with one line on stderr and exit status 2, never a traceback.
Ctrl-C and SIGTERM stop a run the same way: one line, exit status 130 or 143, the worker
processes stopped, the chunks already written kept for the next run.
"""

from __future__ import annotations

import os
import signal
import difflib
import re
import sys
from pathlib import Path
from typing import Any
from types import FrameType

import hydra
from omegaconf import DictConfig, OmegaConf

from . import CONF_DIR
# `${pid:}` in hydra.run.dir / hydra.sweep.dir (conf/config.yaml): two runs started in the
# same second are two processes, so the pid gives each its own folder. Cached, so every
# job of a sweep (and a launcher's copy of the config) resolves to the launching process.
OmegaConf.register_new_resolver("pid", os.getpid, use_cache=True, replace=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread where Ctrl-C raises KeyboardInterrupt, so that
    both unwind the same way: joblib stops its workers, the run folder gets ``FAILED``."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated("SIGTERM")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = " ".join(t.strip() for t in text if t.strip()) or type(exc).__name__
    return msg


def _config_message(exc: BaseException) -> str:
    """One line for a Hydra/OmegaConf composition error, saying what was wrong with which
    override (Hydra's own text buries the reason in a chained exception or a search-path
    dump)."""
    text = _one_line(exc)
    match = re.search(r"Could not (?:load|find) '([\w/]+)/([^']+)'", text)
    if match:
        group, option = match.groups()
        folder = Path(CONF_DIR) / group
        choices = sorted(f.stem for f in folder.glob("*.yaml")) if folder.is_dir() else []
        close = difflib.get_close_matches(option, choices, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"{group}={option} is not an option of {group}; {hint}choices: {', '.join(choices)}"
    match = re.match(r"Error merging override (\S+)", text)
    if match and exc.__cause__ is not None:
        reason = str(exc.__cause__).strip().splitlines()[0]
        return f"{match.group(1)}: {reason}"
    if "LexerNoViableAltException" in text or "mismatched input" in text:
        bad = text.split(":", 1)[-1].split("^", 1)[0].strip()
        return (f"{bad} could not be read as an override: quote values with spaces or "
                "operators, e.g. 'data.filter=\"year >= 2005\"'")
    return text


def fail(message: str) -> None:
    print(f"didlab: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def fail_io(exc: OSError) -> None:
    """One line for an operating-system failure (full or read-only disk, permissions) and
    exit status 1: the run could not be written, whatever the config."""
    where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
    reason = exc.strerror or _one_line(exc)
    print(f"didlab: error: cannot write{where}: {reason}; nothing was reported complete "
          "(finished chunks stay in the store)", file=sys.stderr)
    raise SystemExit(1)


# an absolute path: relative paths would be read as a Python package when the module is
# imported (the console script), and `conf/` deliberately is not one
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _app(cfg: DictConfig) -> None:
    from .run import record_origin, run

    from estimators.panel import DidlabError

    try:
        run(record_origin(cfg))
    except DidlabError as exc:
        fail(_one_line(exc))
    except OSError as exc:  # a full or read-only disk, a vanished folder: not the config's fault
        fail_io(exc)


def _precheck(argv: list[str]) -> None:
    """Compose every job's config before Hydra starts, so that a bad group option, key or
    value becomes one line and exit 2 (Hydra itself prints several lines and exits 1)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from estimators.panel import DidlabError

    flags = [a for a in argv if a.startswith("-")]
    if any(f in ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c", "--version",
                 "--shell-completion", "-sc", "--package", "-p", "--resolve") for f in flags):
        return
    overrides = [a for a in argv if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        # expand sweeps (a,b,c) into every job's override list
        jobs: list[list[str]] = [[]]
        for o in parsed:
            if o.is_sweep_override():
                values = list(o.sweep_string_iterator())
                jobs = [j + [f"{o.get_key_element()}={v}"] for j in jobs for v in values]
            else:
                jobs = [j + [o.input_line] for j in jobs]
        from .build import SIMULATED, file_spec, resolve_calibrated
        from .realdata import load_panel
        from .run import compose, validate

        for job in jobs:
            job = [j for j in job if not j.startswith("hydra")]
            try:
                cfg = compose(job)
            except (HydraException, OmegaConfBaseException) as exc:
                # "Could not override 'experiment.nreps'. To append ... use +experiment.nreps"
                # advises adding a key nothing reads: name the closest real key instead
                match = re.search(r"Could not override '([^']+)'", str(exc))
                if match:
                    fail(_unknown_key(match.group(1), [o for o in job if not o.lstrip(
                        "+~").startswith(match.group(1) + "=")], compose))
                raise
            _check_additions(job, compose)
            cfg = resolve_calibrated(cfg)
            # every cell's simulator, every estimator's check(), the experiment's options
            validate(cfg)
            _check_writable(overrides, cfg, multirun="-m" in flags or "--multirun" in flags)
            if cfg.backend.kind == "dask" and cfg.backend.address:
                from .montecarlo import check_scheduler

                check_scheduler(str(cfg.backend.address))
            if cfg.data.kind not in SIMULATED:
                panel, _ = load_panel(file_spec(cfg))  # a bad file fails here, before any output
                if cfg.experiment.kind == "spec_curve":
                    from .spec_curve import check_columns, specifications

                    check_columns(specifications(cfg), panel)
    except (HydraException, OmegaConfBaseException) as exc:
        fail(_config_message(exc))
    except DidlabError as exc:
        fail(_one_line(exc))


def _writable_root(path: str) -> Path:
    """The folder that must be writable for ``path`` to be created: the part before any
    interpolation (``outputs/${now:...}`` -> ``outputs``), then its nearest existing
    ancestor."""
    literal = Path(path.split("${", 1)[0] or ".").expanduser()
    for candidate in (literal, *literal.absolute().parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _check_writable(overrides: list[str], cfg: DictConfig, multirun: bool) -> None:
    """Refuse, before Hydra creates anything, an output folder or store on a read-only
    disk or without write permission (Hydra's own failure is a traceback)."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") == key]
    default = OmegaConf.load(Path(CONF_DIR) / "config.yaml").hydra[
        "sweep" if multirun else "run"]["dir"]
    places = {key: given[-1] if given else OmegaConf.to_container(
        OmegaConf.create({"d": default}))["d"], "experiment.store": str(cfg.experiment.store)}
    for name, path in places.items():
        root = _writable_root(path)
        if not os.access(root, os.W_OK | os.X_OK):
            fail(f"{name}={path}: cannot write under {root} (read-only file system or no "
                 "permission); choose another folder")


def _unknown_key(key: str, others: list[str], compose: Any) -> str:
    """One line for a key no schema knows, with the closest real key."""
    parent_key, _, leaf = key.rpartition(".")
    try:
        base = compose(others)
        parent = OmegaConf.select(base, parent_key) if parent_key else base
    except Exception:  # the rest of the command is broken too: say what we know
        parent = None
    if isinstance(parent, DictConfig) and OmegaConf.get_type(parent) in (dict, None):
        # a free-form map (data.labels, data.derive): new entries are added with "+"
        return (f"{key} is a new entry of the map {parent_key}: add it with "
                f"+{key}=VALUE")
    known = list(parent.keys()) if isinstance(parent, DictConfig) else []
    close = difflib.get_close_matches(leaf, [str(k) for k in known], n=1, cutoff=0.5)
    hint = (f"; did you mean {parent_key + '.' if parent_key else ''}{close[0]}?" if close
            else f"; options there: {sorted(map(str, known))[:12]}" if known else "")
    return f"{key} is not an option{hint}"


def _check_additions(job: list[str], compose: Any) -> None:
    """Refuse ``+key=value`` where ``key`` lands in a typed config node: such a key is read
    by nothing (``+seeed=3`` was accepted and ignored). Adding to free-form maps
    (``+data.derive.x=...``, ``+data.indices...``) stays allowed."""
    additions = [o for o in job if o.startswith("+") and not o.startswith("++")]
    if not additions:
        return
    base = compose([o for o in job if o not in additions])
    for o in additions:
        key = o[1:].split("=", 1)[0]
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(base, parent_key) if parent_key else base
        if not isinstance(parent, DictConfig) or OmegaConf.get_type(parent) in (dict, None):
            continue  # a free-form map (or a path Hydra will judge itself)
        if leaf in parent:
            fail(f"{key} is already an option: write {key}=... without the '+'")
        fail(_unknown_key(key, [x for x in job if x != o], compose))


#: config groups that are internal plumbing, not choices a user makes
INTERNAL_GROUPS = ("schema", "experiment_data", "hydra")


def _first_sentence(path: Path, width: int = 100) -> str:
    """A config file's description: its leading comment's first sentence, shortened to
    ``width`` characters."""
    words: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("# @package"):
            continue
        if not line.startswith("#"):
            break
        words.extend(line.lstrip("#").split())
        if any(w.endswith(".") for w in words):
            break
    text = " ".join(words)
    for i, w in enumerate(words):
        if w.endswith("."):
            text = " ".join(words[: i + 1]).rstrip(".")
            break
    return text if len(text) <= width else text[: width - 1].rsplit(" ", 1)[0] + " ..."


def help_text() -> str:
    """``didlab --help``: read from the config folder only (no estimator is imported), so
    it prints in well under two seconds. Internal groups (schemas) are not listed."""
    conf = Path(CONF_DIR)
    head = OmegaConf.load(conf / "config.yaml").hydra.help
    lines = [head.header.rstrip(), "", "Choices per group (group=option; estimator takes a "
             "list: estimator=[twfe,event_study]):", ""]
    for group in sorted(p for p in conf.iterdir() if p.is_dir()):
        if group.name in INTERNAL_GROUPS:
            continue
        names = sorted(f.stem for f in group.glob("*.yaml"))
        lines.append(f"  {group.name}: {', '.join(names)}")
    lines += ["", "Experiments (experiment=NAME):", ""]
    for f in sorted((conf / "experiment").glob("*.yaml")):
        lines.append(f"  {f.stem:<18} {_first_sentence(f)}")
    lines += ["", "More:",
              "  didlab --cfg job [overrides]   the composed config: every key you can set",
              "  didlab collect OUTPUT_DIR      combine a sweep's jobs into one table",
              "  didlab designs                 the design library: the methods papers' "
              "simulations, one command each",
              "  didlab --hydra-help            Hydra's own flags (-m sweeps, launchers)",
              "", head.footer.rstrip()]
    return "\n".join(lines)


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, line: str | None = None) -> str:
    return f"didlab: warning: {message}\n"


def main() -> None:
    """Entry point of the ``didlab`` console command."""
    import warnings

    # a deprecated option name is one line on stderr, not a source listing
    warnings.formatwarning = _one_line_warning
    warnings.filterwarnings("once", category=FutureWarning)  # each deprecation said once
    # the default SIGTERM action kills this process at once and leaves its workers behind
    signal.signal(signal.SIGTERM, _on_sigterm)
    argv = sys.argv[1:]
    if any(a in ("--help", "-h") for a in argv):
        print(help_text())
        raise SystemExit(0)
    if argv and argv[0] == "designs":
        if len(argv) > 1:
            fail(f"didlab designs takes no arguments (got {' '.join(argv[1:])}); run a design "
                 "with didlab experiment=NAME")
        from .designs import listing

        print(listing())
        raise SystemExit(0)
    from .schema import register

    register()  # the config schemas, derived from the estimator catalogue
    try:
        if argv and argv[0] == "collect":
            from .collect import main as collect_main

            raise SystemExit(collect_main(argv[1:]))
        from .run import normalize_overrides

        sys.argv[1:] = argv = normalize_overrides(argv)
        _precheck(argv)
        try:
            _app()
        except OSError as exc:  # Hydra creating the run folder on a read-only disk
            fail_io(exc)
    except KeyboardInterrupt as exc:
        how, code = ("terminated (SIGTERM)", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
        print(f"didlab: {how}: stopped; finished chunks stay in the store for the next run",
              file=sys.stderr)
        raise SystemExit(code) from None


if __name__ == "__main__":
    main()
