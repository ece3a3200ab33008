"""SimCLR Studio: ``streamlit run app.py``. A router only: the pages live in pages/, the sidebar is shared."""

import streamlit as st

from ui.shell import page_icon, sidebar, style
from ui.widgets import keep_widgets


def home() -> None:
    """The root URL opens Train at its own address, /train, so that a link to it or a reload lands there too
    (Streamlit serves a default page only at the root; /train would be "Page not found")."""
    st.switch_page("pages/train.py")


st.set_page_config(page_title="SimCLR Studio", page_icon=page_icon(), layout="wide")
PAGES = [
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/augment.py", title="Augmentations", icon=":material/photo_library:"),
    st.Page("pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
    st.Page("pages/search.py", title="Search", icon=":material/image_search:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/leaderboard:"),
]
# Streamlit's own sidebar list is off (.streamlit/config.toml: client.showSidebarNavigation): on a
# freshly started server it lists the files of pages/ until this router has run once. The shared
# sidebar draws the app's links instead, from this list, on every page and from the first request.
nav = st.navigation(
    [st.Page(home, title="SimCLR Studio", default=True, visibility="hidden"), *PAGES], position="hidden"
)
keep_widgets()  # before any page: widgets a run did not draw get their values back
style()
sidebar(PAGES)
nav.run()
