"""Typed job specs (simclr_core.explorer.specs): JSON there and back, and a job file's faults said."""

from __future__ import annotations

import json

import pytest

from simclr_core.errors import UserError
from simclr_core.explorer import jobs
from simclr_core.explorer.specs import EmbedSpec, MapSpec


def test_a_spec_crosses_as_json_and_names_one_job():
    spec = MapSpec(run="/r", split="test", feature="h", method="umap", dims=2, params={"n_neighbors": 15})
    d = json.loads(json.dumps(spec.to_dict()))
    assert MapSpec.from_dict(d) == spec and spec.kind == "map"
    assert jobs.job_id(spec.kind, d) == jobs.job_id("map", spec.to_dict())
    other = MapSpec(run="/r", split="train", feature="h", method="umap", dims=2)
    assert jobs.job_id(other.kind, other.to_dict()) != jobs.job_id(spec.kind, d)


def test_unknown_keys_are_ignored_and_missing_ones_said():
    spec = EmbedSpec.from_dict({"run": "/r", "split": "test", "feature": "z", "from_an_older_app": 1})
    assert spec == EmbedSpec(run="/r", split="test", feature="z")
    with pytest.raises(UserError, match="the embed job's spec is incomplete"):
        EmbedSpec.from_dict({"run": "/r"})
    with pytest.raises(UserError, match="the embed job's spec is not a mapping"):
        EmbedSpec.from_dict(["/r"])  # type: ignore[arg-type]
