"""The background worker as the pages use it: ask for a job, show its progress, read its result.

Nothing that takes more than a moment runs in the page, so a reload or a widget touch never loses it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import streamlit as st

from simclr_core.explorer import jobs
from simclr_core.explorer.specs import EmbedSpec, JobSpec
from simclr_core.runs.rundir import RunDir
from ui.runs import pinned_key, runs_dir
from ui.widgets import user_errors


@st.cache_resource(show_spinner=False)
def start_worker() -> int:
    """Start the background worker with the server (it compiles UMAP at once, so the first map is quick)."""
    if os.environ.get("SIMCLR_JOBS") == "inline":
        return 0
    return jobs.ensure_worker(jobs.jobs_dir(runs_dir()))


WAITS = "_job_waits"  # session key: {job id: [first asked, first shown]} (time.time())


def job_result(
    spec: JobSpec, what: str, slot: str | None = None, preview: Callable[[], None] | None = None
) -> dict[str, Any]:
    """The result of a background job (:mod:`simclr_core.explorer.jobs`), submitted if needed; until it is done the
    page shows its progress (:func:`background`), and ``preview`` below it, and stops here. :func:`waited` then
    says how long the user waited for it."""
    result = background(spec, what, slot, preview=preview)
    if result is None:
        st.stop()
    return result


def background(
    spec: JobSpec, what: str, slot: str | None = None, submit: bool = True, preview: Callable[[], None] | None = None
) -> dict[str, Any] | None:
    """A background job's result when it is done; else None, after drawing its progress (and the jobs ahead of
    it) in a fragment that polls the job's file every second and draws the whole page again when it ends. A
    failed job shows its message and a *Try again* button. ``submit`` False only looks for the job (None,
    drawing nothing, when nobody asked for it yet). ``preview`` draws what the job has made so far (each poll)."""
    directory, kind, payload = jobs.jobs_dir(runs_dir()), spec.kind, spec.to_dict()
    if submit:
        with user_errors():
            jid = jobs.submit(directory, kind, payload, slot=slot, title=what)
    else:
        jid = jobs.job_id(kind, payload)
    waits = st.session_state.setdefault(WAITS, {})
    job = jobs.status(directory, jid)
    if job["state"] == "missing":
        return None
    asked = waits.setdefault(jid, [time.time(), None])
    if job["state"] == "done":
        asked[1] = asked[1] or time.time()
        st.session_state["_last_job"] = jid
        return job["result"]
    if job["state"] != "failed":

        @st.fragment(run_every=1.0)
        def wait() -> None:
            now = jobs.status(directory, jid)
            if now["state"] not in jobs.ACTIVE:
                st.rerun()  # done or failed: draw the whole page again
            job_progress(now, what, jobs.ahead(directory, jid), since=asked[0])
            if preview:
                preview()

        wait()
        return None
    waits.pop(jid, None)
    st.error(job.get("message") or f"{what} failed", icon=":material/error:")
    if st.button("Try again", key=f"retry-{jid}", icon=":material/refresh:"):
        jobs.submit(directory, kind, payload, slot=slot, retry=True, title=what)
        st.rerun()
    return None


def waited() -> float | None:
    """Seconds the user waited for the last job :func:`job_result` returned, from the first time the page asked
    for it to the first time it was ready (None: it was ready at once, computed earlier)."""
    span = st.session_state.get(WAITS, {}).get(st.session_state.get("_last_job"))
    if not span or span[1] is None or span[1] - span[0] < 0.5:
        return None
    return span[1] - span[0]


def job_progress(job: dict[str, Any], what: str, ahead: list[dict[str, Any]] | None = None, since: float = 0) -> None:
    """A background job's progress bar (stage, done/total), what the worker does first, how long the user has
    waited so far, and why the user may leave the page."""
    done, total = int(job.get("done") or 0), int(job.get("total") or 0)
    if ahead:
        first = ahead[0]
        d, t = int(first.get("done") or 0), int(first.get("total") or 0)
        now = f"{first.get('title') or first.get('kind')}: {first.get('stage') or 'starting'}"
        now += f" ({d:,}/{t:,})" if t > 1 else ""
        queued = f"; {len(ahead) - 1} more before yours" if len(ahead) > 1 else ""
        st.progress(
            min(d / t, 1.0) if t else 0.0, text=f"{what}: waiting for the worker, which is busy with {now}{queued}"
        )
    else:
        stage = job.get("stage") or "waiting"
        counted = total > 1 and f"{done}/{total}" not in stage  # "linear probe epoch 37/100" counts itself
        text = f"{what}: {stage}" + (f" ({done:,}/{total:,})" if counted else "")
        st.progress(min(done / total, 1.0) if total else 0.0, text=text)
    waiting = f"Waiting {time.time() - since:.0f} s so far. " if since else ""
    st.caption(waiting + "This runs in a background process: you can leave the page or reload it, the work goes on.")


def embeddings_spec(run: RunDir, split: str, feature: str, random_init: bool = False) -> EmbedSpec:
    """The job spec of one split's embeddings, at the pinned checkpoint (:func:`pinned_key`)."""
    ckpt = "random" if random_init else pinned_key(run)
    return EmbedSpec(run=str(run.path), split=split, feature=feature, random_init=random_init, ckpt=ckpt)


def run_embeddings_file(run: RunDir, split: str, feature: str, random_init: bool = False) -> str:
    """The file of a split's embeddings for the pinned checkpoint (or random init), computed in the
    background; the page waits (showing progress) until it exists."""
    label = f"Embedding the {split} split of run {run.name} ({'random init' if random_init else 'trained'}, {feature})"
    return job_result(embeddings_spec(run, split, feature, random_init), label)["embeddings"]
