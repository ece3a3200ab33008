"""SimCLR Studio: ``streamlit run app.py``. A router only: the pages live in pages/, the sidebar is shared."""

import streamlit as st

from pages.common import sidebar

st.set_page_config(page_title="SimCLR Studio", page_icon=":material/hub:", layout="wide")
nav = st.navigation([
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", default=True),
    st.Page("pages/augment.py", title="Augmentations", icon=":material/photo_library:"),
    st.Page("pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
    st.Page("pages/search.py", title="Search", icon=":material/image_search:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/leaderboard:"),
])
sidebar()
nav.run()
