"""Train and evaluate on the real datasets in ../shared/data and check the ABAW4 paper's
claims on them (see benchmarks/real/README.md).

    python -m benchmarks.real.run mae --profile cpu                # the shared MAE, once
    python -m benchmarks.real.run fer2013 --profile cpu            # FER2013, 4 models
    python -m benchmarks.real.run ckplus --profile cpu             # CK+ AU + expression k-fold
    python -m benchmarks.real.run cross-domain --profile cpu       # FER2013 -> CK+, mask ratios
    python -m benchmarks.real.run all --profile smoke              # the whole harness, minutes

``mae`` pretrains the FER2013 MAE that the ``*-mae`` models of all three benchmarks start
from (``<work>/<profile>-s<seed>/mae-fer2013``); a benchmark run before it pretrains it
itself, on first use.

Results: ``<out>/<benchmark>-<profile>-s<seed>.json`` (rewritten after every model), then
``benchmarks/real/report.py`` regenerates the Markdown summary (``benchmarks/RESULTS.md``
for the default ``--out``). Run folders go to ``<work>/<profile>-s<seed>/``; running the
same command again resumes killed runs and reuses finished ones (``--fresh``: start over).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
import warnings
from pathlib import Path

from .profiles import BENCHMARKS, PROFILES, benchmarks_of, get_profile


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.real.run",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("benchmark", choices=("mae", *BENCHMARKS, "all"))
    ap.add_argument("--profile", choices=tuple(PROFILES), default="cpu")
    ap.add_argument("--seed", type=int, default=0, help="training seed (CK+ folds are fixed)")
    ap.add_argument("--mae-seed", type=int,
                    help="start the *-mae models from the MAE of this seed (default: --seed), "
                         "e.g. to spread fine-tuning seeds over one pretraining")
    ap.add_argument("--data", type=Path, help="folder holding fer2013/ and ckplus48/ "
                                              "(default: ../shared/data)")
    ap.add_argument("--out", type=Path, help="results folder (default benchmarks/results; "
                                             "smoke: runs/bench-real/smoke-results)")
    ap.add_argument("--work", type=Path, help="run folders (default runs/bench-real)")
    ap.add_argument("--models", help="comma-separated model names to run (others already in "
                                     "the results file are kept), e.g. vit-mae,cotex-mae; "
                                     "CK+ also takes au/<name>, expr/<name>")
    ap.add_argument("--init", choices=("mae", "random"),
                    help="cross-domain: initialisation of all its models (default: mae)")
    ap.add_argument("--fresh", action="store_true",
                    help="delete this benchmark's run folders first (the MAE run is kept)")
    ap.add_argument("--fresh-mae", action="store_true", help="also redo MAE pretraining")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--no-report", action="store_true", help="do not regenerate the report")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    import torch

    from . import ckplus, cross_domain, fer2013, report
    from .common import (
        DEFAULT_DATA,
        DEFAULT_OUT,
        DEFAULT_WORK,
        Context,
        NotMeasured,
        Results,
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    if args.benchmark not in ("mae", "all") and args.benchmark not in profile:
        print(f"profile {args.profile!r} has no {args.benchmark!r} benchmark; it has "
              f"{', '.join(benchmarks_of(profile))}", file=sys.stderr)
        return 2
    data = args.data or DEFAULT_DATA
    work_root = args.work or DEFAULT_WORK
    out = args.out or (work_root / "smoke-results" if args.profile == "smoke" else DEFAULT_OUT)
    work = work_root / f"{args.profile}-s{args.seed}"
    mae_seed = args.seed if args.mae_seed is None else args.mae_seed
    # a profile may share another's MAE run (same settings): cpu-long reuses cpu's
    mae_work = work_root / f"{profile.get('mae_from', args.profile)}-s{mae_seed}"
    if args.fresh_mae and (mae_work / "mae-fer2013").exists():
        shutil.rmtree(mae_work / "mae-fer2013")
    only = [m.strip() for m in args.models.split(",")] if args.models else None
    mae_cache: dict = {}
    runners = {"mae": lambda c: c.init_weights("mae"), "fer2013": fer2013.run,
               "ckplus": ckplus.run, "cross-domain": lambda c: cross_domain.run(c, init=args.init)}
    status = 0
    for bench in (("mae", *benchmarks_of(profile)) if args.benchmark == "all"
                  else (args.benchmark,)):
        if args.fresh and (work / bench).exists():
            shutil.rmtree(work / bench)
        results = Results(out, bench, args.profile, profile, args.seed,
                          sys.argv[1:] if argv is None else argv)
        ctx = Context(args.profile, profile, args.seed, data, work, results, only, mae_cache,
                      mae_seed=mae_seed, mae_work=mae_work)
        t0 = time.perf_counter()
        print(f"== {bench} ({args.profile}, seed {args.seed}) -> {results.path}", flush=True)
        try:
            runners[bench](ctx)
        except NotMeasured as e:
            results.set("error", str(e))
            print(f"{bench}: not measured: {e}", file=sys.stderr)
            status = 1
        results.write(final=True)
        print(f"== {bench} done in {time.perf_counter() - t0:.0f} s: {results.path}",
              flush=True)
    if not args.no_report:
        md = report.write_report(out)
        print(f"report: {md}")
    return status


if __name__ == "__main__":
    sys.exit(main())
