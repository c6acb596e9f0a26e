"""The demo's steps against the ground truth and the figures they make: teachers vs ground truth,
the student's prediction and evaluation, and the overview picture.

Ground truth and its protocol come from the student package (``edgedepth.student.evaluate.frames.EvalSet``): for
rig data the sequence's ``depth_gt`` (else its LiDAR) within calib.json's depth range, no crop; for
KITTI the annotated depth map when the tree has one (else the raw scan), Garg crop, 80 m.
``ScoringSteps`` also holds what every step shares (the result, the label folder, the data root);
``edgedepth.demo.pipeline`` adds the other steps.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from edgedepth.common import write_text_atomic
from edgedepth.demo.result import DemoResult, Figure, Log, Step, StepTimer, command
from edgedepth.demo.reuse import StepStamps, step_from_stamp
from edgedepth.labelgen import LabelFolder, frame_from_id, read_depth_png
from edgedepth.student.evaluate import EvalFrame, EvalSet

NO_DATA = "a pixel without a value has its own colour, off the depth scale"
"""How the captions describe a pixel without a value in the depth panels (``edgedepth.demo.teachers``
draws them): no colour is named here, so the text stays true whichever colour the figure uses."""

FirstFrame = tuple[np.ndarray, tuple[np.ndarray, str] | None, dict[str, np.ndarray]]
"""The first frame's left image, its ground truth and kind (or None), and each depth teacher's label."""


class ScoringSteps:
    """Shared state of the demo's steps, and the steps that compare with the ground truth."""

    TOTAL = 11

    def __init__(
        self,
        result: DemoResult,
        labels: LabelFolder,
        data_root: Path | None,
        split_file: Path | None,
        workers: int,
        device: str,
        progress: bool,
        log: Log,
        stamps: StepStamps | None = None,
    ) -> None:
        self.result, self.labels, self.log = result, labels, log
        self.stamps = stamps or StepStamps(result.out_dir, fresh=True)
        self.state: dict[str, dict] = {}  # what a step hands to later ones, kept in its stamp
        self.root, self.split_file = data_root, split_file
        self.workers, self.device, self.progress = workers, device, progress
        self.out = result.out_dir
        self.number = 0
        self.stages: list[str] = []
        self.depth_stages: list[str] = []
        self.teacher = "sgbm"
        self.eval_set: EvalSet | None = None
        self.first_frame: FirstFrame | None = None
        self.checkpoint = self.out / "run" / "best.pt"
        self.prediction_png: Path | None = None
        self.gt_args: list[object] = []  # --split / --gt of the scoring commands

    @property
    def layout(self) -> str:
        return self.result.layout

    def _timed(self, key: str, title: str, command_line: str) -> StepTimer:
        """Time step ``key``; when it succeeds, stamp it for reuse (``_reused`` fingerprinted it)."""
        self.number += 1
        step = Step(key, title, command_line)
        done = (
            (lambda s: self.stamps.save(s, self.state.get(key))) if key in self.stamps.fingerprints else None
        )
        return StepTimer(self.result, step, self.log, self.number, self.TOTAL, done)

    def _reused(
        self, key: str, settings: dict, after: tuple[str, ...], outputs: tuple[Path, ...] = ()
    ) -> bool:
        """Fingerprint step ``key`` (its settings and the steps it reads); True when an earlier run
        finished it with the same fingerprint and its outputs are still there: the step is then
        recorded as reused (its state restored into ``self.state``) and must not run."""
        stamp = (
            self.stamps.reusable(key, self.out, outputs)
            if self.stamps.fingerprint(key, settings, after)
            else None
        )
        if stamp is None:
            return False
        self.number += 1
        step = step_from_stamp(stamp)
        self.result.steps.append(step)
        self.state[key] = stamp.get("state", {})
        made = stamp["step"].get("seconds", 0.0)
        self.log(f"[{self.number}/{self.TOTAL}] {step.title}: reused (finished {stamp['finished']} in {made:.1f} s; "
                 "same inputs and settings)")  # fmt: skip
        return True

    def _skipped(self, key: str, title: str, why: str) -> None:
        self.log(f"  {title}: skipped ({why})")  # not among the numbered steps
        self.result.steps.append(Step(key, title, "", status="skipped", text=why))

    def rel(self, path: Path) -> str:
        return str(Path(path).relative_to(self.out))

    # what the ground truth is, and the frames it is scored on
    def _ground_truth_args(self) -> tuple[Path | None, str | None, list[object]]:
        """(split file, gt kind, CLI arguments) of the scoring commands: the layout's defaults except
        KITTI's annotated maps when the tree has them, and LiDAR for a rig tree without depth_gt."""
        if self.layout == "kitti":
            split = self.split_file or self._split_from_plan()
            probe = EvalSet(self.root, split, "annotated", layout="kitti", check_images=False)
            gt = "annotated" if probe.groundtruth(probe.frames[0]) is not None else None
        else:
            split = self.split_file
            frames = [frame_from_id("rig", fid) for fid in self.labels.plan.frame_ids]
            gt = None if any(f.depth_gt_path(self.root).is_file() for f in frames) else "lidar"
        args: list[object] = ["--split", split] if split else []
        return split, gt, args + (["--gt", gt] if gt else [])

    def _split_from_plan(self) -> Path:
        """OUT/split.txt: the plan's KITTI frames as a split file (``<drive folder> <index> l``)."""
        path = self.out / "split.txt"
        lines = []
        for frame_id in self.labels.plan.frame_ids:
            folder, index = frame_id.rsplit("/", 1)
            lines.append(f"{folder} {int(index)} l")
        write_text_atomic(path, "\n".join(lines) + "\n")
        return path

    def _first_frame_groundtruth(self, eval_set: EvalSet) -> tuple[np.ndarray, str] | None:
        fid = self.labels.plan.frame_ids[0]
        frame = next((f for f in eval_set.frames if f.frame_id == fid), None)
        if frame is None:
            frame = EvalFrame(fid, frame_from_id(self.layout, fid).image_path(self.root, 2))
        gt = eval_set.groundtruth(frame)
        return None if gt is None else (gt, eval_set.gt)

    # 4. teachers against the ground truth
    def teachers(self) -> None:
        from edgedepth.demo.teachers import format_scores, score_teachers, side_by_side
        from edgedepth.labelgen import read_image

        split, gt, args = self._ground_truth_args()
        self.gt_args = args
        self.eval_set = EvalSet(self.root, split, gt, layout=self.layout)
        frame_id = self.labels.plan.frame_ids[0]
        found = self._first_frame_groundtruth(self.eval_set)
        depth = _first_depths(self.labels, self.depth_stages)
        image = read_image(frame_from_id(self.layout, frame_id).image_path(self.root, 2))
        self.first_frame = (image, found, depth)  # the eval breakdown and the overview use them again
        scores_json = tuple(self.out / f"score_{stage}.json" for stage in self.depth_stages)
        if self._reused("teachers", {"split": split, "gt": gt}, ("labels",), scores_json):
            return
        commands = [command("labelgen", "score", self.labels.given, "--stage", stage, "--data-root", self.root,
                            *args, "--out", self.out / f"score_{stage}.json") for stage in self.depth_stages]  # fmt: skip
        with self._timed("teachers", "teachers against the ground truth", "\n".join(commands)) as step:
            scores = score_teachers(self.labels, self.depth_stages, self.eval_set, self.out, self.progress)
            step.text = f"ground truth: {self.eval_set.describe()}\n" + format_scores(scores)
            for score in scores:
                step.figures_measured[f"{score.stage}_abs_rel"] = score.metrics["abs_rel"]
                step.figures_measured[f"{score.stage}_coverage"] = score.coverage
            panels = [("input (left image)", image)] + _gt_panel(found)
            panels += [(f"{stage} teacher", depth[stage]) for stage in self.depth_stages]
            path = side_by_side(self.out / "teachers.png", panels)
            step.figures.append(Figure(self.rel(path), f"{frame_id}: input, ground truth and teacher depth on one "
                                        f"colour scale ({NO_DATA})", "(demo only: demo/teachers.py)"))  # fmt: skip

    # 7. prediction
    def predict(self) -> None:
        from edgedepth.student.evaluate import predict_images

        image = frame_from_id(self.layout, self.labels.plan.frame_ids[0]).image_path(self.root, 2)
        out = self.out / "predict"
        line = command("student", "predict", self.checkpoint, image, "--out", out, "--device", self.device)
        if self._reused("predict", {"image": image, "device": self.device}, ("train",)):
            self.prediction_png = self.out / self.state["predict"]["depth16"]
            if self.prediction_png.is_file():
                return
            self.result.steps.pop()  # its 16-bit depth is gone: predict again
            self.number -= 1
        if out.exists():
            shutil.rmtree(out)  # only this run's files: nothing from another checkpoint
        with self._timed("predict", "student prediction", line) as step:
            done = predict_images(self.checkpoint, [image], out, device=self.device, progress=self.progress)
            first = done[0]
            step.text = (
                f"{image.name}: depth {first.depth_min:.2f} / {first.depth_median:.2f} / {first.depth_max:.2f} m "
                "(min / median / max)" + "".join(f"\nnote: {note}" for note in done.notes)
            )
            step.figures.append(
                Figure(self.rel(first.depth_png), "student depth (colour, metre scale)", line)
            )
            if first.classes_png is not None:
                step.figures.append(Figure(self.rel(first.classes_png), "student class map", line))
            self.prediction_png = first.depth16_png
            self.state["predict"] = {"depth16": self.rel(first.depth16_png)}

    # 8. evaluation
    def evaluate(self) -> None:
        from edgedepth.student.evaluate import evaluate_checkpoint

        assert self.eval_set is not None, "the teachers step sets the eval set"
        out, eval_set = self.out / "eval.json", self.eval_set
        line = command("student", "eval", self.checkpoint, "--data-root", self.root, *self.gt_args,
                       "--device", self.device, "--out", out)  # fmt: skip
        if self._reused("eval", {"gt": self.gt_args, "device": self.device}, ("teachers", "predict"), (out,)):
            return
        with self._timed("eval", "student against the ground truth", line) as step:
            result = evaluate_checkpoint(self.checkpoint, self.root, split=eval_set.split_file, gt=eval_set.gt,
                                         device=self.device, progress=self.progress, layout=self.layout)  # fmt: skip
            result.save(out)
            step.figures_measured = {k: float(v) for k, v in result.metrics.items()}
            step.text = "\n".join([result.format_table(), f"protocol: {result.provenance['protocol']}", "",
                                   self._breakdown(step.figures_measured)])  # fmt: skip

    def _breakdown(self, measured: dict[str, float]) -> str:
        """The first frame's Abs Rel where the teacher gave a label and where it gave none."""
        assert self.first_frame is not None and self.prediction_png is not None and self.eval_set is not None
        _, found, depths = self.first_frame
        label = depths[self.teacher]
        prediction = read_depth_png(self.prediction_png)
        if found is None or prediction.shape != found[0].shape or label.shape != found[0].shape:
            return "(no per-pixel breakdown: the first frame has no ground truth at the label size)"
        gt = found[0]
        lo, hi = self.eval_set.depth_range(self.eval_set.frames[0])
        lines = [f"first frame, Abs Rel of the student by where its {self.teacher} teacher gave a label:"]
        for key, where, what in (("labelled", label > 0, "labelled pixels"),
                                 ("unlabelled", label <= 0, "pixels without a label")):  # fmt: skip
            mask = (gt > lo) & (gt <= hi) & where
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

    # 11. the picture at the top of the report
    def overview(self) -> None:
        from edgedepth.demo.teachers import side_by_side

        assert self.first_frame is not None and self.prediction_png is not None
        if self._reused("overview", {}, ("teachers", "predict")):
            return
        with self._timed("overview", "overview figure", "(demo only: demo/teachers.py)") as step:
            image, found, depths = self.first_frame
            panels = [("input (left image)", image)] + _gt_panel(found)
            panels += [(f"{self.teacher} teacher (the student's labels)", depths[self.teacher]),
                       ("student (L, short training)", read_depth_png(self.prediction_png))]  # fmt: skip
            path = side_by_side(self.out / "overview.png", panels)
            step.figures.append(Figure(self.rel(path), "input, ground truth, teacher label, student prediction",
                                        step.command))  # fmt: skip


def _gt_panel(found: tuple[np.ndarray, str] | None) -> list[tuple[str, np.ndarray]]:
    return [] if found is None else [(f"ground truth ({found[1]})", found[0])]


def _first_depths(labels: LabelFolder, stages: list[str]) -> dict[str, np.ndarray]:
    from edgedepth.labelgen import LabelReader

    reader = LabelReader(labels, stages)
    try:
        item = reader[0]
    finally:
        reader.close()
    return {s: np.asarray(item[f"{s}/depth"], dtype=np.float32) for s in stages}


__all__ = ["ScoringSteps"]
