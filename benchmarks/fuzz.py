"""A fuzzing campaign against every reader of a file a user hands the project.

    python benchmarks/fuzz.py                        # 100,000 inputs, spread over the six targets
    python benchmarks/fuzz.py --inputs 20000 --target image --jobs 1

Each target (benchmarks/fuzz_targets.py: params.yaml, idx, gzipped idx, the model .npz, images,
the dataset description) runs in a process of its own, started from valid examples of its input:
with atheris (coverage-guided: libFuzzer mutates the inputs that reach new code of the project's
packages) where it is installed, else with Hypothesis (random and mutated inputs, many
examples). An input may give a result or the reader's one expected error; any other exception is
a crash, and so is an input that takes over TIMEOUT seconds (a hang) or more memory than
MEMORY_MB (libFuzzer's limit; with Hypothesis, the address space is capped). Crashing inputs are
saved under --crashes, one per kind of crash, to turn into regression tests (tests/test_fuzz.py).
Prints, per target and in all: the inputs tried, the crashes, the time. Exit status 1 if any.
Run by hand; it is not a test (tests/test_fuzz.py runs a few hundred examples a target).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMEOUT = 10  # s for one input: longer is a hang
MEMORY_MB = 3072  # a reader that needs more for one input of at most a few KiB is a bomb
PACKAGES = ["params", "nn", "sources", "predict", "stages", "harness"]  # the code atheris measures


def signature(exc: BaseException) -> str:
    """What kind of crash: the exception's type and the last frame of the project's code it passed."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f"{os.sep}benchmarks{os.sep}" not in f.filename
              and any(f"{os.sep}{p}{os.sep}" in f.filename for p in PACKAGES)]
    where = f"{Path(frames[-1].filename).parent.name}/{Path(frames[-1].filename).name}:{frames[-1].lineno}" \
        if frames else "?"
    return f"{type(exc).__name__} at {where}"


class Tally:
    """Inputs tried and crashes found by one target's process, written to `out` as it goes."""

    def __init__(self, target: str, runs: int, out: Path, crashes: Path) -> None:
        self.target, self.runs, self.out, self.crashes = target, runs, out, crashes
        self.inputs, self.crashed, self.kinds, self.began = 0, 0, {}, time.perf_counter()

    def one(self, fn, data: bytes) -> None:
        self.inputs += 1
        try:
            fn(data)
        except Exception as exc:  # not the reader's expected error: a crash
            self.crashed += 1
            kind = signature(exc)
            if kind not in self.kinds:
                name = f"{self.target}-{hashlib.sha1(data).hexdigest()[:12]}"
                (self.crashes / name).write_bytes(data)
                self.kinds[kind] = {"input": name, "message": f"{type(exc).__name__}: {str(exc)[:300]}"}
        if self.inputs % 500 == 0 or self.inputs >= self.runs:
            self.save()

    def save(self) -> None:
        self.out.write_text(json.dumps({"target": self.target, "inputs": self.inputs, "crashes": self.crashed,
                                        "kinds": self.kinds, "seconds": time.perf_counter() - self.began}))


def child_atheris(target: str, runs: int, tally: Tally) -> None:
    import atheris

    with atheris.instrument_imports(include=PACKAGES):
        import fuzz_targets

        fuzz_targets.seeds()  # imports what every target uses, inside the instrumented block
        for fn in fuzz_targets.TARGETS.values():
            try:
                fn(b"")
            except Exception:
                pass
    corpus = Path(os.environ["FUZZ_SCRATCH"]) / "corpus" if os.environ.get("FUZZ_SCRATCH") else \
        Path(tempfile.mkdtemp(prefix=f"corpus-{target}-"))
    corpus.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(fuzz_targets.seeds()[target]):
        (corpus / f"seed-{i}").write_bytes(data)
    fn = fuzz_targets.TARGETS[target]
    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-timeout={TIMEOUT}", f"-rss_limit_mb={MEMORY_MB}",
                   "-max_len=65536", "-len_control=200", "-print_final_stats=1", str(corpus)],
                  lambda data: tally.one(fn, data))
    atheris.Fuzz()  # libFuzzer exits the process after -runs inputs


def child_hypothesis(target: str, runs: int, tally: Tally) -> None:
    import fuzz_targets
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_MB << 20, MEMORY_MB << 20))
    seeds = fuzz_targets.seeds()[target]

    @st.composite
    def mutated(draw):
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, len(data)))
            edit = draw(st.integers(0, 3))
            if edit == 0 and at < len(data):
                data[at] = draw(st.integers(0, 255))
            elif edit == 1:
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            elif edit == 2:
                del data[at:at + draw(st.integers(1, 16))]
            else:
                del data[at:]
        return bytes(data)

    fn = fuzz_targets.TARGETS[target]

    @settings(max_examples=runs, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(max_size=4096), mutated()))
    def campaign(data):
        tally.one(fn, data)

    campaign()
    tally.save()


def child(args) -> None:
    import warnings

    warnings.simplefilter("ignore")  # Pillow's warnings about damaged metadata: not crashes
    tally = Tally(args.target, args.runs, Path(args.out), Path(args.crashes))
    engine = child_atheris if args.engine == "atheris" else child_hypothesis
    engine(args.target, args.runs, tally)


def campaign(args) -> int:
    import fuzz_targets

    targets = [args.target] if args.target else list(fuzz_targets.TARGETS)
    engine = args.engine or ("atheris" if _has_atheris() else "hypothesis")
    crashes = Path(args.crashes)
    crashes.mkdir(parents=True, exist_ok=True)
    runs = -(-args.inputs // len(targets))
    work = Path(tempfile.mkdtemp(prefix="fuzz-campaign-"))
    print(f"fuzzing {', '.join(targets)} with {engine}: {runs} inputs each, {args.jobs} at a time")
    began, waiting, running, results = time.perf_counter(), list(targets), [], {}
    while waiting or running:
        while waiting and len(running) < args.jobs:
            target = waiting.pop(0)
            out = work / f"{target}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--target", target, "--runs", str(runs),
                   "--engine", engine, "--out", str(out), "--crashes", str(crashes)]
            log = open(work / f"{target}.log", "w")
            env = dict(os.environ, FUZZ_SCRATCH=str(work / f"{target}-files"))  # removed with `work`
            running.append((target, out, log, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)))
        time.sleep(0.5)
        for item in [r for r in running if r[3].poll() is not None]:
            running.remove(item)
            target, out, log, proc = item
            log.close()
            result = json.loads(out.read_text()) if out.exists() else {"inputs": 0, "crashes": 0, "kinds": {},
                                                                       "seconds": 0.0}
            if result["inputs"] < runs:  # libFuzzer stopped it: a hang, too much memory, a crash it caught
                tail = (work / f"{target}.log").read_text().splitlines()[-15:]
                why = next((line for line in tail if "ERROR: libFuzzer" in line or "ALARM" in line
                            or "Traceback" in line),
                           f"stopped after {result['inputs']} inputs (exit {proc.returncode})")
                result["crashes"] += 1
                result["kinds"]["stopped"] = {"input": "see libFuzzer's crash-*/timeout-*/oom-* file",
                                              "message": why.strip()}
            results[target] = result
            print(f"  {target:8} {result['inputs']:7d} inputs  {result['crashes']:4d} crashes  "
                  f"{result['seconds']:7.1f} s")
            for kind, what in result["kinds"].items():
                print(f"           {kind}: {what['message']} (input: {crashes / what['input']})")
    total_inputs = sum(r["inputs"] for r in results.values())
    total_crashes = sum(r["crashes"] for r in results.values())
    print(f"all: {total_inputs} inputs, {total_crashes} crashes, {time.perf_counter() - began:.0f} s "
          f"({engine}, {args.jobs} at a time)")
    shutil.rmtree(work, ignore_errors=True)  # logs, results, the targets' files (the crashing inputs are kept)
    fuzz_targets.cleanup()
    return 1 if total_crashes else 0


def _has_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=100_000, help="inputs in all, shared by the targets")
    ap.add_argument("--target", help="one target only (default: all)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="targets fuzzed at once")
    ap.add_argument("--engine", choices=["atheris", "hypothesis"], help="default: atheris where installed")
    ap.add_argument("--crashes", default="fuzz-crashes", help="where crashing inputs are saved")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
    else:
        sys.exit(campaign(args))


if __name__ == "__main__":
    main()
