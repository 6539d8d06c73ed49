"""The whole pipeline on one core: per stage, against its compute floor, against the seed-style
stack (librosa + float Keras in TensorFlow), start-up, and memory.

Every measurement runs in a fresh process pinned to one core (`--core`), so imports, start-up
and peak RSS are each process's own:

- pipeline: `lungedge classify FILE --json` as a user runs it (wall time, median of
  `--repeat`; peak RSS), at 4, 8, 44.1 and 48 kHz input: the shipped samples concatenated to
  `--seconds` of audio and resampled offline to each rate;
- stages: the same analysis path in-process with each stage timed (resample, segment, frontend,
  interpreter, quality, the rest), and the compute floor: the frontend and the interpreter
  alone on the same cycles;
- seed stack: librosa features + the float Keras model (the shipped architecture and
  ensemble size, in TensorFlow) on the same cycles; skipped without the convert extra;
- start-up: `lungedge classify` to its first printed cycle, and `lungedge run` to READY
  (sd_notify, against a private Mosquitto) and its RSS once running;
- interpreter: ms per window, ai-edge-litert and (in .venv-tflite) tflite-runtime.

    .venv/bin/python bench/pipeline.py [--seconds 645] [--core 0] [--repeat 3] [--no-seed]

The numbers are the machine's: compare ratios within one run (a noisy machine slows both sides).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHIPPED = ROOT / "models" / "lungedge-cnnlstm"
RATES = (4000, 8000, 44100, 48000)
TFLITE_PYTHON = ROOT / ".venv-tflite" / "bin" / "python"


# -- children: each runs in its own pinned process --------------------------------------------
def peak_rss_mb() -> float:
    from soak import status_mb

    return status_mb("self", "VmHWM")


def child_stages(wav: Path, cycles_out: Path | None, block_ms: int) -> dict[str, Any]:
    """The analysis path with every stage timed, then the floor on the same cycles."""
    t0 = time.perf_counter()
    import edge.pipeline.analysis as analysis_mod
    from edge.pipeline.analysis import Analysis, ClassifiedCycle
    from edge.pipeline.model import ModelRunner
    from edge.pipeline.tracker import TrackerConfig
    from edge.sources.file import FileSource
    imported = time.perf_counter() - t0

    runner = ModelRunner(SHIPPED)
    source = FileSource(wav, block_ms=block_ms)
    analysis = Analysis(source.sample_rate, runner, TrackerConfig())
    spent: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
        return wrapper

    path = analysis.path
    path.resampler.process = timed("resample", path.resampler.process)  # type: ignore[method-assign]
    path.segmenter.process = timed("segment", path.segmenter.process)  # type: ignore[method-assign]
    frontend = path.frontend
    path.frontend = timed("frontend", frontend)
    predict = runner.predict
    runner.predict = timed("interpreter", predict)  # type: ignore[method-assign]
    analysis_mod.signal_quality = timed("quality", analysis_mod.signal_quality)
    blocks = timed("read", source.blocks().__next__)
    features: list[np.ndarray] = []
    cycles: list[np.ndarray] = []
    t = time.perf_counter()
    while True:
        try:
            block = blocks()
        except StopIteration:
            break
        for e in analysis.process(block):
            if isinstance(e, ClassifiedCycle):
                features.append(e.features)
                cycles.append(e.cycle.samples)
    for e in analysis.finish():
        if isinstance(e, ClassifiedCycle):
            features.append(e.features)
            cycles.append(e.cycle.samples)
    total = time.perf_counter() - t
    audio_s = analysis.position
    # The floor: only what a cycle must cost, on the same cycles (best of three passes).
    floors = []
    for _ in range(3):
        t = time.perf_counter()
        for c in cycles:
            predict(frontend(c))
        floors.append(time.perf_counter() - t)
    floor_frontend = min(_time(lambda: [frontend(c) for c in cycles]) for _ in range(3))
    windows = sum(len(runner.windows(f)) for f in features)
    if cycles_out is not None:
        np.savez(cycles_out, *cycles)
    return {"audio_s": audio_s, "imports_s": imported, "total_s": total, "stages": spent,
            "floor_s": min(floors), "floor_frontend_s": floor_frontend,
            "cycles": len(cycles), "windows": windows, "peak_rss_mb": peak_rss_mb(),
            "runtime": runner.runtime}


def _time(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def child_seed(cycles_npz: Path) -> dict[str, Any]:
    """librosa features + the float Keras model, the way the seed projects run a cycle."""
    t0 = time.perf_counter()
    import librosa  # noqa: F401
    from frontend_speed import librosa_features

    from convert.package import average, build_cnn_lstm
    from edge.pipeline.model import cycle_windows, load_manifest
    imported = time.perf_counter() - t0
    m = load_manifest(SHIPPED)
    arch = m.training["architecture"]
    members = [build_cnn_lstm(m.window.frames, m.frontend.n_features, len(m.labels),
                              filters=tuple(arch["filters"]), lstm_units=arch["lstm_units"],
                              time_pool=tuple(arch["time_pool"]), cell_clip=arch["cell_clip"])
               for _ in m.training["members"]]
    model = average(members) if len(members) > 1 else members[0]
    mean = np.asarray(m.feature_mean, np.float32)
    std = np.asarray(m.feature_std, np.float32)
    data = np.load(cycles_npz)
    cycles = [data[k] for k in data.files]
    model(cycle_windows(librosa_features(cycles[0], m.frontend).T, m.window, mean, std)[..., None])
    t = time.perf_counter()
    for c in cycles:
        x = cycle_windows(librosa_features(c, m.frontend).T, m.window, mean, std)
        model(x[..., None], training=False).numpy()
    total = time.perf_counter() - t
    return {"imports_s": imported, "total_s": total, "cycles": len(cycles),
            "peak_rss_mb": peak_rss_mb()}


def child_latency(n: int) -> dict[str, Any]:
    """ms per window of the shipped model on this interpreter, every member (best of 5 × n)."""
    from edge.pipeline.model import ModelRunner

    runner = ModelRunner(SHIPPED)
    shape = runner.manifest.members[0].input.shape
    x = np.random.default_rng(0).normal(size=shape[1:3]).astype(np.float32)
    runner.window_probs(x)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            runner.window_probs(x)
        best = min(best, (time.perf_counter() - t) / n)
    return {"runtime": runner.runtime, "ms_per_window": best * 1000,
            "members": len(runner.members)}


# -- the parent -------------------------------------------------------------------------------
def pinned(core: int, args: list[str], python: str = sys.executable) -> list[str]:
    return ["taskset", "-c", str(core), python, *args]


def run_child(core: int, args: list[str], python: str = sys.executable) -> dict[str, Any]:
    out = subprocess.run(pinned(core, [__file__, *args], python), cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# Runs a command in a grandchild forked from this small launcher and prints its peak RSS (kB).
# Measuring a child of the bench directly would be wrong: Python starts children with vfork,
# and Linux carries the parent's peak RSS into the child's ru_maxrss at exec.
LAUNCHER = """import os, sys, time
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - t, usage.ru_maxrss, file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def timed_process(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one command, its output discarded."""
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with {proc.returncode}: {proc.stderr[-500:]}")
    wall, peak_kb = proc.stderr.strip().splitlines()[-1].split()
    return float(wall), int(peak_kb) / 1024


def make_inputs(seconds: float, where: Path) -> dict[int, Path]:
    import soundfile as sf
    import soxr

    from edge.sources.audio_file import read_audio

    parts = [read_audio(p)[0] for p in sorted((ROOT / "models" / "samples").glob("*.wav"))]
    one = np.concatenate(parts)
    x8k = np.tile(one, int(np.ceil(seconds * 8000 / len(one))))[:int(seconds * 8000)]
    out = {}
    for rate in RATES:
        y = x8k if rate == 8000 else soxr.resample(x8k, 8000, rate, quality="VHQ")
        out[rate] = where / f"input_{rate}.wav"
        sf.write(out[rate], np.clip(y, -1, 1), rate, subtype="PCM_16")
    return out


def first_result_s(core: int, wav: Path) -> float:
    """Seconds from starting `lungedge classify` to its first printed cycle row."""
    t = time.perf_counter()
    proc = subprocess.Popen(pinned(core, ["-m", "edge", "classify", str(wav)]), cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip()[:1].isdigit():  # "  0      0.00 …": the first cycle
            took = time.perf_counter() - t
            break
    else:
        raise SystemExit("lungedge classify printed no cycle")
    proc.kill()
    proc.wait()
    return took


def daemon_ready(core: int, tmp: Path, port: int, sample: Path) -> tuple[float, float]:
    """(seconds to READY=1, RSS MB after 8 s of running) of `lungedge run`."""
    from soak import status_mb

    cfg = tmp / "run.yaml"
    cfg.write_text(f"""device_id: bench
source:
  type: file
  file: {{path: {sample}, realtime: true, loop: true}}
model: {{path: {SHIPPED}}}
mqtt: {{port: {port}}}
spool: {{path: {tmp / 'spool.db'}}}
""")
    sock_path = tmp / "notify.sock"
    sock_path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
    t = time.perf_counter()
    proc = subprocess.Popen(pinned(core, ["-m", "edge", "run", "--config", str(cfg)]),
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while b"READY=1" not in sock.recv(4096):
            pass
        ready = time.perf_counter() - t
        time.sleep(8)
        rss = status_mb(proc.pid, "VmRSS")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        sock.close()
    return ready, rss


def machine() -> str:
    name = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
            break
    return f"{name}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=645.0, help="of audio per input rate")
    ap.add_argument("--core", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-seed", action="store_true", help="skip the TensorFlow comparison")
    ap.add_argument("--child", choices=("stages", "seed", "latency"), help=argparse.SUPPRESS)
    ap.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cycles", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--block-ms", type=int, default=100, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "stages":
        print(json.dumps(child_stages(args.input, args.cycles, args.block_ms)))
        return 0
    if args.child == "seed":
        print(json.dumps(child_seed(args.cycles)))
        return 0
    if args.child == "latency":
        print(json.dumps(child_latency(500)))
        return 0

    from edge.dev.local_broker import LocalBroker

    core = args.core
    print(f"machine: {machine()}; one core (#{core}) per process\n")
    with tempfile.TemporaryDirectory(prefix="lungedge-bench-") as tmp_name:
        tmp = Path(tmp_name)
        inputs = make_inputs(args.seconds, tmp)
        cycles_npz = tmp / "cycles.npz"
        rows = []
        for rate, wav in inputs.items():
            walls, rss = [], 0.0
            for _ in range(args.repeat):
                wall, peak = timed_process(pinned(core, ["-m", "edge", "classify", str(wav),
                                                         "--json"]))
                walls.append(wall)
                rss = max(rss, peak)
            stages = run_child(core, ["--child", "stages", "--input", str(wav),
                                      *(["--cycles", str(cycles_npz)] if rate == 8000
                                        else [])])
            rows.append((rate, statistics.median(walls), rss, stages))

        audio_s = rows[0][3]["audio_s"]
        print(f"pipeline: `lungedge classify FILE --json`, {audio_s:.0f} s of audio "
              f"({rows[0][3]['cycles']} cycles, {rows[0][3]['windows']} model windows), "
              f"median of {args.repeat}")
        print(f"{'input':>9} {'wall s':>7} {'× real time':>12} {'peak RSS MB':>12} "
              f"{'in-process s':>13} {'× real time':>12} {'floor s':>8} {'÷ floor':>8}")
        for rate, wall, rss, st in rows:
            print(f"{rate / 1000:>7g} k {wall:>7.2f} {audio_s / wall:>11.0f}× {rss:>12.0f} "
                  f"{st['total_s']:>13.2f} {audio_s / st['total_s']:>11.0f}× "
                  f"{st['floor_s']:>8.2f} {st['total_s'] / st['floor_s']:>7.2f}×")
        print("\nwhere the in-process time goes (s)")
        names = ("read", "resample", "segment", "frontend", "interpreter", "quality")
        print(f"{'input':>9} " + " ".join(f"{n:>11}" for n in names) + f" {'the rest':>9}")
        for rate, _, _, st in rows:
            spent = st["stages"]
            rest = st["total_s"] - sum(spent.get(n, 0.0) for n in names)
            print(f"{rate / 1000:>7g} k " + " ".join(f"{spent.get(n, 0.0):>11.3f}"
                                                    for n in names) + f" {rest:>9.3f}")
        big = run_child(core, ["--child", "stages", "--input", str(inputs[44100]),
                               "--block-ms", "1000"])
        print(f"44.1 kHz in 1 s blocks instead of the daemon's 100 ms: {big['total_s']:.2f} s "
              f"in-process, {audio_s / big['total_s']:.0f}× real time, "
              f"{big['total_s'] / big['floor_s']:.2f}× the floor (segment "
              f"{big['stages']['segment']:.3f} s, resample {big['stages']['resample']:.3f} s)")
        floor8 = next(st for rate, _, _, st in rows if rate == 8000)
        n8 = floor8["cycles"]
        print(f"\ncompute floor per cycle: frontend {1000 * floor8['floor_frontend_s'] / n8:.2f} "
              f"ms, frontend + interpreter {1000 * floor8['floor_s'] / n8:.2f} ms "
              f"({floor8['runtime']})")

        if not args.no_seed:
            try:
                seed = run_child(core, ["--child", "seed", "--cycles", str(cycles_npz)])
            except subprocess.CalledProcessError as exc:
                print(f"\nseed-style stack skipped: {exc.stderr.strip().splitlines()[-1]} "
                      "(install the convert extra: pip install -e '.[convert]')")
            else:
                ours = floor8["floor_s"] / floor8["cycles"]
                theirs = seed["total_s"] / seed["cycles"]
                rss8 = next(rss for rate, _, rss, _ in rows if rate == 8000)
                print(f"\nseed-style stack on the same {seed['cycles']} cycles "
                      "(librosa features + float Keras ensemble in TensorFlow)")
                print(f"{'':<34} {'ms per cycle':>13} {'peak RSS MB':>12} {'imports s':>10}")
                print(f"{'lungedge (frontend + int8 TFLite)':<34} {1000 * ours:>13.2f} "
                      f"{rss8:>12.0f} {floor8['imports_s']:>10.2f}")
                print(f"{'seed-style':<34} {1000 * theirs:>13.2f} {seed['peak_rss_mb']:>12.0f} "
                      f"{seed['imports_s']:>10.2f}")
                print(f"{'ratio':<34} {theirs / ours:>12.1f}× "
                      f"{seed['peak_rss_mb'] / rss8:>11.1f}×")

        print("\nstart-up (median of "
              f"{args.repeat})")
        sample = sorted((ROOT / "models" / "samples").glob("*.wav"))[0]
        first = statistics.median(first_result_s(core, sample) for _ in range(args.repeat))
        print(f"  lungedge classify → first cycle printed: {first:.2f} s")
        with LocalBroker(tmp) as broker:
            ready = [daemon_ready(core, tmp, broker.port, sample) for _ in range(args.repeat)]
        print(f"  lungedge run → READY: {statistics.median(r for r, _ in ready):.2f} s; "
              f"RSS while running: {statistics.median(m for _, m in ready):.0f} MB")

        print("\ninterpreter: ms per window (best of 5 × 500)")
        for python in (sys.executable, str(TFLITE_PYTHON)):
            if not Path(python).exists():
                print(f"  {python}: missing (make .venv-tflite/.installed)")
                continue
            lat = run_child(core, ["--child", "latency"], python)
            print(f"  {lat['runtime']:<16} {lat['ms_per_window']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
