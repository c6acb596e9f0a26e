"""`edgedepth demo`: the whole pipeline, labels to edge model, on one small data set.

Every step calls the library function behind one CLI command and records that command, so the
report shows how to run the same step by hand. The steps talk through the files they write under
``OUT`` (layout: docs/demo.md). Data: the embedded Middlebury Motorcycle scene, written as a rig
tree (``edgedepth.demo.motorcycle``), unless ``data_root`` names the user's own tree (rig or KITTI raw layout,
detected). ``edgedepth.demo.result`` holds the settings per kind of data; ``edgedepth.demo.scoring`` the steps that
compare with the ground truth and make the figures.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import warnings
from pathlib import Path

from edgedepth.common import write_text_atomic
from edgedepth.demo.result import (
    KITTI,
    MOTORCYCLE,
    RIG,
    DemoResult,
    DemoSettings,
    Figure,
    Log,
    Step,
    command,
    contention_warning,
    machine_line,
    quick_settings,
)
from edgedepth.demo.reuse import StepStamps, file_digest, file_stat, tree_stat
from edgedepth.demo.scoring import ScoringSteps
from edgedepth.labelgen import LabelFolder

PSMNET_FILE = Path("weights") / "pretrained_model_KITTI2015.tar"
"""Where the demo looks for PSMNet when no checkpoint is given (what `labelgen weights ... --out weights` writes)."""


def run_demo(
    out_dir: str | Path = "demo_out",
    data_root: str | Path | None = None,
    split_file: str | Path | None = None,
    psmnet_checkpoint: str | Path | None = None,
    seg_checkpoint: str | Path | None = None,
    seg_options: dict | None = None,
    workers: int = 2,
    device: str = "cpu",
    progress: bool = True,
    log: Log = print,
    settings: DemoSettings | None = None,
    layout: str | None = None,
    kitti_root: str | Path | None = None,
    quick: bool = False,
    fresh: bool = False,
) -> DemoResult:
    """Run every stage into ``out_dir`` and write report.html / report.md there; returns the result.

    ``data_root``: the user's rig or KITTI raw tree (``layout`` None: detected), ``split_file`` its
    frames (rig: ``<sequence>/<frame>`` lines; KITTI: a monodepth2 split); None: the embedded
    Motorcycle scene. ``kitti_root`` is the deprecated name of ``data_root``. ``settings`` None:
    ``MOTORCYCLE``, ``KITTI`` or ``RIG`` by the data; depth ranges left None come from calib.json.
    ``quick``: ``quick_settings`` of those (a shorter training at a smaller size, L only, fewer
    bench runs). Steps an earlier run finished with the same inputs and settings are reused
    (``edgedepth.demo.reuse``; their status is "reused"); ``fresh`` redoes every step.
    """
    from edgedepth.demo.report import write_reports
    from edgedepth.labelgen import detect_layout

    if kitti_root is not None:
        if data_root is not None:
            raise ValueError("give data_root or its deprecated name kitti_root, not both")
        warnings.warn(
            "run_demo(kitti_root=...) is deprecated; use data_root=", DeprecationWarning, stacklevel=2
        )
        data_root = kitti_root  # the layout is still detected: a rig tree works under the old name too
    if data_root is not None and not Path(data_root).is_dir():
        raise FileNotFoundError(f"{data_root}: data root folder not found")
    if split_file is not None and data_root is None:
        raise ValueError("a split file needs the data root it refers to")
    if split_file is not None and not Path(split_file).is_file():
        raise FileNotFoundError(f"{split_file}: split file not found")
    psmnet = _find_psmnet(psmnet_checkpoint)
    if seg_checkpoint is not None and not Path(seg_checkpoint).is_file():
        raise FileNotFoundError(f"{seg_checkpoint}: checkpoint file not found")
    if data_root is not None:
        layout = layout or detect_layout(data_root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if settings is None:
        settings = MOTORCYCLE if data_root is None else KITTI if layout == "kitti" else RIG
    if quick:
        settings = quick_settings(settings)
    result = DemoResult(out_dir, "", settings, layout=layout or "rig")
    labels = LabelFolder(out_dir / "labels")
    root = None if data_root is None else Path(data_root)
    split = None if split_file is None else Path(split_file)
    steps = _Steps(result, labels, root, split, workers, device, progress, log, StepStamps(out_dir, fresh))
    steps.data()
    steps.plan()
    steps.teacher_labels(psmnet, seg_checkpoint, seg_options or {})
    steps.teachers()
    steps.calib()
    steps.train()
    steps.predict()
    steps.evaluate()
    steps.export()
    steps.bench()
    steps.overview()
    reused = [s.title for s in result.steps if s.status == "reused"]
    if reused:
        log(f"reused {len(reused)} finished step(s) of an earlier run with the same inputs and settings: "
            f"{', '.join(reused)} (--fresh redoes them)")  # fmt: skip
    result.counts = {"plan_reads": labels.plan_reads, "status_checks": labels.status_checks}
    write_text_atomic(out_dir / "demo.json", json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    write_reports(result)
    return result


def _find_psmnet(checkpoint: str | Path | None) -> Path | None:
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"{checkpoint}: checkpoint file not found")
        return Path(checkpoint)
    return PSMNET_FILE if PSMNET_FILE.is_file() else None


class _Steps(ScoringSteps):
    """The demo's stages in order; each records its Step on the result."""

    lut: Path
    export_dir: Path

    # 1. data
    def data(self) -> None:
        from edgedepth.demo.motorcycle import make_motorcycle

        if self.root is not None:
            kind = "KITTI raw" if self.layout == "kitti" else "rig-layout"
            self.result.data = f"{kind} data at {self.root}"
            tree = {
                "root": self.root.resolve(),
                "layout": self.layout,
                "files": tree_stat(self.root, self.out),
            }
            if self._reused("data", tree, ()):  # the same files as last time: the later steps may be reused
                return
            with self._timed("data", "data", f"(your {self.layout} tree)") as step:
                step.text = self.result.data
            return
        self.root = self.out / "data"
        self.result.data = self.result.settings.scene
        maker = {"maker": file_digest(Path(__file__).with_name("motorcycle.py"))}
        if self._reused("data", maker, (), (self.root / "motorcycle" / "calib.json",)):
            return
        with self._timed(
            "data", "embedded data in the rig layout", "(made by the demo: demo/motorcycle.py)"
        ) as step:
            made = make_motorcycle(self.out / "data")
            self.root = made.root
            lo, hi = made.gt_range_m
            self.result.data = self.result.settings.scene
            step.text = "\n".join([
                f"{self.rel(made.root)}/: one frame ({made.frame_id}) of {made.image_size[1]}x{made.image_size[0]} px "
                "in the rig layout (docs/rig.md): the pair as shipped, depth = fx * B / (d + doffs_px)",
                f"ground truth: {made.gt_pixels} pixels, {lo:.2f}-{hi:.2f} m (depth_gt); calib.json declares "
                f"depth_range_m {made.depth_range_m[0]:g}-{made.depth_range_m[1]:g} m",
                f"simulated LiDAR: {made.lidar_points} points sampled from the ground truth along scan lines",
                "  (64 beams across the vertical field of view, a return every 0.2 degrees of azimuth)",
            ])  # fmt: skip

    # 2. plan
    def plan(self) -> None:
        from edgedepth.labelgen import missing_inputs, plan_shards, write_plan

        args = ["labelgen", "plan", "--data-root", self.root, "--out", self.labels.given]
        args += ["--split-file", self.split_file] if self.split_file else []
        settings = {"layout": self.layout, "split": file_digest(self.split_file), "shard_size": 8}
        if self._reused("plan", settings, ("data",), (self.labels.path / "plan.json",)):
            self.result.settings = self.result.settings.resolved(self.labels.plan.depth_range())
            return
        with self._timed("plan", "plan", command(*args)) as step:
            plan = plan_shards(self.root, layout=self.layout, split_file=self.split_file, shard_size=8)
            write_plan(plan, self.labels, overwrite=True)
            count, first = missing_inputs(plan)
            self.result.settings = self.result.settings.resolved(plan.depth_range())
            s = self.result.settings
            step.text = (
                f"{len(plan.frame_ids)} frames in {len(plan.shards)} shard(s) ({plan.layout} layout); "
                f"plan {plan.plan_id[:12]}\ndepth range {s.min_depth:g}-{s.max_depth:g} m ({s.depth_source})"
            )
            if count:
                step.text += f"\nwarning: {count} frame(s) miss an input file (first: {', '.join(first)})"

    # 3. labels
    def teacher_labels(self, psmnet: Path | None, seg_checkpoint: Path | None, seg_options: dict) -> None:
        self.stages = ["images", "lidar", "sgbm"]
        options: dict[str, dict] = {"lidar": {"cams": [2]}, "sgbm": {}}
        if psmnet is not None:
            self.stages.append("psmnet")
            options["psmnet"] = {"checkpoint": str(psmnet)}
        if seg_checkpoint is not None:
            self.stages.append("seg")
            options["seg"] = {"checkpoint": str(seg_checkpoint), **seg_options}
        extra = [f"--psmnet-checkpoint {psmnet}"] * (psmnet is not None)
        extra += [f"--seg-checkpoint {seg_checkpoint}"] * (seg_checkpoint is not None)
        line = command("labelgen", "run", self.labels.given, "--stages", ",".join(self.stages),
                       "--workers", self.workers, "--device", self.device) + "".join(f" {e}" for e in extra)  # fmt: skip
        self.depth_stages = [s for s in ("sgbm", "psmnet") if s in self.stages]
        self.teacher = "psmnet" if "psmnet" in self.stages else "sgbm"
        settings = {"stages": self.stages, "options": {k: v for k, v in options.items() if k != "psmnet"},
                    "psmnet": file_stat(psmnet), "seg": file_stat(seg_checkpoint)}  # fmt: skip
        if not self._reused("labels", settings, ("plan",), (self.labels.path / "plan.json",)):
            self._labels(line, options)
        self._skip_notes(psmnet, seg_checkpoint)

    def _labels(self, line: str, options: dict) -> None:
        from edgedepth.labelgen import format_reports, inspect_labels, run_stages, write_previews

        with self._timed("labels", "teacher labels", line) as step:
            reports = run_stages(self.labels, self.stages, workers=self.workers, device=self.device,
                                 stage_options=options, progress=self.progress)  # fmt: skip
            previews = write_previews(self.labels, self.out / "previews")
            step.text = format_reports(reports) + "\n\n" + inspect_labels(self.labels, verify="quick")
            inspect = command("labelgen", "inspect", self.labels.given, "--png", self.out / "previews")
            frame_stem = self.labels.plan.frame_ids[0].replace("/", "_")
            for path in previews:
                step.figures.append(Figure(self.rel(path), _preview_caption(path.stem, frame_stem), inspect))

    def _skip_notes(self, psmnet: Path | None, seg_checkpoint: Path | None) -> None:
        if psmnet is None:
            self._skipped(
                "psmnet", "PSMNet teacher",
                "no checkpoint: get it with `edgedepth labelgen weights psmnet-kitti2015 --out weights` "
                "(the demo then finds weights/pretrained_model_KITTI2015.tar), or pass --psmnet-checkpoint FILE",
            )  # fmt: skip
        if seg_checkpoint is None:
            self._skipped(
                "seg", "segmentation teacher",
                "no checkpoint given (pass --seg-checkpoint FILE; supported files: docs/teachers.md); "
                "the student is trained for depth only",
            )  # fmt: skip

    # 5. bias table
    def calib(self) -> None:
        from edgedepth.calib import fit_from_labels, format_lut, plot_lut

        s = self.result.settings
        lut_path, png = self.out / f"lut_{self.teacher}.json", self.out / f"lut_{self.teacher}.png"
        line = command("calib", "fit", self.labels.given, "--teacher", self.teacher, "--out", lut_path,
                       "--bin-width", s.bin_width, "--min-depth", s.min_depth, "--max-depth", s.max_depth,
                       "--min-count", s.min_count, "--holdout", 0, "--png", png)  # fmt: skip
        self.lut = lut_path
        settings = {"teacher": self.teacher, "bins": [s.bin_width, s.min_depth, s.max_depth, s.min_count]}
        if self._reused("calib", settings, ("labels",), (lut_path,)):
            return
        with self._timed("calib", "bias table (teacher vs LiDAR)", line) as step:
            lut = fit_from_labels(self.labels, self.teacher, 0.0, bin_width=s.bin_width, min_depth=s.min_depth,
                                  max_depth=s.max_depth, min_count=s.min_count, progress=self.progress)  # fmt: skip
            lut.save(lut_path)
            plot_lut(lut, png)
            text = format_lut(lut).splitlines()
            step.text = "\n".join(text[:3] + ["..."] * (len(text) > 3))
            step.figures_measured["populated_bins"] = int((~lut.filled).sum())
            step.figures.append(Figure(self.rel(png), "LiDAR - teacher error per teacher-depth bin, with its "
                                       "confidence band and pixel counts", line))  # fmt: skip

    # 6. training
    def train(self) -> None:
        from edgedepth.student.model import ModelConfig, TrainConfig
        from edgedepth.student.train import train

        s, run = self.result.settings, self.out / "run"
        seg = "seg" in self.stages
        config = TrainConfig(labels_dir=str(self.labels.path), out_dir=str(run), teacher=self.teacher,
                             lut=str(self.lut), epochs=s.epochs, iters_per_epoch=s.iters_per_epoch,
                             batch_size=s.batch_size, device=self.device, workers=0,
                             seg_stage="seg" if seg else None, crop_zoom=s.crop_zoom)  # fmt: skip
        model = ModelConfig(variant="L", seg=seg, input_size=s.train_size)
        size = f"{s.train_size[1]}x{s.train_size[0]}"
        line = command("student", "train", self.labels.given, "--out", run, "--teacher", self.teacher,
                       "--lut", self.lut, "--epochs", s.epochs, "--iters-per-epoch", s.iters_per_epoch,
                       "--batch-size", s.batch_size, "--size", size, "--workers", 0, "--device", self.device,
                       "--crop-zoom", s.crop_zoom)  # fmt: skip
        line += "" if seg else " --no-seg"
        self.checkpoint = run / "best.pt"
        settings = {"config": config, "model": model, "size": s.train_size}
        if self._reused("train", settings, ("labels", "calib"), (self.checkpoint,)):
            return
        with self._timed("train", "student training (short)", line) as step:
            if run.exists():
                shutil.rmtree(run)  # settings or inputs changed (or --fresh): nothing of the old run is kept
            done = train(config, model, progress=self.progress, log=self.log)
            step.text = (
                f"{done.epochs} epochs x {s.iters_per_epoch} steps = {done.steps} steps at {size}, batch "
                f"{s.batch_size} (the paper trains 20 epochs x 1000 steps at 1056x320; this is a minutes-long "
                f"run to show the pipeline, not a trained model); random crops of up to 1/{s.crop_zoom:g} of each "
                f"side, so that one frame does not teach the network where things are (without them it draws "
                f"far stripes at the borders of other images); labels and log-depth range: "
                f"{s.min_depth:g}-{s.max_depth:g} m ({s.depth_source}); best.pt by {done.best_metric} = "
                f"{done.best_value:.4f}"
            )
            step.figures.append(Figure(self.rel(run / "curves.png"), "training curves", line))

    # 9. export
    def export(self) -> None:
        from edgedepth.student.deploy import export_onnx

        s, out = self.result.settings, self.out / "export"
        size = f"{s.export_size[1]}x{s.export_size[0]}"
        variants, precisions = ",".join(s.variants), ",".join(s.precisions)
        line = command("student", "export", self.checkpoint, "--out", out, "--variants", variants, "--size", size,
                       "--precision", precisions, "--calib-labels", self.labels.given)  # fmt: skip
        self.export_dir = out
        settings = {"size": s.export_size, "variants": s.variants, "precisions": s.precisions}
        if self._reused("export", settings, ("train",), (out / "manifest.json",)):
            return
        if out.exists():
            shutil.rmtree(out)  # no file of another checkpoint or size is left beside the new ones
        title = f"ONNX export ({', '.join(p.upper() for p in s.precisions)}) with parity checks"
        with self._timed("export", title, line) as step:
            manifest = export_onnx(self.checkpoint, out, variants=s.variants, size=s.export_size,
                                   precisions=s.precisions, calib_labels=self.labels.path,
                                   progress=self.progress)  # fmt: skip
            step.text = manifest.format_table()

    # 10. benchmark
    def bench(self) -> None:
        from edgedepth.student.deploy import bench_variants

        s, out = self.result.settings, self.out / "bench.json"
        line = command("student", "bench", self.export_dir, "--variants", ",".join(s.variants), "--precision",
                       ",".join(s.precisions), "--repeats", s.bench_repeats, "--out", out)  # fmt: skip
        settings = {"repeats": s.bench_repeats, "variants": s.variants, "precisions": s.precisions}
        if self._reused("bench", settings, ("export",), (out,)):
            return
        with self._timed("bench", "speed on this machine", line) as step:
            result = bench_variants(self.export_dir, variants=s.variants, precisions=s.precisions,
                                    repeats=s.bench_repeats, memory=False, progress=self.progress)  # fmt: skip
            result.save_json(out)
            machine = machine_line(s.export_size, result.settings.get("threads"))
            warning = contention_warning(result.rows)
            title = ["frames per second, batch 1", machine, *textwrap.wrap(warning, 90)]
            result.plot(out.with_suffix(".png"), title="\n".join(title))
            step.text = "\n".join([f"measured on {machine}", result.format_table(), warning]).strip()
            caption = f"frames per second, batch 1, on {machine}" + (f". {warning}" if warning else "")
            step.figures.append(Figure(self.rel(out.with_suffix(".png")), caption, line))


def _preview_caption(stem: str, frame_stem: str) -> str:
    """What a `labelgen inspect --png` file shows, from its name ``<frame>_<stage>_<dataset>``."""
    what = stem.removeprefix(frame_stem + "_")
    if what == "lidar_overlay":
        return "LiDAR points over the left image, coloured by depth"
    stage, _, dataset = what.partition("_")
    return f"label preview: {stage}/{dataset}"


__all__ = ["KITTI", "MOTORCYCLE", "RIG", "DemoResult", "DemoSettings", "Figure", "Step", "run_demo"]
