"""--cluster options: parsing, the GPU request, and the job script of every dask-jobqueue kind."""

from __future__ import annotations

import pytest

from edgedepth.labelgen.cluster import JOBQUEUES, cluster_options, job_script, parse_job_options

BASE = ["cores=2", "memory=4GB", "walltime=01:00:00"]


def test_job_options_parse_to_the_classes_keywords():
    options = parse_job_options(
        ["queue=gpu", "cores=8", "memory=64GB", "nanny=false", "job_extra_directives=--gres=gpu:1",
         "job-extra-directives=--exclusive", "account=proj-1"]
    )  # fmt: skip
    assert options == {
        "queue": "gpu", "cores": 8, "memory": "64GB", "nanny": False, "account": "proj-1",
        "job_extra_directives": ["--gres=gpu:1", "--exclusive"],
    }  # fmt: skip
    for bad in ("queue", "=gpu", "two words=1"):
        with pytest.raises(ValueError, match="expected KEY=VALUE"):
            parse_job_options([bad])


def test_cuda_workers_declare_the_gpu_and_slurm_jobs_request_one():
    options = cluster_options("slurm", "cuda", parse_job_options(BASE))
    assert options["worker_extra_args"] == ["--resources", "GPU=1"] and options["processes"] == 1
    assert options["job_extra_directives"] == ["--gres=gpu:1"]
    mine = cluster_options("slurm", "cuda", parse_job_options([*BASE, "job_extra_directives=--gpus=2"]))
    assert mine["job_extra_directives"] == ["--gpus=2"]  # the user's request is kept, not doubled
    assert "worker_extra_args" not in cluster_options("pbs", "cpu", parse_job_options(BASE))


@pytest.mark.parametrize(
    ("kind", "directive"),
    [("slurm", "#SBATCH --cpus-per-task=2"), ("pbs", "#PBS -l select=1:ncpus=2"), ("sge", "#$ -l h_rt=01:00:00"),
     ("lsf", "#BSUB -n 2"), ("htcondor", "RequestCpus = MY.DaskWorkerCores")],
)  # fmt: skip
def test_every_kind_writes_its_job_script(kind, directive):
    options = parse_job_options(
        BASE[:2] + (["disk=1GB"] if kind == "htcondor" else BASE[2:])
    )  # no walltime there
    script = job_script(kind, "cpu", options)
    assert directive in script and "distributed.cli.dask_worker" in script, script
    assert set(JOBQUEUES) == {"slurm", "pbs", "sge", "lsf", "htcondor"}


def test_missing_or_unknown_options_are_one_line():
    with pytest.raises(ValueError, match=r"^slurm: set cores and memory per job"):
        job_script("slurm", "cpu", {})
    with pytest.raises(
        ValueError, match=r"^slurm: SLURMCluster has no option 'partitionn' \(check --job-option names\)"
    ):
        job_script("slurm", "cpu", parse_job_options([*BASE, "partitionn=debug"]))
    with pytest.raises(ValueError, match="unknown cluster 'k8s'"):
        job_script("k8s")
