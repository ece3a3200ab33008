"""SimCLR Studio: ``streamlit run app.py``. A router only: the pages live in pages/."""

import streamlit as st

st.set_page_config(page_title="SimCLR Studio", layout="wide")
nav = st.navigation([st.Page("pages/runs.py", title="Runs", icon=":material/list:", default=True)])
nav.run()
