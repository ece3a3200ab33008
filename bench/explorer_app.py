"""The renderer harness of bench/explorer.py: N points drawn by one of three map renderers, with thumbnails.

    streamlit run bench/explorer_app.py  ->  http://localhost:PORT/?renderer=pydeck&n=50000

Not part of the app: bench/explorer.py copies it into a scratch folder next to a static/ folder of
thumbnails and drives it in headless Chromium, to choose the Embeddings page's renderer by
measurement. Each renderer gets the same points (10 Gaussian blobs) and the same thumbnail URLs.
"""

import numpy as np
import pandas as pd
import streamlit as st

st.set_page_config(layout="wide")
renderer = st.query_params.get("renderer", "pydeck")
n = int(st.query_params.get("n", 10_000))
thumbs = st.query_params.get("thumbs", "")  # folder under static/thumbs/
rng = np.random.default_rng(0)
centres = rng.normal(size=(10, 2)) * 6
label = rng.integers(0, 10, n)
xy = (centres[label] + rng.normal(size=(n, 2))).astype(np.float32)
xy[0] = 0.0  # a point at the centre of the view, where the bench hovers
palette = np.array(
    [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [127, 127, 127],
        [188, 189, 34],
        [23, 190, 207],
    ]
)
url = f"app/static/thumbs/{thumbs}/"

if renderer == "pydeck":
    import pydeck as pdk

    df = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "i": np.arange(n), "c": palette[label].tolist()})
    layer = pdk.Layer(
        "ScatterplotLayer",
        df,
        id="points",
        get_position=["x", "y"],
        get_fill_color="c",
        get_radius=2,
        radius_units="'pixels'",
        pickable=True,
    )
    deck = pdk.Deck(
        layers=[layer],
        map_provider=None,
        views=[pdk.View(type="OrthographicView", controller=True)],
        initial_view_state=pdk.ViewState(target=[0, 0, 0], zoom=4.5),
        tooltip={
            "html": f"<img class='thumb' src='{url}{{i}}.png' width=96 style='image-rendering:pixelated'><br>#{{i}}"
        },
    )
    st.pydeck_chart(deck, on_select="rerun", selection_mode="single-object", key="map", height=700)
elif renderer == "plotly":
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Scattergl(
            x=xy[:, 0],
            y=xy[:, 1],
            mode="markers",
            customdata=np.arange(n),
            marker=dict(size=4, color=label, colorscale="Turbo"),
            hovertemplate="#%{customdata}<extra></extra>",
        )
    )
    fig.update_layout(height=700, xaxis=dict(range=[-20, 20]), yaxis=dict(range=[-15, 15]))
    event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key="map")
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    if points:  # Plotly's hover labels take no <img>: a click, a rerun and st.image are the way to a picture
        base = st.context.url.split("?")[0].rstrip("/") + "/"
        st.image(f"{base}{url}{points[0]['customdata']}.png", width=96)
else:
    from embedding_atlas.streamlit import embedding_atlas

    base = st.context.url.split("?")[0].rstrip("/") + "/"
    df = pd.DataFrame(
        {"x": xy[:, 0], "y": xy[:, 1], "label": label.astype(str), "image": [f"{base}{url}{i}.png" for i in range(n)]}
    )
    embedding_atlas(df, x="x", y="y", text="label", image="image", key="map")
