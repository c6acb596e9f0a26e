"""`edgedepth demo`: the whole pipeline, labels to edge model, on one small data set.

Every step calls the library function behind one CLI command and records that command, so the
report shows how to run the same step by hand. The steps talk through the files they write under
``OUT`` (layout: docs/demo.md). Data: the embedded Middlebury Motorcycle scene (``demo.motorcycle``)
unless ``kitti_root`` names the user's KITTI raw tree; the two ``DemoSettings`` below say what
differs between them (depth range, bin width, sizes, ground truth).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from labelgen.atomic import write_text_atomic
from labelgen.folder import LabelFolder

Log = Callable[[str], None]
PSMNET_FILE = Path("weights") / "pretrained_model_KITTI2015.tar"
"""Where the demo looks for PSMNet when no checkpoint is given (what `labelgen weights ... --out weights` writes)."""


@dataclass(frozen=True)
class DemoSettings:
    """What the demo does with one kind of data. Sizes are (height, width); depths in metres."""

    scene: str
    bin_width: float
    min_depth: float
    max_depth: float
    min_count: int
    train_size: tuple[int, int]
    epochs: int
    iters_per_epoch: int
    batch_size: int
    crop: str
    export_size: tuple[int, int]
    bench_repeats: int = 20


MOTORCYCLE = DemoSettings(
    scene="Middlebury 2014 'Motorcycle' (shipped by scikit-image): an indoor stereo pair 2-5 m deep, "
    "not a KITTI road scene; one frame, so the student is trained and scored on the same image",
    bin_width=0.25, min_depth=1.0, max_depth=8.0, min_count=20,
    train_size=(256, 384), epochs=4, iters_per_epoch=40, batch_size=4, crop="none", export_size=(256, 384),
)  # fmt: skip
KITTI = DemoSettings(
    scene="KITTI raw frames given with --kitti-root",
    bin_width=1.0, min_depth=1.0, max_depth=80.0, min_count=100,
    train_size=(192, 640), epochs=4, iters_per_epoch=40, batch_size=4, crop="garg", export_size=(192, 640),
)  # fmt: skip


@dataclass(frozen=True)
class Figure:
    """A PNG of the report: path relative to the output folder, what it shows, what made it."""

    path: str
    caption: str
    command: str


@dataclass
class Step:
    """One stage of the demo as the report shows it."""

    key: str
    title: str
    command: str
    status: str = "done"  # done | skipped
    seconds: float = 0.0
    text: str = ""
    figures: list[Figure] = field(default_factory=list)
    figures_measured: dict[str, float] = field(default_factory=dict)


@dataclass
class DemoResult:
    """Everything the report needs; also written as OUT/demo.json."""

    out_dir: Path
    data: str
    settings: DemoSettings
    steps: list[Step] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        return data


def _cmd(*parts: object) -> str:
    return "edgedepth " + " ".join(shlex.quote(str(p)) for p in parts)


class _Timer:
    """Times one step, logs its start and end."""

    def __init__(self, result: DemoResult, step: Step, log: Log, number: int, total: int) -> None:
        self.result, self.step, self.log, self.number, self.total = result, step, log, number, total

    def __enter__(self) -> Step:
        self.log(f"[{self.number}/{self.total}] {self.step.title}: {self.step.command}")
        self.started = time.perf_counter()
        return self.step

    def __exit__(self, *exc: object) -> None:
        self.step.seconds = time.perf_counter() - self.started
        self.result.steps.append(self.step)


def run_demo(
    out_dir: str | Path = "demo_out",
    kitti_root: str | Path | None = None,
    split_file: str | Path | None = None,
    psmnet_checkpoint: str | Path | None = None,
    seg_checkpoint: str | Path | None = None,
    seg_options: dict | None = None,
    workers: int = 2,
    device: str = "cpu",
    progress: bool = True,
    log: Log = print,
    settings: DemoSettings | None = None,
) -> DemoResult:
    """Run every stage into ``out_dir`` and write report.html / report.md there; returns the result."""
    from demo.report import write_reports

    if kitti_root is not None and not Path(kitti_root).is_dir():
        raise FileNotFoundError(f"{kitti_root}: KITTI root folder not found")
    if split_file is not None and kitti_root is None:
        raise ValueError("a split file needs the KITTI root it refers to")
    psmnet = _find_psmnet(psmnet_checkpoint)
    if seg_checkpoint is not None and not Path(seg_checkpoint).is_file():
        raise FileNotFoundError(f"{seg_checkpoint}: checkpoint file not found")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = settings or (MOTORCYCLE if kitti_root is None else KITTI)
    result = DemoResult(out_dir, "", settings)
    labels = LabelFolder(out_dir / "labels")
    steps = _Steps(result, labels, kitti_root, split_file, workers, device, progress, log)
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


class _Steps:
    """The demo's stages in order; each records its Step on the result."""

    TOTAL = 11

    def __init__(self, result, labels, kitti_root, split_file, workers, device, progress, log) -> None:
        self.result, self.labels, self.log = result, labels, log
        self.kitti_root, self.split_file = kitti_root, split_file
        self.workers, self.device, self.progress = workers, device, progress
        self.out = result.out_dir
        self.s = result.settings
        self.number = 0
        self.stages: list[str] = []
        self.depth_stages: list[str] = []
        self.teacher = "sgbm"
        self.gt = "annotated"

    def _timed(self, key: str, title: str, command: str) -> _Timer:
        self.number += 1
        return _Timer(self.result, Step(key, title, command), self.log, self.number, self.TOTAL)

    def rel(self, path: Path) -> str:
        return str(Path(path).relative_to(self.out))

    # 1. data
    def data(self) -> None:
        from demo.motorcycle import make_motorcycle_kitti

        if self.kitti_root is not None:
            with self._timed("data", "data", "(your KITTI raw tree)") as step:
                self.root = Path(self.kitti_root)
                self.result.data = f"KITTI raw data at {self.root}"
                step.text = self.result.data
            return
        with self._timed(
            "data", "embedded data in the KITTI layout", "(made by the demo: demo/motorcycle.py)"
        ) as step:
            made = make_motorcycle_kitti(self.out / "data")
            self.root, self.split_file = made.root, made.split_file
            lo, hi = made.depth_range_m
            self.result.data = self.s.scene
            step.text = "\n".join([
                f"{self.rel(made.root)}/: one frame of {made.image_size[1]}x{made.image_size[0]} px in the KITTI layout",
                f"ground truth: {made.gt_pixels} pixels, {lo:.2f}-{hi:.2f} m (proj_depth/groundtruth)",
                f"simulated LiDAR: {made.lidar_points} points sampled from the ground truth along scan lines",
                "  (64 beams across the vertical field of view, a return every 0.2 degrees of azimuth)",
            ])  # fmt: skip

    # 2. plan
    def plan(self) -> None:
        from labelgen.plan import missing_inputs, plan_shards, write_plan

        args = ["labelgen", "plan", "--kitti-root", self.root, "--out", self.labels.given]
        args += ["--split-file", self.split_file] if self.split_file else []
        with self._timed("plan", "plan", _cmd(*args)) as step:
            plan = plan_shards(self.root, split_file=self.split_file, shard_size=8)
            write_plan(plan, self.labels, overwrite=True)
            count, first = missing_inputs(plan)
            step.text = (
                f"{len(plan.frame_ids)} frames in {len(plan.shards)} shard(s); plan {plan.plan_id[:12]}"
            )
            if count:
                step.text += f"\nwarning: {count} frame(s) miss an input file (first: {', '.join(first)})"

    # 3. labels
    def teacher_labels(self, psmnet: Path | None, seg_checkpoint, seg_options: dict) -> None:
        from labelgen.inspect import inspect_labels, write_previews
        from labelgen.run import format_reports, run_stages

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
        command = _cmd("labelgen", "run", self.labels.given, "--stages", ",".join(self.stages),
                       "--workers", self.workers, "--device", self.device) + "".join(f" {e}" for e in extra)  # fmt: skip
        with self._timed("labels", "teacher labels", command) as step:
            reports = run_stages(self.labels, self.stages, workers=self.workers, device=self.device,
                                 stage_options=options, progress=self.progress)  # fmt: skip
            previews = write_previews(self.labels, self.out / "previews")
            step.text = format_reports(reports) + "\n\n" + inspect_labels(self.labels, verify="quick")
            command = _cmd("labelgen", "inspect", self.labels.given, "--png", self.out / "previews")
            frame_stem = self.labels.plan.frame_ids[0].replace("/", "_")
            for path in previews:
                step.figures.append(Figure(self.rel(path), _preview_caption(path.stem, frame_stem), command))
        self.depth_stages = [s for s in ("sgbm", "psmnet") if s in self.stages]
        self.teacher = "psmnet" if "psmnet" in self.stages else "sgbm"
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

    def _skipped(self, key: str, title: str, why: str) -> None:
        self.log(f"  {title}: skipped ({why})")  # not among the numbered steps
        self.result.steps.append(Step(key, title, "", status="skipped", text=why))

    # 4. teachers against the ground truth
    def teachers(self) -> None:
        from demo.teachers import format_scores, frame_groundtruth, score_teachers, side_by_side
        from labelgen.kitti import Frame, read_image

        with self._timed(
            "teachers", "teachers against the ground truth", "(demo only: demo/teachers.py)"
        ) as step:
            scores, kind = score_teachers(self.labels, self.root, self.depth_stages, self.s.max_depth)
            self.gt = "annotated" if "annotated" in kind else "lidar"
            step.text = f"ground truth: {kind}\n" + format_scores(scores)
            for score in scores:
                step.figures_measured[f"{score.stage}_abs_rel"] = score.metrics["abs_rel"]
                step.figures_measured[f"{score.stage}_coverage"] = score.coverage
            frame_id = self.labels.plan.frame_ids[0]
            frame = Frame.from_id(frame_id)
            gt = frame_groundtruth(self.root, frame, self.labels.plan.calibrations[frame.date])
            depth = _first_depths(self.labels, self.depth_stages)
            image = read_image(frame.image_path(self.root))
            self.first_frame = (image, gt, depth)  # the eval breakdown and the overview use them again
            panels = [("input (left image)", image)] + _gt_panel(gt)
            panels += [(f"{stage} teacher", depth[stage]) for stage in self.depth_stages]
            path = side_by_side(self.out / "teachers.png", panels)
            step.figures.append(Figure(self.rel(path), f"{frame_id}: input, ground truth and teacher depth "
                                       "on one colour scale (black: no value)", step.command))  # fmt: skip

    # 5. bias table
    def calib(self) -> None:
        from calib.fit import fit_from_labels, format_lut
        from calib.plot import plot_lut

        s, lut_path, png = self.s, self.out / f"lut_{self.teacher}.json", self.out / f"lut_{self.teacher}.png"
        command = _cmd("calib", "fit", self.labels.given, "--teacher", self.teacher, "--out", lut_path,
                       "--bin-width", s.bin_width, "--min-depth", s.min_depth, "--max-depth", s.max_depth,
                       "--min-count", s.min_count, "--holdout", 0, "--png", png)  # fmt: skip
        with self._timed("calib", "bias table (teacher vs LiDAR)", command) as step:
            lut = fit_from_labels(self.labels, self.teacher, 0.0, bin_width=s.bin_width, min_depth=s.min_depth,
                                  max_depth=s.max_depth, min_count=s.min_count, progress=self.progress)  # fmt: skip
            lut.save(lut_path)
            plot_lut(lut, png)
            text = format_lut(lut).splitlines()
            step.text = "\n".join(text[:3] + ["..."] * (len(text) > 3))
            populated = ~lut.filled
            step.figures_measured["populated_bins"] = int(populated.sum())
            step.figures.append(Figure(self.rel(png), "LiDAR - teacher error per teacher-depth bin, with its "
                                       "confidence band and pixel counts", command))  # fmt: skip
        self.lut = lut_path

    # 6. training
    def train(self) -> None:
        from student.config import ModelConfig, TrainConfig
        from student.train import train

        s, run = self.s, self.out / "run"
        seg = "seg" in self.stages
        config = TrainConfig(labels_dir=str(self.labels.path), out_dir=str(run), teacher=self.teacher,
                             lut=str(self.lut), epochs=s.epochs, iters_per_epoch=s.iters_per_epoch,
                             batch_size=s.batch_size, min_depth=s.min_depth, max_depth=s.max_depth,
                             device=self.device, workers=0, seg_stage="seg" if seg else None)  # fmt: skip
        model = ModelConfig(variant="L", seg=seg, input_size=s.train_size)
        size = f"{s.train_size[1]}x{s.train_size[0]}"
        command = _cmd("student", "train", self.labels.given, "--out", run, "--teacher", self.teacher,
                       "--lut", self.lut, "--epochs", s.epochs, "--iters-per-epoch", s.iters_per_epoch,
                       "--batch-size", s.batch_size, "--size", size, "--min-depth", s.min_depth,
                       "--max-depth", s.max_depth, "--workers", 0, "--device", self.device)  # fmt: skip
        command += "" if seg else " --no-seg"
        with self._timed("train", "student training (short)", command) as step:
            if run.exists():
                import shutil

                shutil.rmtree(run)  # a fresh run each time: the demo is not a resumable job
            done = train(config, model, progress=self.progress, log=self.log)
            step.text = (
                f"{done.epochs} epochs x {s.iters_per_epoch} steps = {done.steps} steps at {size}, batch "
                f"{s.batch_size} (the paper trains 20 epochs x 1000 steps at 1056x320; this is a minutes-long "
                f"run to show the pipeline, not a trained model); best.pt by {done.best_metric} = "
                f"{done.best_value:.4f}"
            )
            step.figures.append(Figure(self.rel(run / "curves.png"), "training curves", command))
        self.checkpoint = run / "best.pt"

    # 7. evaluation
    def evaluate(self) -> None:
        from student.evaluate import evaluate_checkpoint

        split = self.split_file or self._split_from_plan()
        out = self.out / "eval.json"
        command = _cmd("student", "eval", self.checkpoint, "--kitti-root", self.root, "--split", split,
                       "--gt", self.gt, "--crop", self.s.crop, "--device", self.device, "--out", out)  # fmt: skip
        with self._timed("eval", "student against the ground truth", command) as step:
            result = evaluate_checkpoint(self.checkpoint, self.root, split=split, gt=self.gt, crop=self.s.crop,
                                         device=self.device, progress=self.progress)  # fmt: skip
            result.save(out)
            step.figures_measured = {k: float(v) for k, v in result.metrics.items()}
            step.text = result.format_table() + "\n\n" + self._breakdown(step.figures_measured)

    def _breakdown(self, measured: dict[str, float]) -> str:
        """The first frame's Abs Rel where the teacher gave a label and where it gave none."""
        from student.groundtruth import read_annotated

        _, found, depths = self.first_frame
        label = depths[self.teacher]
        prediction = read_annotated(self.prediction.depth16_png)
        if found is None or prediction.shape != found[0].shape or label.shape != found[0].shape:
            return "(no per-pixel breakdown: the first frame has no ground truth at the label size)"
        gt = found[0]
        lines = [f"first frame, Abs Rel of the student by where its {self.teacher} teacher gave a label:"]
        for key, where, what in (("labelled", label > 0, "labelled pixels"),
                                 ("unlabelled", label <= 0, "pixels without a label")):  # fmt: skip
            mask = (gt > 0) & where
            if mask.any():
                abs_rel = float(np.mean(np.abs(prediction[mask] - gt[mask]) / gt[mask]))
                measured[f"abs_rel_{key}"], measured[f"share_{key}"] = abs_rel, float(mask.mean())
                lines.append(f"  {what:<24} {mask.mean():6.1%} of the image   Abs Rel {abs_rel:.3f}")
        lines.append(
            "The student learns only where the teacher gives labels. SGBM leaves occlusions and the left "
            "border unlabelled (there, the scene is outside the right camera's view); a minutes-long run "
            "extrapolates badly into them, and they dominate the mean above."
        )
        return "\n".join(lines)

    def _split_from_plan(self) -> Path:
        path = self.out / "split.txt"
        lines = []
        for frame_id in self.labels.plan.frame_ids:
            folder, index = frame_id.rsplit("/", 1)
            lines.append(f"{folder} {int(index)} l")
        write_text_atomic(path, "\n".join(lines) + "\n")
        return path

    # 8. prediction
    def predict(self) -> None:
        from labelgen.kitti import Frame
        from student.predict import predict_images

        frame = Frame.from_id(self.labels.plan.frame_ids[0])
        image, out = frame.image_path(self.root), self.out / "predict"
        command = _cmd("student", "predict", self.checkpoint, image, "--out", out, "--device", self.device)
        with self._timed("predict", "student prediction", command) as step:
            done = predict_images(self.checkpoint, [image], out, device=self.device, progress=self.progress)
            first = done[0]
            step.text = (
                f"{image.name}: depth {first.depth_min:.2f} / {first.depth_median:.2f} / {first.depth_max:.2f} m "
                "(min / median / max)"
            )
            step.figures.append(
                Figure(self.rel(first.depth_png), "student depth (colour, metre scale)", command)
            )
            if first.classes_png is not None:
                step.figures.append(Figure(self.rel(first.classes_png), "student class map", command))
            self.prediction = first

    # 9. export
    def export(self) -> None:
        from student.export import export_onnx

        s, out = self.s, self.out / "export"
        size = f"{s.export_size[1]}x{s.export_size[0]}"
        command = _cmd("student", "export", self.checkpoint, "--out", out, "--variants", "L,XS", "--size", size,
                       "--precision", "fp32,int8", "--calib-labels", self.labels.given)  # fmt: skip
        with self._timed("export", "ONNX export (FP32, INT8) with parity checks", command) as step:
            manifest = export_onnx(self.checkpoint, out, variants=("L", "XS"), size=s.export_size,
                                   precisions=("fp32", "int8"), calib_labels=self.labels.path,
                                   progress=self.progress)  # fmt: skip
            step.text = manifest.format_table()
        self.export_dir = out

    # 10. benchmark
    def bench(self) -> None:
        from student.speed import bench_variants

        out = self.out / "bench.json"
        command = _cmd("student", "bench", self.export_dir, "--variants", "L,XS", "--precision", "fp32,int8",
                       "--repeats", self.s.bench_repeats, "--out", out)  # fmt: skip
        with self._timed("bench", "speed on this machine", command) as step:
            result = bench_variants(self.export_dir, variants=("L", "XS"), precisions=("fp32", "int8"),
                                    repeats=self.s.bench_repeats, memory=False, progress=self.progress)  # fmt: skip
            result.save_json(out)
            result.plot(out.with_suffix(".png"))
            step.text = result.format_table()
            step.figures.append(
                Figure(self.rel(out.with_suffix(".png")), "frames per second, batch 1", command)
            )

    # 11. the picture at the top of the report
    def overview(self) -> None:
        from demo.teachers import side_by_side
        from student.groundtruth import read_annotated

        with self._timed("overview", "overview figure", "(demo only: demo/teachers.py)") as step:
            image, gt, depths = self.first_frame
            panels = [("input (left image)", image)] + _gt_panel(gt)
            panels += [(f"{self.teacher} teacher (the student's labels)", depths[self.teacher]),
                       ("student (L, short training)", read_annotated(self.prediction.depth16_png))]  # fmt: skip
            path = side_by_side(self.out / "overview.png", panels)
            step.figures.append(Figure(self.rel(path), "input, ground truth, teacher label, student prediction",
                                       step.command))  # fmt: skip


def _gt_panel(found: tuple[np.ndarray, str] | None) -> list[tuple[str, np.ndarray]]:
    return [] if found is None else [(f"ground truth ({found[1]})", found[0])]


def _first_depths(labels: LabelFolder, stages: list[str]) -> dict[str, np.ndarray]:
    from labelgen.shards import LabelReader

    reader = LabelReader(labels, stages)
    try:
        item = reader[0]
    finally:
        reader.close()
    return {s: np.asarray(item[f"{s}/depth"], dtype=np.float32) for s in stages}


def _preview_caption(stem: str, frame_stem: str) -> str:
    """What a `labelgen inspect --png` file shows, from its name ``<frame>_<stage>_<dataset>``."""
    what = stem.removeprefix(frame_stem + "_")
    if what == "lidar_overlay":
        return "LiDAR points over the left image, coloured by depth"
    stage, _, dataset = what.partition("_")
    return f"label preview: {stage}/{dataset}"


__all__ = ["KITTI", "MOTORCYCLE", "DemoResult", "DemoSettings", "Figure", "Step", "run_demo"]
