"""The run list: every run under checkpoints/ with its status and numbers."""

import pandas as pd
import streamlit as st

from simclr_core.runs import list_runs, summarize

RUNS_DIR = "checkpoints"

st.title("SimCLR Studio")
runs = [summarize(r) for r in list_runs(RUNS_DIR)]
if not runs:
    st.info("No runs yet. Start one from a terminal, e.g. a two-minute CPU demo on the bundled digits:\n\n"
            "`python -m simclr_core.train --backbone resnet_mini --epochs 10`")
else:
    st.dataframe(pd.DataFrame([{
        "run": r.name, "status": r.state, "epoch": f"{r.epoch}/{r.epochs}",
        "last loss": r.last_loss, "best kNN top-1 (%)": r.best_knn, "message": r.message,
    } for r in runs]), hide_index=True, use_container_width=True)
