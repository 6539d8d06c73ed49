"""The `lungedge` command: offline classification, config checking and device listing.

Every failure a user can cause (a bad config, an unreadable recording, a missing device) ends
in one line on stderr saying what and where, and a non-zero exit; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from edge import __version__
from edge.cli import model as model_cli
from edge.dsp.frontend import FrontendParams
from edge.loader import ConfigError, yaml_lines
from edge.pipeline.plot import PlotError
from edge.service.config import DEFAULT_CONFIG_PATH, Config, load_config
from edge.sources import open_source
from edge.sources.base import SourceError
from edge.sources.file import FileSource
from edge.sources.stdin import StdinSource

EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if not args.verbose else logging.DEBUG,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (ConfigError, SourceError) as exc:
        print(f"lungedge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `lungedge classify … | head`: the reader has gone, so be quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lungedge", description="Streaming lung-sound classifier.")
    p.add_argument("--version", action="version", version=f"lungedge {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    c = sub.add_parser("classify", help="segment and analyse recordings offline",
                       description="Run the device's analysis path (resample → cycle segmenter "
                                   "→ features → model → alerts and sessions) over recordings "
                                   "and print one row per cycle and every session's summary.")
    c.add_argument("files", nargs="*", type=Path, metavar="FILE",
                   help="WAV or FLAC; '-' reads raw s16le from standard input (see --rate); "
                        "none: the source configured by --config (e.g. a live stethoscope)")
    c.add_argument("--seconds", type=float, default=None,
                   help="stop after this much audio (useful with a live source)")
    c.add_argument("--rate", type=int, default=8000,
                   help="sample rate of raw audio on standard input, Hz (default 8000)")
    c.add_argument("--channels", type=int, default=1,
                   help="interleaved channels of raw audio on standard input (default 1)")
    c.add_argument("--config", type=Path,
                   help="take the source (when no FILE is given) and the alert rules from this "
                        "config")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.add_argument("--model", type=Path, help="model package folder (default: the config's "
                                              "model.path, else the shipped model)")
    c.add_argument("--segments-only", action="store_true",
                   help="only cut the audio into breathing cycles; no model")
    c.add_argument("--plot", type=Path, metavar="PNG",
                   help="waveform and spectrogram with cycles shaded by label")
    c.set_defaults(func=cmd_classify)

    c.add_argument("--calibration", type=Path, metavar="JSON",
                   help="the stethoscope's calibration (default: the config's "
                        "model.calibration)")

    b = sub.add_parser("calibrate", help="learn a new stethoscope's input statistics",
                       description="Record a few minutes of chest audio with the stethoscope "
                                   "(several patients if you can; no labels needed), then: "
                                   "its breathing cycles' feature statistics, written to OUT "
                                   "for model.calibration. Only for a model trained with "
                                   "normalise: stethoscope (its manifest says).")
    b.add_argument("files", nargs="*", type=Path, metavar="FILE",
                   help="WAV or FLAC recorded with the stethoscope; none: the source "
                        "configured by --config, live")
    b.add_argument("--out", type=Path, required=True, metavar="JSON",
                   help="where to write it, e.g. /var/lib/lungedge/calibration.json")
    b.add_argument("--stethoscope", required=True,
                   help="what you call it (model and place), kept in the file")
    b.add_argument("--config", type=Path, help="the source (with no FILE)")
    b.add_argument("--model", type=Path, help="model package folder (default: the config's "
                                              "model.path, else the shipped model)")
    b.add_argument("--seconds", type=float, default=300.0,
                   help="with a live source: how much audio to take (default 300)")
    b.set_defaults(func=cmd_calibrate)

    k = sub.add_parser("check-config", help="validate a config file without starting",
                       description="Exit 0 if the config is valid, else print where and why.")
    k.add_argument("file", type=Path, nargs="?", default=None)
    k.add_argument("--config", type=Path, default=None, help="the same as FILE (what other "
                   "commands take)")
    k.set_defaults(func=cmd_check_config)

    d = sub.add_parser("devices", help="list audio input devices (pyaudio)")
    d.set_defaults(func=cmd_devices)

    r = sub.add_parser("run", help="the daemon: classify the configured source, publish MQTT",
                       description="Runs until the source ends or SIGTERM; SIGHUP reloads.")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    r.set_defaults(func=cmd_run)

    e = sub.add_parser("demo", help="the daemon on a shipped sample, messages shown live",
                       description="Starts a private Mosquitto, a station and the daemon.")
    e.add_argument("--sample", type=Path, help="recording to play (default: a shipped one)")
    e.add_argument("--model", type=Path, help="model package (default: the shipped one)")
    e.add_argument("--fast", action="store_true", help="do not pace the recording")
    e.add_argument("--station", action="store_true",
                   help="also run the station (web UI) on the demo's broker until Ctrl-C; "
                        "needs lungedge[station]")
    e.set_defaults(func=cmd_demo)

    m = sub.add_parser("monitor", help="the station side: print what devices publish",
                       description="Subscribes to PREFIX/+/+ and prints one line per message.")
    m.add_argument("--host", default="localhost")
    m.add_argument("--port", type=int, default=1883)
    m.add_argument("--prefix", default="lungedge")
    m.add_argument("--json", action="store_true", help="print each payload as it came")
    m.add_argument("--until-offline", action="store_true",
                   help="exit when a device publishes status offline")
    m.set_defaults(func=cmd_monitor)
    model_cli.add_parser(sub)
    for command in entry_points(group="lungedge.commands"):  # e.g. `station`, when installed
        command.load()(sub)
    return p


def cmd_run(args: argparse.Namespace) -> int:
    from edge import checks
    from edge.pipeline.model import ModelError
    from edge.service import preflight
    from edge.service.daemon import Daemon

    cfg = load_config(args.config)
    logging.getLogger().setLevel(cfg.log_level.upper())
    text = Path(args.config).read_text(encoding="utf-8")
    lines = yaml_lines(text)
    found = preflight.problems(cfg)
    for problem in found:  # the daemon runs degraded on these, and says so
        if not problem.fatal:
            logging.getLogger("lungedge").warning("%s", problem.located(str(args.config),
                                                                        lines))
    fatal = [p for p in found if p.fatal]
    if fatal:
        for problem in fatal:
            print(f"lungedge: error: {problem.located(str(args.config), lines)}",
                  file=sys.stderr)
        return EXIT_USAGE
    try:
        daemon = Daemon(cfg, args.config)
    except ModelError as exc:
        where = checks.Problem("model.path", str(exc), fatal=True)
        print(f"lungedge: error: {where.located(str(args.config), lines)}", file=sys.stderr)
        return EXIT_USAGE
    code = daemon.run()
    if daemon.capture_stuck:
        # Everything is flushed and closed, but a thread blocked in read() on a silent pipe
        # would make the interpreter's own shutdown abort: leave without it.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.dev import demo

    return demo.demo(args.sample or demo.DEFAULT_SAMPLE, args.model or demo.DEFAULT_MODEL,
                     fast=args.fast, station=args.station)


def cmd_monitor(args: argparse.Namespace) -> int:
    from edge.cli.monitor import monitor

    return monitor(args.host, args.port, args.prefix, as_json=args.json,
                   until_offline=args.until_offline)


def cmd_check_config(args: argparse.Namespace) -> int:
    from edge.service import preflight

    if args.file and args.config and args.file != args.config:
        raise ConfigError(f"two configs given ({args.file} and --config {args.config}): "
                          "check one at a time")
    args.file = args.file or args.config or DEFAULT_CONFIG_PATH
    cfg = load_config(args.file)
    found = preflight.report(cfg, str(args.file), Path(args.file).read_text(encoding="utf-8"))
    for line in found:
        print(line, file=sys.stderr)
    if found:
        return EXIT_USAGE
    print(f"{args.file}: OK (device_id={cfg.device_id}, source={cfg.source.type}; the files "
          "it names are there)")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from edge.sources.sound_card import list_input_devices

    devices = list_input_devices()
    if not devices:
        print("no audio input devices found (is the stethoscope plugged in? `arecord -l` lists "
              "what ALSA sees)")
        return 1
    print(f"{'index':>5}  {'channels':>8}  {'default Hz':>10}  {'host API':<12}  name")
    for dev in devices:
        print(f"{dev.index:>5}  {dev.max_input_channels:>8}  {dev.default_sample_rate:>10.0f}"
              f"  {dev.host_api:<12}  {dev.name}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from edge.pipeline.calibration import CalibrationError, calibrate, save
    from edge.pipeline.model import load_manifest
    from edge.pipeline.signal_path import run_signal_path
    from edge.service.model_store import ModelStore, package_to_run

    cfg = load_config(args.config) if args.config else Config()
    if not args.files and not args.config:
        raise SourceError("give recordings made with the stethoscope, or --config FILE to "
                          "record from the source it configures")
    model_path = args.model or package_to_run(cfg.model.path, ModelStore(Path(cfg.model.store)))
    if model_path is None:
        raise SourceError("no model package found: pass --model DIR")
    manifest = load_manifest(Path(model_path))
    if manifest.normalise != "stethoscope":
        print(f"lungedge: error: model {manifest.name} {manifest.version} ({model_path}) "
              "standardises its input with its own training statistics and takes no "
              "calibration (its manifest's normalise is not 'stethoscope')", file=sys.stderr)
        return EXIT_USAGE
    feats, audio_s = [], 0.0
    for name in args.files or [None]:
        source = open_source(cfg.source) if name is None else FileSource(
            name, block_ms=cfg.source.block_ms)
        taken = 0.0
        live = name is None

        def blocks(source: Any = source, live: bool = live) -> Any:
            nonlocal taken
            for block in source.blocks():
                taken = block.start_s + block.duration_s
                yield block
                if live and taken >= args.seconds:
                    return

        feats += [c.features for c in run_signal_path(blocks(), source.sample_rate,
                                                       manifest.frontend, manifest.segmenter)]
        audio_s += taken
    try:
        calibration = calibrate(feats, manifest.frontend, args.stethoscope, audio_s,
                                f"{manifest.name} {manifest.version}")
    except CalibrationError as exc:
        print(f"lungedge: error: {exc}", file=sys.stderr)
        return 1
    save(calibration, args.out)
    print(f"{args.out}: {args.stethoscope}, {calibration.cycles} cycles from "
          f"{audio_s:.0f} s of audio; set model.calibration: {args.out} in the config")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from edge.cli.classify import classify_source
    from edge.pipeline.model import ModelError, ModelRunner
    from edge.pipeline.recording import JSON_SCHEMA_VERSION
    from edge.service.model_store import ModelStore, package_to_run

    cfg = load_config(args.config) if args.config else Config()
    if not args.files and not args.config:
        raise SourceError("give recordings to classify, '-' for raw audio on standard input, "
                          "or --config FILE to read the source it configures")
    if any(str(f) == "-" for f in args.files):  # a usage error, before any file is read
        StdinSource(args.rate, channels=args.channels, stream=io.BytesIO())
    if args.plot:  # before the work, not after it
        from edge.pipeline.plot import pyplot

        try:
            pyplot()
        except PlotError as exc:
            print(f"lungedge: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    runner = None
    if not args.segments_only:
        model_path = args.model or package_to_run(cfg.model.path,
                                                  ModelStore(Path(cfg.model.store)))
        if model_path is None:
            raise SourceError("no model package found: pass --model DIR (a folder with "
                              "manifest.json and its .tflite files), or --segments-only")
        try:
            runner = ModelRunner(model_path, cfg.model.num_threads,
                                 args.calibration or cfg.model.calibration,
                                 trusted_keys=cfg.model.trusted_keys)
        except ModelError as exc:
            print(f"lungedge: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    reports: list[dict[str, Any]] = []
    failed = 0
    for name in args.files or [None]:
        try:
            if name is None:
                source = open_source(cfg.source)
            elif str(name) == "-":
                source = StdinSource(args.rate, channels=args.channels,
                                     block_ms=cfg.source.block_ms)
            else:
                source = FileSource(name, block_ms=cfg.source.block_ms)
            label = str(name) if name is not None else source.describe()
            plot = None
            if args.plot:
                plot = args.plot if len(args.files) <= 1 else args.plot.with_name(
                    f"{args.plot.stem}-{Path(label).stem}{args.plot.suffix}")
            reports.append(classify_source(label, source, runner, cfg.tracker,
                                           seconds=args.seconds,
                                           plot=plot, quiet=args.json))
        except (SourceError, ValueError, PlotError) as exc:
            print(f"lungedge: error: {exc}", file=sys.stderr)
            failed += 1
    if args.json:
        m = runner.manifest if runner else None
        json.dump({"schema_version": JSON_SCHEMA_VERSION,
                   "frontend": (m.frontend if m else FrontendParams()).to_dict(),
                   "model": {"name": m.name, "version": m.version} if m else None,
                   "files": reports}, sys.stdout, indent=2)
        print()
    return 1 if failed else 0
